//! Idle timeouts that cost O(expired), not O(connections), with one owner for every deadline.
//!
//! A timer queue ordered by deadline: the loop asks for the earliest deadline (its poll
//! timeout) and for the connections whose deadline passed. Reads and writes do not touch the
//! queue: they only stamp `last_active` on the connection. When an entry comes due, the queue
//! compares it with that stamp and either reports the connection expired or puts it back with
//! its real deadline. So a busy connection costs one queue operation per timeout period, not
//! one per read.
//!
//! Deadlines live here and only here: the loop says `start` when a connection opens and
//! `stop` when it closes, and never sees a deadline.
//!
//! Time is an argument (`now`), never read here, so the queue is tested without sockets or
//! sleeping. The boundary: a deadline equal to `now` is due.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use mio::Token;

/// The idle deadlines of the live connections, earliest first.
#[derive(Debug)]
pub struct IdleTimers {
    /// `--idle-timeout`.
    timeout: Duration,
    /// (deadline, connection), earliest first.
    queue: BTreeSet<(Instant, Token)>,
    /// Each queued connection's deadline, so `stop` can find its queue entry.
    deadlines: HashMap<Token, Instant>,
}

impl IdleTimers {
    /// No connections yet; each will be closed after `timeout` without bytes moving.
    pub fn new(timeout: Duration) -> Self {
        IdleTimers { timeout, queue: BTreeSet::new(), deadlines: HashMap::new() }
    }

    /// A connection opened at `now`: it expires at `now + timeout` unless active meanwhile.
    pub fn start(&mut self, token: Token, now: Instant) {
        self.schedule(token, now + self.timeout);
    }

    /// A connection closed: forget it.
    pub fn stop(&mut self, token: Token) {
        if let Some(deadline) = self.deadlines.remove(&token) {
            self.queue.remove(&(deadline, token));
        }
    }

    /// The earliest deadline, for the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|&(deadline, _)| deadline)
    }

    /// The connections idle for the whole timeout at `now`; `last_active` tells when bytes
    /// last moved on a connection. They are forgotten here; the loop closes them. Those that
    /// were active since their entry was queued are queued again at their real deadline.
    pub fn expired(&mut self, now: Instant, last_active: impl Fn(Token) -> Option<Instant>) -> Vec<Token> {
        let mut expired = Vec::new();
        while let Some(&(deadline, token)) = self.queue.first() {
            if deadline > now {
                break;
            }
            self.queue.pop_first();
            self.deadlines.remove(&token);
            // The loop stops every closed connection, so `last_active` is there; if not,
            // the entry is simply dropped.
            let Some(active) = last_active(token) else { continue };
            let real_deadline = active + self.timeout;
            if real_deadline <= now {
                expired.push(token);
            } else {
                self.schedule(token, real_deadline);
            }
        }
        expired
    }

    /// Connections with a deadline.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    fn schedule(&mut self, token: Token, deadline: Instant) {
        self.queue.insert((deadline, token));
        self.deadlines.insert(token, deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    #[test]
    fn due_in_deadline_order_and_boundary_is_due() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new(TIMEOUT);
        timers.start(Token(2), t0 + Duration::from_secs(1));
        timers.start(Token(1), t0);
        assert_eq!(timers.next_deadline(), Some(t0 + TIMEOUT));
        let never_active = |_| Some(t0);
        assert!(timers.expired(t0, never_active).is_empty());
        assert_eq!(timers.expired(t0 + TIMEOUT, never_active), [Token(1)]);
        // Token 2 opened at t0+1s, and was never active after: due at t0+2s.
        let opened_late = |_| Some(t0 + Duration::from_secs(1));
        assert!(timers.expired(t0 + Duration::from_millis(1999), opened_late).is_empty());
        assert_eq!(timers.expired(t0 + Duration::from_secs(2), opened_late), [Token(2)]);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn activity_pushes_the_deadline_back() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new(TIMEOUT);
        timers.start(Token(7), t0);
        let active_at = t0 + Duration::from_millis(600);
        assert!(timers.expired(t0 + TIMEOUT, |_| Some(active_at)).is_empty());
        assert_eq!(timers.next_deadline(), Some(active_at + TIMEOUT));
        assert_eq!(timers.expired(active_at + TIMEOUT, |_| Some(active_at)), [Token(7)]);
    }

    #[test]
    fn stop_removes_only_that_connection() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new(TIMEOUT);
        timers.start(Token(1), t0);
        timers.start(Token(2), t0);
        timers.stop(Token(1));
        timers.stop(Token(9)); // never started: nothing happens
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.expired(t0 + TIMEOUT, |_| Some(t0)), [Token(2)]);
    }
}
