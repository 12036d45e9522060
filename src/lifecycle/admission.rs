//! Admission: what happens to a connection the moment it is accepted, in every model.
//!
//! At `--max-connections` the connection is accepted and closed at once, with a warning,
//! rather than left in the kernel's accept queue: there its client would wait for a server
//! that never comes, and a readiness loop would be told "the listener is readable" again and
//! again. Every other connection gets the per-connection socket options (`net::options`),
//! and, in a blocking model, the idle timeout as socket timeouts (see `idle.rs`); a socket
//! that refuses them (most often: the client has reset it already) is closed.
//!
//! The warning comes once, then at most once per [`REJECT_WARNING_EVERY`] with the number
//! refused meanwhile: a client that connects in a loop must not flood the log with a line
//! per refusal (each refusal is still counted, and logged at debug level).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, warn};
use socket2::{SockRef, Socket};

use super::idle::set_socket_timeouts;
use crate::config::ServerConfig;
use crate::net::{Peer, SocketOptions};
use crate::stats::Stats;

/// The rules a freshly accepted connection passes before it is served.
#[derive(Debug, Clone)]
pub struct Admission {
    /// `--max-connections`: live connections in the whole process, across every worker and
    /// listener (counted by [`Stats::try_open`]).
    max_connections: usize,
    /// SO_SNDBUF, SO_RCVBUF, TCP_NODELAY, inline urgent data.
    options: SocketOptions,
    /// The blocking models' idle timeout (SO_RCVTIMEO / SO_SNDTIMEO); `None` for the loops,
    /// which keep idle deadlines themselves.
    socket_timeout: Option<Duration>,
    /// Where an admitted connection is counted open, and a refused one rejected.
    stats: Arc<Stats>,
    /// When the last refusal warning was logged, shared by the clones of this admission.
    warnings: Arc<Mutex<RejectWarnings>>,
}

/// While connections keep being refused, how often a warning is logged.
pub const REJECT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The refusal warnings' pace: the first at once, then one per [`REJECT_WARNING_EVERY`].
#[derive(Debug, Default)]
struct RejectWarnings {
    /// When the last warning was logged; `None` before the first.
    last: Option<Instant>,
    /// Refusals since then, not warned about.
    unwarned: u64,
}

impl RejectWarnings {
    /// A connection is refused at `now`: `Some(n)` if a warning is due, where `n` counts
    /// the refusals since the last warning that were not warned about.
    fn refused(&mut self, now: Instant) -> Option<u64> {
        let due = self.last.is_none_or(|last| now.saturating_duration_since(last) >= REJECT_WARNING_EVERY);
        if !due {
            self.unwarned += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unwarned))
    }
}

impl Admission {
    /// The rules of `config`, for a loop (event loop, io-uring), counting refusals in `stats`.
    pub fn new(config: &ServerConfig, stats: Arc<Stats>) -> Admission {
        let options = SocketOptions::from_config(config);
        Admission {
            max_connections: config.max_connections,
            options,
            socket_timeout: None,
            stats,
            warnings: Arc::default(),
        }
    }

    /// The rules of `config` for a blocking model: the same, and the idle timeout becomes
    /// the socket's timeouts, because a thread asleep in `read` cannot look at a timer.
    pub fn blocking(config: &ServerConfig, stats: Arc<Stats>) -> Admission {
        Admission { socket_timeout: config.idle_timeout, ..Admission::new(config, stats) }
    }

    /// May the connection on `socket` be served? If so, it is counted open (the caller
    /// reports its close with [`Stats::connection_closed`], or [`Stats::open_failed`] if it
    /// cannot be served after all). If not, it has been logged (and counted if over the
    /// cap); the caller drops the socket, which closes it. `peer` is asked only for a log
    /// line (the io-uring model's accept does not return the peer's address, and looking it
    /// up costs a system call).
    pub fn admit(&self, socket: &Socket, tcp: bool, peer: impl FnOnce() -> Peer) -> bool {
        let prepared =
            self.options.apply(SockRef::from(socket), tcp).and_then(|()| match self.socket_timeout {
                Some(timeout) => set_socket_timeouts(socket, timeout),
                None => Ok(()),
            });
        if let Err(e) = prepared {
            debug!("accept: socket options for {} failed, closing: {e}", peer());
            return false;
        }
        if !self.stats.try_open(self.max_connections) {
            self.stats.connection_rejected();
            self.log_refusal(&peer());
            return false;
        }
        true
    }

    /// Say that the connection from `peer` was refused: a warning when one is due, else a
    /// debug line.
    fn log_refusal(&self, peer: &Peer) {
        let due = self.warnings.lock().unwrap_or_else(PoisonError::into_inner).refused(Instant::now());
        let cap = self.max_connections;
        match due {
            Some(0) => warn!("max-connections {cap} reached: closing connection from {peer}"),
            Some(more) => warn!(
                "max-connections {cap} reached: closing connection from {peer} ({more} more closed since the last warning)"
            ),
            None => debug!("max-connections {cap} reached: closing connection from {peer}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a client connecting in a loop over the cap got a WARN line per refusal
    /// (2000 connects, 2000 lines). Now: the first, then one per interval with a count.
    #[test]
    fn refusals_in_a_burst_log_one_warning_then_one_per_interval_with_a_count() {
        let mut warnings = RejectWarnings::default();
        let start = Instant::now();
        assert_eq!(warnings.refused(start), Some(0));
        for i in 1..2000 {
            assert_eq!(warnings.refused(start + Duration::from_micros(i)), None);
        }
        let later = start + REJECT_WARNING_EVERY;
        assert_eq!(warnings.refused(later), Some(1999), "due at the interval: a warning with the count");
        assert_eq!(warnings.refused(later + Duration::from_secs(1)), None);
        assert_eq!(warnings.refused(later + REJECT_WARNING_EVERY * 5), Some(1));
    }
}
