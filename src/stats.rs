//! Counters every model keeps, the summary at the end, and what is reported while it runs.
//!
//! Each worker (one, unless `--workers`) owns one [`Stats`] of relaxed atomics. The models
//! add to them; other threads only read them: the live reporter ([`live`], the
//! `--stats-interval` / SIGUSR1 line) and whoever wants the [`Summary`] at the end
//! ([`ServerStats`]). Reading costs the hot path nothing, and writing costs it little:
//!
//! - the threaded models add once per `read` and once per `write`, each a syscall anyway;
//! - the event loop adds per *loop turn*: it tallies a turn's reads and writes in plain
//!   integers ([`IoTally`]) and publishes the tally once, after the turn.
//!
//! Bytes *pending* (read but not yet written back) are never counted directly: they are
//! `read - echoed - unsent`, where `unsent` is what connections still held when they died.
//!
//! - `live.rs`: the statistics line and the thread that logs it.
//! - `json.rs`: the summary as JSON (`--summary-json`).

mod json;
mod live;
mod throttle;

use std::fmt;
use std::ops::Sub;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use json::{ExitReason, write_summary_json};
pub use live::Reporter;

/// Live counters of one server (one worker, with `--workers`).
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    rejected: AtomicU64,
    active: AtomicU64,
    peak: AtomicU64,
    messages: AtomicU64,
    bytes_read: AtomicU64,
    bytes_echoed: AtomicU64,
    bytes_unsent: AtomicU64,
}

/// Reads and writes not yet added to a [`Stats`]: a loop turn's worth, or one connection's
/// counts so far (the event loop tallies the difference of these before and after serving).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTally {
    /// Reads that returned data (each one's bytes are echoed or queued for echoing).
    pub messages: u64,
    /// Bytes read from clients.
    pub bytes_read: u64,
    /// Bytes written back to clients.
    pub bytes_echoed: u64,
    /// Bytes read but never written back, because their connection died first.
    pub bytes_unsent: u64,
}

impl IoTally {
    /// Add `other` to this tally.
    pub fn add(&mut self, other: IoTally) {
        self.messages += other.messages;
        self.bytes_read += other.bytes_read;
        self.bytes_echoed += other.bytes_echoed;
        self.bytes_unsent += other.bytes_unsent;
    }

    /// Nothing to add.
    pub fn is_empty(&self) -> bool {
        *self == IoTally::default()
    }
}

impl Sub for IoTally {
    type Output = IoTally;
    /// The counts between two readings of one connection (`after - before`).
    fn sub(self, before: IoTally) -> IoTally {
        IoTally {
            messages: self.messages - before.messages,
            bytes_read: self.bytes_read - before.bytes_read,
            bytes_echoed: self.bytes_echoed - before.bytes_echoed,
            bytes_unsent: self.bytes_unsent - before.bytes_unsent,
        }
    }
}

impl Stats {
    /// A connection was accepted and will be served.
    pub fn connection_opened(&self) {
        self.accepted.fetch_add(1, Relaxed);
        let active = self.active.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(active, Relaxed);
    }

