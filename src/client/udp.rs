//! `echoloop client udp:ADDR`: each line of stdin is one datagram (a line longer than the
//! largest datagram, 65,507 bytes, is sent as several); each reply is printed. On a terminal
//! that is one datagram per line typed; piped, `echoloop client udp:ADDR < f | cmp - f` holds
//! when nothing is lost.
//!
//! UDP promises nothing: a datagram or its reply may be lost, and nothing tells us. So the
//! client waits for each reply at most `--timeout`, counts a datagram without one as lost,
//! and ends with an error naming how many were. A reply that differs from what was sent is
//! an error at once; a late reply to a datagram already counted lost is ignored.

use std::io::{self, BufRead, ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::net::{interrupted, timed_out};

/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Send stdin line by line and print the replies; an error if any datagram went unanswered.
pub fn run(server: SocketAddr, timeout: Duration) -> io::Result<()> {
    if timeout.is_zero() {
        return Err(io::Error::new(ErrorKind::InvalidInput, "--timeout must be more than 0 seconds"));
    }
    let local: SocketAddr = if server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("a literal");
    let socket = UdpSocket::bind(local)?;
    // Connected: only the server's datagrams are received, and an ICMP "port unreachable"
    // comes back as ECONNREFUSED instead of silence.
    socket.connect(server).map_err(|e| with_server(server, e))?;
    socket.set_read_timeout(Some(timeout))?;
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut line = Vec::new();
    let mut reply = vec![0; MAX_DATAGRAM + 1];
    let (mut sent, mut lost) = (0u64, Vec::<Vec<u8>>::new());
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line)? == 0 {
            break; // EOF
        }
        for datagram in line.chunks(MAX_DATAGRAM) {
            socket.send(datagram).map_err(|e| with_server(server, e))?;
            sent += 1;
            match await_reply(&socket, datagram, &lost, &mut reply).map_err(|e| with_server(server, e))? {
                Some(n) => match stdout.write_all(&reply[..n]).and_then(|()| stdout.flush()) {
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()), // `| head`
                    other => other?,
                },
                None => {
                    eprintln!(
                        "echoloop: no reply from udp:{server} within {timeout:?} to datagram {sent} ({} bytes): lost",
                        datagram.len()
                    );
                    lost.push(datagram.to_vec());
                }
            }
        }
    }
    if !lost.is_empty() {
        let msg = format!("udp:{server}: {} of {sent} datagrams got no reply (lost)", lost.len());
        return Err(io::Error::new(ErrorKind::TimedOut, msg));
    }
    Ok(())
}

/// Wait for the reply to `datagram`: `Some(len)` of the reply in `buf`, `None` on timeout.
/// Late replies to datagrams in `lost` are skipped; any other different reply is an error.
fn await_reply(
    socket: &UdpSocket,
    datagram: &[u8],
    lost: &[Vec<u8>],
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    loop {
        let n = match socket.recv(buf) {
            Ok(n) => n,
            Err(e) if timed_out(&e) => return Ok(None),
            Err(e) if interrupted(&e) => continue, // a signal: wait again
            Err(e) => return Err(e),
        };
        if &buf[..n] == datagram {
            return Ok(Some(n));
        }
        if !lost.iter().any(|late| late[..] == buf[..n]) {
            let msg = format!("a reply of {n} bytes differs from the {}-byte datagram sent", datagram.len());
            return Err(io::Error::new(ErrorKind::InvalidData, msg));
        }
    }
}

fn with_server(server: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("udp:{server}: {e}"))
}
