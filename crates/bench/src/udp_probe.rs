//! Is a UDP echo service up? There is no connection to accept: the only sign is an echo.
//! So `--compare` sends one datagram and waits a little for it to come back, again and
//! again, until the service answers or the start limit is reached.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// The probe datagram: what an echo must send back.
const PROBE: &[u8] = b"echoloop-bench probe";

/// A loopback address whose UDP port is free right now (another program could take it
/// before the server binds it; then the server fails to start, and says so).
pub fn free_port() -> io::Result<SocketAddr> {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Send a probe to `addr` and wait up to `wait` for the same bytes back. `Err`: nothing
/// came (not listening yet: often a refused port), or something else did.
pub fn echoes(addr: SocketAddr, wait: Duration) -> io::Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(wait))?;
    socket.send(PROBE)?;
    let mut buf = [0; 64];
    let n = socket.recv(&mut buf)?;
    if &buf[..n] == PROBE {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidData, "the reply to a probe was not its echo"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn an_echo_answers_the_probe_and_silence_does_not() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut buf = [0; 64];
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
            echo // kept open, silent from now on
        });
        assert!(echoes(addr, Duration::from_secs(5)).is_ok());
        let _silent = server.join().unwrap();
        assert!(echoes(addr, Duration::from_millis(50)).is_err(), "nobody answers a second time");
        assert!(echoes(free_port().unwrap(), Duration::from_millis(50)).is_err(), "nobody listens");
    }
}