    /// A served connection closed. (Its bytes were counted as they moved, with
    /// [`Stats::record`]; what it still held goes in as `bytes_unsent`.)
    pub fn connection_closed(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// A connection over `--max-connections` was accepted and closed at once.
    pub fn connection_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    /// Add reads and writes: per syscall (threaded models) or per loop turn (event loop).
    pub fn record(&self, tally: IoTally) {
        // Order matters only to a reader that races us: bytes leave `pending` (echoed,
        // unsent) after they entered it (read), so a racing reader sees too much pending
        // for an instant rather than a negative amount.
        for (counter, n) in [
            (&self.messages, tally.messages),
            (&self.bytes_read, tally.bytes_read),
            (&self.bytes_echoed, tally.bytes_echoed),
            (&self.bytes_unsent, tally.bytes_unsent),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    /// Connections open right now.
    #[cfg(test)]
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// A consistent-enough copy of every counter.
    fn sample(&self) -> Counters {
        // Loaded in the reverse order of `record`'s adds: what left `pending` is loaded
        // before what entered it, so `pending` cannot come out negative.
        let bytes_unsent = self.bytes_unsent.load(Relaxed);
        let bytes_echoed = self.bytes_echoed.load(Relaxed);
        let bytes_read = self.bytes_read.load(Relaxed);
        Counters {
            accepted: self.accepted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            open: self.active.load(Relaxed),
            peak: self.peak.load(Relaxed),
            messages: self.messages.load(Relaxed),
            bytes_echoed,
            pending: bytes_read.saturating_sub(bytes_echoed).saturating_sub(bytes_unsent),
        }
    }
}

/// One worker's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    accepted: u64,
    rejected: u64,
    open: u64,
    peak: u64,
    messages: u64,
    bytes_echoed: u64,
    pending: u64,
}

/// Every worker's counters, readable from any thread while the server runs (for the live
/// line) and after it ends (for the summary, even when `run` failed).
#[derive(Debug, Clone)]
pub struct ServerStats {
    workers: Vec<Arc<Stats>>,
    started: Instant,
}

impl ServerStats {
    /// Fresh counters for `workers` workers, from now.
    pub fn new(workers: usize) -> ServerStats {
        ServerStats { workers: (0..workers).map(|_| Arc::default()).collect(), started: Instant::now() }
    }

    /// Worker `i`'s counters, for the worker to add to.
    pub fn worker(&self, i: usize) -> Arc<Stats> {
        Arc::clone(&self.workers[i])
    }

    /// What the server has done since it was bound.
    pub fn summary(&self) -> Summary {
        let per_worker: Vec<WorkerSummary> =
            self.workers.iter().map(|stats| WorkerSummary::from(stats.sample())).collect();
        Summary::combine(per_worker, self.started.elapsed())
    }

    fn sample(&self) -> Vec<Counters> {
        self.workers.iter().map(|stats| stats.sample()).collect()
    }
}

/// What one worker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WorkerSummary {
    /// Connections served (accepted and not rejected).
    pub connections: u64,
    /// Connections accepted and closed at once because of `--max-connections`.
    pub rejected: u64,
    /// Reads whose bytes were echoed.
    pub messages: u64,
    /// Bytes written back to clients.
    pub bytes_echoed: u64,
    /// The most connections open at once.
    pub peak_connections: u64,
}

impl From<Counters> for WorkerSummary {
    fn from(c: Counters) -> Self {
        WorkerSummary {
            connections: c.accepted,
            rejected: c.rejected,
            messages: c.messages,
            bytes_echoed: c.bytes_echoed,
            peak_connections: c.peak,
        }
    }
}

/// What a server did, for the summary line, `--summary-json`, and tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Connections served (accepted and not rejected).
    pub connections: u64,
    /// Connections accepted and closed at once because of `--max-connections`.
    pub rejected: u64,
    /// Reads whose bytes were echoed.
    pub messages: u64,
    /// Bytes written back to clients.
    pub bytes_echoed: u64,
    /// The most connections open at once (summed over workers: each worker's own peak).
    pub peak_connections: u64,
    /// Each worker's share (one entry unless `--workers` > 1).
    pub per_worker: Vec<WorkerSummary>,
    /// From binding to the end.
    pub duration: Duration,
    /// What a UDP echo did with its datagrams (all zero for TCP and Unix servers).
    pub datagrams: Datagrams,
}

/// A UDP echo's datagram counts. Its echoed bytes are [`Summary::bytes_echoed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Datagrams {
    /// Datagrams sent back to their sender.
    pub echoed: u64,
    /// Dropped unanswered: from source port 0 or a small service's port (7, 13, 17, 19).
    pub dropped_source_port: u64,
    /// Dropped unanswered: the oldest reply, pushed out of a full reply queue.
    pub dropped_queue_full: u64,
    /// Dropped unanswered: `send_to` failed (not `WouldBlock`, which queues the reply).
    pub dropped_send_failed: u64,
}

impl Datagrams {
    /// Every datagram dropped, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_source_port + self.dropped_queue_full + self.dropped_send_failed
    }
}

