//! Idle timeouts (`--idle-timeout`): close a connection on which no byte moved for that long.
//!
//! The loops (event loop, io-uring) own many connections on one thread, so they keep
//! deadlines: [`IdleTimers`], a queue that costs O(expired), not O(connections), and is the
//! one owner of every deadline. The loop asks it for the earliest deadline (its wait
//! timeout) and for the connections whose deadline passed. Reads and writes do not touch the
//! queue: they only stamp `last_active` on the connection. When an entry comes due, the
//! queue compares it with that stamp and either reports the connection expired or puts it
//! back with its real deadline. So a busy connection costs one queue operation per timeout
//! period, not one per read. The loop says `start` when a connection opens and `stop` when
//! it closes, and never sees a deadline.
//!
//! The blocking models cannot look at a timer: their thread sleeps in `read` or `write`. So
//! there the same timeout is a socket timeout ([`set_socket_timeouts`]): a call that moves
//! nothing for that long fails, and the connection is closed.
//!
//! Time is an argument (`now`), never read here, so the queue is tested without sockets or
//! sleeping. The boundary: a deadline equal to `now` is due.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::ConnId;

/// The idle deadlines of the live connections, earliest first.
#[derive(Debug)]
pub struct IdleTimers {
    /// `--idle-timeout`.
    timeout: Duration,
    /// (deadline, connection), earliest first.
    queue: BTreeSet<(Instant, ConnId)>,
    /// Each queued connection's deadline, so `stop` can find its queue entry.
    deadlines: HashMap<ConnId, Instant>,
}

impl IdleTimers {
    /// No connections yet; each will be closed after `timeout` without bytes moving.
    pub fn new(timeout: Duration) -> Self {
        IdleTimers { timeout, queue: BTreeSet::new(), deadlines: HashMap::new() }
    }

    /// A connection opened at `now`: it expires at `now + timeout` unless active meanwhile.
    pub fn start(&mut self, id: ConnId, now: Instant) {
        self.schedule(id, now + self.timeout);
    }

    /// A connection closed: forget it.
    pub fn stop(&mut self, id: ConnId) {
        if let Some(deadline) = self.deadlines.remove(&id) {
            self.queue.remove(&(deadline, id));
        }
    }

    /// The earliest deadline, for the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|&(deadline, _)| deadline)
    }

    /// The connections idle for the whole timeout at `now`; `last_active` tells when bytes
    /// last moved on a connection. They are forgotten here; the loop closes them. Those that
    /// were active since their entry was queued are queued again at their real deadline.
    pub fn expired(&mut self, now: Instant, last_active: impl Fn(ConnId) -> Option<Instant>) -> Vec<ConnId> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.queue.first() {
            if deadline > now {
                break;
            }
            self.queue.pop_first();
            self.deadlines.remove(&id);
            // The loop stops every closed connection, so `last_active` is there; if not,
            // the entry is simply dropped.
            let Some(active) = last_active(id) else { continue };
            let real_deadline = active + self.timeout;
            if real_deadline <= now {
                expired.push(id);
            } else {
                self.schedule(id, real_deadline);
            }
        }
        expired
    }

    /// Connections with a deadline.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    fn schedule(&mut self, id: ConnId, deadline: Instant) {
        self.queue.insert((deadline, id));
        self.deadlines.insert(id, deadline);
    }
}

/// The blocking models' idle timeout: SO_RCVTIMEO and SO_SNDTIMEO, so a `read` or `write`
/// that moves nothing for `timeout` fails with `WouldBlock` (see `net::timed_out`).
/// (The kernel would read a zero timeout as "none"; `--idle-timeout 0` is no timeout at all.)
pub fn set_socket_timeouts(socket: &Socket, timeout: Duration) -> io::Result<()> {
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    #[test]
    fn due_in_deadline_order_and_boundary_is_due() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new(TIMEOUT);
        timers.start(ConnId(2), t0 + Duration::from_secs(1));
        timers.start(ConnId(1), t0);
        assert_eq!(timers.next_deadline(), Some(t0 + TIMEOUT));
        let never_active = |_| Some(t0);
        assert!(timers.expired(t0, never_active).is_empty());
        assert_eq!(timers.expired(t0 + TIMEOUT, never_active), [ConnId(1)]);
        // Connection 2 opened at t0+1s, and was never active after: due at t0+2s.
        let opened_late = |_| Some(t0 + Duration::from_secs(1));
        assert!(timers.expired(t0 + Duration::from_millis(1999), opened_late).is_empty());
        assert_eq!(timers.expired(t0 + Duration::from_secs(2), opened_late), [ConnId(2)]);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn activity_pushes_the_deadline_back() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new(TIMEOUT);
        timers.start(ConnId(7), t0);
        let active_at = t0 + Duration::from_millis(600);
        assert!(timers.expired(t0 + TIMEOUT, |_| Some(active_at)).is_empty());
        assert_eq!(timers.next_deadline(), Some(active_at + TIMEOUT));
        assert_eq!(timers.expired(active_at + TIMEOUT, |_| Some(active_at)), [ConnId(7)]);
    }

    #[test]
    fn stop_removes_only_that_connection() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new(TIMEOUT);
        timers.start(ConnId(1), t0);
        timers.start(ConnId(2), t0);
        timers.stop(ConnId(1));
        timers.stop(ConnId(9)); // never started: nothing happens
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.expired(t0 + TIMEOUT, |_| Some(t0)), [ConnId(2)]);
    }
}
