//! One connection's life, the same in every model: admitted or refused when it is accepted,
//! closed when it stays idle too long, and, when the server ends it, closed only once
//! closing can no longer destroy the echoes its client has not received.
//!
//! Each model moves bytes its own way (readiness, completion, blocking calls); what a
//! connection may do and when it ends is decided here, once, for all of them:
//!
//! - `admission.rs`: at `--max-connections`, warn and close; the socket options; a socket
//!   that refuses them is closed.
//! - `idle.rs`: `--idle-timeout`, as deadlines for the loops, as socket timeouts for the
//!   blocking models.
//! - `linger.rs`: when a connection the server ends must linger before it closes, and when
//!   it may close.
//! - `proxy_header.rs`: `--proxy-protocol`, a connection's first phase: its PROXY header,
//!   read, checked and consumed before anything is echoed.
//!
//! A datagram has a life too, shorter: it is counted, then answered, unless it comes from a
//! port never answered ([`admit_datagram`], for the event loop's UDP sockets and the blocking
//! models' UDP thread alike).
//!
//! Nothing here knows how a model waits: no `mio`, no ring, no thread. A connection is
//! named by a plain [`ConnId`].

mod admission;
mod idle;
pub mod linger;
pub mod proxy_header;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use log::debug;
use slab::Slab;

use crate::net::RESERVED_SOURCE_PORTS;
use crate::stats::{Datagrams, IoTally};

pub use admission::Admission;
pub use idle::{Clock, IdleTimers, Stamp};

/// A connection's number in its model's table (the slab key in the loops, the registry key
/// in the blocking models): what timers and logs call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub usize);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How long a loop may wait in the kernel (until its earliest timer), as its trace says
/// it: `20ms` (rounded up, as the kernel takes it), or `none`: until something happens.
pub fn wait_limit(timeout: Option<Duration>) -> impl fmt::Display {
    WaitLimit(timeout)
}

struct WaitLimit(Option<Duration>);

impl fmt::Display for WaitLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(timeout) => write!(f, "{}ms", timeout.as_micros().div_ceil(1000)),
        }
    }
}

/// A datagram of `n` bytes arrived from `from`: count it read, and say whether to answer it.
/// One from a port never answered (0, or a small service's: two echo services must not be
/// set answering each other) is dropped, and counted as dropped and its bytes as unsent.
pub fn admit_datagram(n: usize, from: SocketAddr, tally: &mut IoTally, datagrams: &mut Datagrams) -> bool {
    admit_datagrams(1, n, from, tally, datagrams)
}

/// [`admit_datagram`] for `count` datagrams of `bytes` in all from one sender, which the
/// kernel handed over at once (a train, with UDP GRO): each is a read, and each is dropped
/// and counted if its port is never answered.
pub fn admit_datagrams(
    count: usize,
    bytes: usize,
    from: SocketAddr,
    tally: &mut IoTally,
    datagrams: &mut Datagrams,
) -> bool {
    tally.reads += count as u64;
    tally.bytes_read += bytes as u64;
    if !RESERVED_SOURCE_PORTS.contains(&from.port()) {
        return true;
    }
    let port = from.port();
    let what = if count == 1 { "a datagram".to_string() } else { format!("{count} datagrams") };
    debug!("udp: dropped {what} from {from}: source port {port} is never answered");
    datagrams.dropped_reserved_port += count as u64;
    tally.bytes_unsent += bytes as u64;
    false
}

/// Slab slots a loop keeps when its last connection closes; a larger slab is shrunk.
const SLAB_KEEP: usize = 1024;

/// After a connection left a loop's slab: if it was the last of a crowd, give the slab's
/// memory back, so the process returns to its baseline (10,000 slots of the event loop are
/// about 1.5 MiB). Only when the slab is empty, so this O(capacity) step runs once per
/// crowd, never per close.
pub fn release_crowd<T>(connections: &mut Slab<T>) {
    if connections.is_empty() && connections.capacity() > SLAB_KEEP {
        connections.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_limit_reads_in_whole_milliseconds() {
        assert_eq!(wait_limit(None).to_string(), "none");
        assert_eq!(wait_limit(Some(Duration::ZERO)).to_string(), "0ms");
        assert_eq!(wait_limit(Some(Duration::from_micros(19_001))).to_string(), "20ms");
        assert_eq!(wait_limit(Some(Duration::from_secs(5))).to_string(), "5000ms");
    }
}
