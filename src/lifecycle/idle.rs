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
//!
//! Every connection carries its `last_active`, so it is a [`Stamp`] of 8 bytes (milliseconds
//! on the loop's [`Clock`]) rather than an `Instant` of 16; the queue keeps stamps too.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::ConnId;

/// A loop's clock for stamps: milliseconds since the loop began. Copied freely (it is one
/// `Instant`); every stamp a loop compares must come from the same clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

/// A point in time in 8 bytes: whole milliseconds on a [`Clock`], rounded up, so that a
/// deadline computed from a stamp is never earlier than the real one (at most 1 ms later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(u64);

impl Clock {
    /// A clock whose time 0 is `epoch`; instants before it read as 0.
    pub fn new(epoch: Instant) -> Clock {
        Clock { epoch }
    }

    /// `at`, stamped.
    pub fn stamp(&self, at: Instant) -> Stamp {
        let since = at.saturating_duration_since(self.epoch);
        Stamp(since.as_nanos().div_ceil(1_000_000) as u64)
    }

    /// The instant a stamp stands for.
    pub fn instant(&self, stamp: Stamp) -> Instant {
        self.epoch + Duration::from_millis(stamp.0)
    }
}

/// The idle deadlines of the live connections, earliest first.
#[derive(Debug)]
pub struct IdleTimers {
    /// `--idle-timeout`.
    timeout: Duration,
    /// The loop's clock: the connections' `last_active` stamps come from it.
    clock: Clock,
    /// (deadline, connection), earliest first.
    queue: BTreeSet<(Stamp, ConnId)>,
    /// Each queued connection's deadline, so `stop` can find its queue entry.
    deadlines: HashMap<ConnId, Stamp>,
}

impl IdleTimers {
    /// No connections yet; each will be closed after `timeout` without bytes moving. Stamps
    /// come from `clock`.
    pub fn new(timeout: Duration, clock: Clock) -> Self {
        IdleTimers { timeout, clock, queue: BTreeSet::new(), deadlines: HashMap::new() }
    }

    /// A connection opened at `now`: it expires at `now + timeout` unless active meanwhile.
    pub fn start(&mut self, id: ConnId, now: Instant) {
        self.schedule(id, self.clock.stamp(now + self.timeout));
    }

    /// A connection closed: forget it.
    pub fn stop(&mut self, id: ConnId) {
        if let Some(deadline) = self.deadlines.remove(&id) {
            self.queue.remove(&(deadline, id));
        }
    }

    /// The earliest deadline, for the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|&(deadline, _)| self.clock.instant(deadline))
    }

    /// The connections idle for the whole timeout at `now`; `last_active` tells when bytes
    /// last moved on a connection (a stamp of this clock). They are forgotten here; the loop
    /// closes them. Those that were active since their entry was queued are queued again at
    /// their real deadline.
    pub fn expired(&mut self, now: Instant, last_active: impl Fn(ConnId) -> Option<Stamp>) -> Vec<ConnId> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.queue.first() {
            if self.clock.instant(deadline) > now {
                break;
            }
            self.queue.pop_first();
            self.deadlines.remove(&id);
            // The loop stops every closed connection, so `last_active` is there; if not,
            // the entry is simply dropped.
            let Some(active) = last_active(id) else { continue };
            let real_deadline = self.clock.stamp(self.clock.instant(active) + self.timeout);
            if self.clock.instant(real_deadline) <= now {
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

    fn schedule(&mut self, id: ConnId, deadline: Stamp) {
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

    /// Timers on a clock that starts at `t0`, and a stamp maker for that clock.
    fn timers_at(t0: Instant) -> (IdleTimers, impl Fn(Instant) -> Option<Stamp>) {
        let clock = Clock::new(t0);
        (IdleTimers::new(TIMEOUT, clock), move |at| Some(clock.stamp(at)))
    }

    #[test]
    fn due_in_deadline_order_and_boundary_is_due() {
        let t0 = Instant::now();
        let (mut timers, stamp) = timers_at(t0);
        timers.start(ConnId(2), t0 + Duration::from_secs(1));
        timers.start(ConnId(1), t0);
        assert_eq!(timers.next_deadline(), Some(t0 + TIMEOUT));
        let never_active = |_| stamp(t0);
        assert!(timers.expired(t0, never_active).is_empty());
        assert_eq!(timers.expired(t0 + TIMEOUT, never_active), [ConnId(1)]);
        // Connection 2 opened at t0+1s, and was never active after: due at t0+2s.
        let opened_late = |_| stamp(t0 + Duration::from_secs(1));
        assert!(timers.expired(t0 + Duration::from_millis(1999), opened_late).is_empty());
        assert_eq!(timers.expired(t0 + Duration::from_secs(2), opened_late), [ConnId(2)]);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn activity_pushes_the_deadline_back() {
        let t0 = Instant::now();
        let (mut timers, stamp) = timers_at(t0);
        timers.start(ConnId(7), t0);
        let active_at = t0 + Duration::from_millis(600);
        assert!(timers.expired(t0 + TIMEOUT, |_| stamp(active_at)).is_empty());
        assert_eq!(timers.next_deadline(), Some(active_at + TIMEOUT));
        assert_eq!(timers.expired(active_at + TIMEOUT, |_| stamp(active_at)), [ConnId(7)]);
    }

    #[test]
    fn stop_removes_only_that_connection() {
        let t0 = Instant::now();
        let (mut timers, stamp) = timers_at(t0);
        timers.start(ConnId(1), t0);
        timers.start(ConnId(2), t0);
        timers.stop(ConnId(1));
        timers.stop(ConnId(9)); // never started: nothing happens
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.expired(t0 + TIMEOUT, |_| stamp(t0)), [ConnId(2)]);
    }

    /// A stamp rounds up to the next millisecond, so an idle deadline computed from it is
    /// never early: at most a millisecond late.
    #[test]
    fn stamps_round_up_and_never_make_a_deadline_early() {
        let t0 = Instant::now();
        let (mut timers, stamp) = timers_at(t0);
        let active_at = t0 + Duration::from_micros(2_300);
        assert_eq!(Clock::new(t0).instant(stamp(active_at).unwrap()), t0 + Duration::from_millis(3));
        if let Some(before) = t0.checked_sub(Duration::from_secs(1)) {
            assert_eq!(stamp(before), stamp(t0), "before the epoch reads as 0");
        }
        timers.start(ConnId(1), t0);
        let just_before = active_at + TIMEOUT - Duration::from_micros(1);
        assert!(timers.expired(just_before, |_| stamp(active_at)).is_empty());
        assert_eq!(timers.expired(t0 + Duration::from_millis(1003), |_| stamp(active_at)), [ConnId(1)]);
    }
}
