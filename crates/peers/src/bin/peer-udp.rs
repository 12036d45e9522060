//! `peer-udp`: the naive UDP echo (RFC 862) as a reference point. One blocking socket, and
//! per datagram one `recv_from` and one `send_to`: the loop every tutorial writes, and the
//! floor that batching (`recvmmsg`/`sendmmsg`) and the kernel's coalescing (GRO/GSO) are
//! measured against. Nothing else: no batch, no offload, no queue (a blocking `send_to`
//! waits while the kernel's send buffer is full).
//!
//! It drops, unanswered, datagrams from source port 0 and from the ports of the small
//! services that answer every datagram (7 echo, 13 daytime, 17 qotd, 19 chargen), as
//! echoloop does: one comparison per datagram, so the measurement does not change, and two
//! of these cannot be set answering each other forever.
//!
//! SIGINT and SIGTERM set a flag (signal-hook); a receive timeout of [`STOP_CHECK`] makes
//! the loop look at it even when no datagram comes, and the process exits 0.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The largest datagram (65,507 bytes of UDP payload over IPv4) fits whole.
const BUF_SIZE: usize = 64 * 1024;
/// How long a receive waits before the loop checks for a stop signal.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Source ports never answered (see the module docs).
const RESERVED_SOURCE_PORTS: [u16; 5] = [0, 7, 13, 17, 19];

fn main() -> ExitCode {
    echoloop_peers::run("peer-udp", serve)
}

/// Bind, announce `listening on udp:ADDR`, echo until SIGINT or SIGTERM.
fn serve(addr: SocketAddr) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let cannot_bind = |e: io::Error| io::Error::new(e.kind(), format!("cannot bind udp:{addr}: {e}"));
    let socket = UdpSocket::bind(addr).map_err(cannot_bind)?;
    socket.set_read_timeout(Some(STOP_CHECK))?;
    echoloop_peers::announce_udp(socket.local_addr()?)?;
    let mut buf = vec![0; BUF_SIZE];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            // The timeout (EAGAIN) or a signal: look at the stop flag, then wait again.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => continue, // an ICMP error queued by an earlier reply: reading cleared it
        };
        if RESERVED_SOURCE_PORTS.contains(&from.port()) {
            continue;
        }
        // A reply that fails (no route, a port that went away) is lost, as UDP allows.
        let _ = socket.send_to(&buf[..n], from);
    }
    Ok(())
}
