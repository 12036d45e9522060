//! Idle-timeout bookkeeping that costs O(expired), not O(connections).
//!
//! A timer queue ordered by deadline: the loop asks for the earliest deadline (its poll
//! timeout) and for the entries that are due. Reads and writes do not touch the queue: they
//! only stamp `last_active` on the connection. When an entry comes due, the loop compares it
//! with that stamp and either closes the connection or puts it back with its real deadline.
//! So a busy connection costs one queue operation per timeout period, not one per read.
//!
//! Time is an argument (`now`), never read here, so the queue is tested without sockets or
//! sleeping. The boundary: a deadline equal to `now` is due.

use std::collections::BTreeSet;
use std::time::Instant;

use mio::Token;

/// Deadlines of live connections, earliest first.
#[derive(Debug, Default)]
pub struct IdleTimers {
    queue: BTreeSet<(Instant, Token)>,
}

impl IdleTimers {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue `token` to be checked at `deadline`.
    pub fn schedule(&mut self, token: Token, deadline: Instant) {
        self.queue.insert((deadline, token));
    }

    /// Forget the entry made by `schedule(token, deadline)` (the connection closed).
    pub fn cancel(&mut self, token: Token, deadline: Instant) {
        self.queue.remove(&(deadline, token));
    }

    /// The earliest deadline, for the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|&(deadline, _)| deadline)
    }

    /// Remove and return the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Token> {
        match self.queue.first() {
            Some(&(deadline, _)) if deadline <= now => self.queue.pop_first().map(|(_, t)| t),
            _ => None,
        }
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// No entries queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_in_deadline_order_and_boundary_is_due() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new();
        timers.schedule(Token(2), t0 + Duration::from_secs(2));
        timers.schedule(Token(1), t0 + Duration::from_secs(1));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(1)), Some(Token(1)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)), Some(Token(2)));
        assert!(timers.is_empty());
    }

    #[test]
    fn cancel_removes_only_that_entry() {
        let t0 = Instant::now();
        let mut timers = IdleTimers::new();
        timers.schedule(Token(1), t0);
        timers.schedule(Token(2), t0);
        timers.cancel(Token(1), t0);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.pop_due(t0), Some(Token(2)));
    }
}
