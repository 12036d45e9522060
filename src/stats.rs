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
        }
        total
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    fn combined_summary_lists_workers() {
        let a = Summary {
            connections: 2,
            bytes_echoed: 7,
            peak_connections: 1,
            per_worker: vec![2],
            rejected: 0,
        };
        let b = Summary {
            connections: 3,
            bytes_echoed: 1,
            peak_connections: 2,
            per_worker: vec![3],
            rejected: 1,
        };
        let line = Summary::combine([a, b]).to_string();
        assert_eq!(
            line,
            "summary: served 5 connections, echoed 8 bytes, peak 3 concurrent connections, rejected 1, per worker [2, 3]"
        );
    }
}
