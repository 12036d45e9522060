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
//!
//! Nothing here knows how a model waits: no `mio`, no ring, no thread. A connection is
//! named by a plain [`ConnId`].

mod admission;
mod idle;
pub mod linger;

use std::fmt;

use slab::Slab;

pub use admission::Admission;
pub use idle::IdleTimers;

/// A connection's number in its model's table (the slab key in the loops, the registry key
/// in the blocking models): what timers and logs call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub usize);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
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
