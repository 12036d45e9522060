//! A `udp:` listener in a blocking model: one thread that receives a datagram, sends it
//! back, and waits for the next (RFC 862's UDP echo, as the event loop's `udp.rs` does it
//! without blocking).
//!
//! ```text
//!   loop {
//!       recv_from()           // sleeps until a datagram comes
//!       send_to(its sender)   // sleeps while the send buffer is full: UDP has no queue to fill
//!   }
//! ```
//!
//! A datagram is a whole message: no connection, no per-client state, no EOF, so one thread
//! serves every client of the socket. The same datagrams are never answered as in the event
//! loop (source port 0 and the small services' ports, so two echo services cannot be set
//! answering each other). A stop reaches the thread asleep in `recv_from` through its
//! socket: the stop request sends it an empty datagram, and the thread, woken, sees the
//! request before it answers anything. (`shutdown(SHUT_RD)` would wake it too, but then
//! the receive names no sender, which `std` cannot represent.) In case that datagram is
//! lost, a receive also gives up every [`STOP_CHECK`] to look.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use log::{debug, trace};

use super::Context;
use crate::lifecycle::admit_datagram;
use crate::net::{interrupted, timed_out, would_block};
use crate::notify::WatchdogTimer;
use crate::shutdown::ShutdownHandle;
use crate::stats::{Datagrams, IoTally};

/// One datagram: larger than the largest UDP payload, so `recv_from` never truncates one.
const DATAGRAM_BUFFER: usize = 64 * 1024;

/// The longest a receive waits before the thread looks at the stop request and the
/// watchdog again.
const STOP_CHECK: Duration = Duration::from_millis(500);

/// Answer datagrams on `socket` until a stop is requested, counting in `ctx.stats`; ping
/// `watchdog` between datagrams (a receive gives up every ping interval to let it).
pub fn serve(socket: UdpSocket, ctx: &Context, mut watchdog: Option<WatchdogTimer>) {
    wake_on_shutdown(&ctx.shutdown, &socket);
    let wait = watchdog.as_ref().map_or(STOP_CHECK, |w| w.interval().min(STOP_CHECK));
    if let Err(e) = socket.set_read_timeout(Some(wait)) {
        debug!("udp {}: SO_RCVTIMEO: {e}", ctx.addr); // then only the wake-up datagram stops it
    }
    let mut buf = vec![0; DATAGRAM_BUFFER];
    let (mut tally, mut datagrams) = (IoTally::default(), Datagrams::default());
    debug!("udp {}: receiving", ctx.addr);
    while !ctx.shutdown.is_requested() {
        if let Some(watchdog) = &mut watchdog {
            watchdog.tick(Instant::now());
        }
        ctx.stats.loop_waiting(); // for /livez: asleep in recv_from is not stuck
        let received = socket.recv_from(&mut buf);
        ctx.stats.loop_busy(Instant::now());
        let (n, from) = match received {
            Ok(_) if ctx.shutdown.is_requested() => break, // woken by the stop
            Ok(received) => received,
            Err(e) if would_block(&e) || timed_out(&e) => continue, // the watchdog's wake-up
            Err(e) if interrupted(&e) => continue,                  // a signal: retry
            Err(e) => {
                // An error queued on the socket (an ICMP report, say): reading it cleared it.
                debug!("udp {} recv_from: {e}", ctx.addr);
                continue;
            }
        };
        trace!("udp recv n={n} from={from}");
        if admit_datagram(n, from, &mut tally, &mut datagrams) {
            match send_to(&socket, &buf[..n], from) {
                Ok(()) => {
                    datagrams.echoed += 1;
                    tally.bytes_echoed += n as u64;
                }
                Err(e) => {
                    debug!("udp send_to {from}: {e}: reply dropped");
                    datagrams.dropped_send_failed += 1;
                    tally.bytes_unsent += n as u64;
                }
            }
        }
        // Per datagram, as the blocking models count per read: each a syscall anyway.
        ctx.stats.publish(&mut tally);
        ctx.stats.publish_datagrams(&mut datagrams);
    }
    debug!("udp {}: stopped", ctx.addr);
}

/// Send one reply, whole (a datagram goes whole or not at all), retrying on a signal.
fn send_to(socket: &UdpSocket, datagram: &[u8], to: std::net::SocketAddr) -> std::io::Result<()> {
    loop {
        match socket.send_to(datagram, to) {
            Err(e) if interrupted(&e) => continue,
            result => return result.map(drop),
        }
    }
}

/// Make a stop request reach the thread asleep in `recv_from`: an empty datagram to the
/// socket's own address (over loopback when it listens on every address) wakes it.
fn wake_on_shutdown(shutdown: &ShutdownHandle, socket: &UdpSocket) {
    let Ok(mut target) = socket.local_addr() else { return };
    let (any, loopback): (IpAddr, IpAddr) = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::LOCALHOST.into()),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED.into(), Ipv6Addr::LOCALHOST.into()),
    };
    if target.ip().is_unspecified() {
        target.set_ip(loopback);
    }
    shutdown.add_waker(move || {
        let sent = UdpSocket::bind(SocketAddr::new(any, 0)).and_then(|waker| waker.send_to(&[], target));
        if let Err(e) = sent {
            debug!("waking the udp {target} thread: {e} (it looks again within {STOP_CHECK:?})");
        }
    });
}
