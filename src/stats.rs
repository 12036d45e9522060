//! Counters every model keeps, and the one summary line logged at shutdown.
//!
//! Atomics, because the thread-per-connection model updates them from many threads; the event
//! loop touches them only when a connection opens or closes, never per read or write.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one server (one worker, with `--workers`).
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    rejected: AtomicU64,
    bytes_echoed: AtomicU64,
    active: AtomicU64,
    peak: AtomicU64,
}

impl Stats {
    /// A connection was accepted and will be served.
    pub fn connection_opened(&self) {
        self.accepted.fetch_add(1, Relaxed);
        let active = self.active.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(active, Relaxed);
    }

    /// A served connection closed after echoing `bytes`.
    pub fn connection_closed(&self, bytes: u64) {
        self.active.fetch_sub(1, Relaxed);
        self.bytes_echoed.fetch_add(bytes, Relaxed);
    }

    /// A connection over `--max-connections` was accepted and closed at once.
    pub fn connection_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    /// Connections open right now.
    #[cfg(test)]
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> Summary {
        let accepted = self.accepted.load(Relaxed);
        Summary {
            connections: accepted,
            rejected: self.rejected.load(Relaxed),
            bytes_echoed: self.bytes_echoed.load(Relaxed),
            peak_connections: self.peak.load(Relaxed),
            per_worker: vec![accepted],
            datagrams: Datagrams::default(),
        }
    }
}

/// What a server did, for the summary line and for tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Connections served (accepted and not rejected).
    pub connections: u64,
    /// Connections accepted and closed at once because of `--max-connections`.
    pub rejected: u64,
    /// Bytes written back to clients.
    pub bytes_echoed: u64,
    /// The most connections open at once (summed over workers).
    pub peak_connections: u64,
    /// Connections served by each worker (one entry unless `--workers` > 1).
    pub per_worker: Vec<u64>,
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
    pub fn combine(parts: impl IntoIterator<Item = Summary>) -> Summary {
        let mut total = Summary::default();
        for part in parts {
            total.connections += part.connections;
            total.rejected += part.rejected;
            total.bytes_echoed += part.bytes_echoed;
            total.peak_connections += part.peak_connections;
            total.per_worker.extend(part.per_worker);
            total.datagrams.echoed += part.datagrams.echoed;
            total.datagrams.dropped_source_port += part.datagrams.dropped_source_port;
            total.datagrams.dropped_queue_full += part.datagrams.dropped_queue_full;
            total.datagrams.dropped_send_failed += part.datagrams.dropped_send_failed;
        }
        total
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
            let counts: Vec<String> = self.per_worker.iter().map(u64::to_string).collect();
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
        stats.connection_closed(10);
        stats.connection_opened();
        stats.connection_closed(5);
        stats.connection_rejected();
        let s = stats.snapshot();
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
    fn combined_summary_lists_workers() {
        let a = Summary {
            connections: 2,
            bytes_echoed: 7,
            peak_connections: 1,
            per_worker: vec![2],
            rejected: 0,
            datagrams: Datagrams::default(),
        };
        let b = Summary {
            connections: 3,
            bytes_echoed: 1,
            peak_connections: 2,
            per_worker: vec![3],
            rejected: 1,
            datagrams: Datagrams::default(),
        };
        let line = Summary::combine([a, b]).to_string();
        assert_eq!(
            line,
            "summary: served 5 connections, echoed 8 bytes, peak 3 concurrent connections, rejected 1, per worker [2, 3]"
        );
    }
}