impl Summary {
    /// Add up the summaries of independent workers.
    pub fn combine(per_worker: Vec<WorkerSummary>, duration: Duration) -> Summary {
        let sum = |field: fn(&WorkerSummary) -> u64| per_worker.iter().map(field).sum();
        Summary {
            connections: sum(|w| w.connections),
            rejected: sum(|w| w.rejected),
            messages: sum(|w| w.messages),
            bytes_echoed: sum(|w| w.bytes_echoed),
            peak_connections: sum(|w| w.peak_connections),
            duration,
            per_worker,
            datagrams: Datagrams::default(),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let datagrams = &self.datagrams;
        if *datagrams != Datagrams::default() {
            return write!(
                f,
                "summary: echoed {} datagrams ({} bytes), dropped {} (source port {}, reply queue full {}, \
                 send failed {})",
                datagrams.echoed,
                self.bytes_echoed,
                datagrams.dropped(),
                datagrams.dropped_source_port,
                datagrams.dropped_queue_full,
                datagrams.dropped_send_failed
            );
        }
        write!(
            f,
            "summary: served {} connections, echoed {} bytes, peak {} concurrent connections, rejected {}",
            self.connections, self.bytes_echoed, self.peak_connections, self.rejected
        )?;
        if self.per_worker.len() > 1 {
            let counts: Vec<String> = self.per_worker.iter().map(|w| w.connections.to_string()).collect();
            write!(f, ", per worker [{}]", counts.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_tracks_the_high_water_mark() {
        let stats = Stats::default();
        stats.connection_opened();
        stats.connection_opened();
        stats.connection_closed();
        stats.connection_opened();
        stats.connection_closed();
        stats.connection_rejected();
        stats.record(IoTally { messages: 2, bytes_read: 20, bytes_echoed: 15, bytes_unsent: 0 });
        let s = WorkerSummary::from(stats.sample());
        assert_eq!((s.connections, s.peak_connections, s.bytes_echoed, s.rejected), (3, 2, 15, 1));
        assert_eq!(stats.active(), 1);
    }

    #[test]
    fn a_udp_summary_counts_datagrams() {
        let datagrams =
            Datagrams { echoed: 5, dropped_source_port: 2, dropped_queue_full: 3, dropped_send_failed: 0 };
        let summary = Summary { bytes_echoed: 50, datagrams, ..Summary::default() };
        assert_eq!(
            summary.to_string(),
            "summary: echoed 5 datagrams (50 bytes), dropped 5 (source port 2, reply queue full 3, send failed 0)"
        );
    }

    #[test]
    fn pending_is_read_minus_echoed_minus_unsent() {
        let stats = Stats::default();
        stats.record(IoTally { messages: 3, bytes_read: 300, bytes_echoed: 100, bytes_unsent: 0 });
        assert_eq!(stats.sample().pending, 200);
        stats.record(IoTally { bytes_echoed: 150, bytes_unsent: 50, ..IoTally::default() });
        assert_eq!(stats.sample().pending, 0);
    }

    #[test]
    fn a_connections_tally_is_the_difference_of_two_readings() {
        let before = IoTally { messages: 1, bytes_read: 10, bytes_echoed: 4, bytes_unsent: 0 };
        let after = IoTally { messages: 3, bytes_read: 30, bytes_echoed: 30, bytes_unsent: 0 };
        let mut turn = IoTally::default();
        assert!(turn.is_empty());
        turn.add(after - before);
        turn.add(after - before);
        assert_eq!(turn, IoTally { messages: 4, bytes_read: 40, bytes_echoed: 52, bytes_unsent: 0 });
    }

    #[test]
    fn combined_summary_lists_workers() {
        let a = WorkerSummary { connections: 2, bytes_echoed: 7, peak_connections: 1, ..Default::default() };
        let b =
            WorkerSummary { connections: 3, bytes_echoed: 1, peak_connections: 2, rejected: 1, messages: 4 };
        let summary = Summary::combine(vec![a, b], Duration::from_secs(1));
        assert_eq!(summary.messages, 4);
        assert_eq!(
            summary.to_string(),
            "summary: served 5 connections, echoed 8 bytes, peak 3 concurrent connections, rejected 1, per worker [2, 3]"
        );
    }
}
