//! Open-loop pacing (`--rate`): messages (or connections) are due on a fixed schedule,
//! whether or not the server has answered the earlier ones.
//!
//! Why: a closed-loop generator sends the next message only when the last echo is back, so
//! while a server stalls it sends nothing, and the stall shows up as *one* slow round trip
//! instead of the hundreds that a real client population would have suffered in it
//! ("coordinated omission", Gil Tene; wrk2's `-R`). Open-loop, every message has a due time,
//! and its latency is measured from that due time, so a stall is charged to every message
//! that should have been sent during it.
//!
//! The generator can fall behind its own schedule too (a CPU too busy to send on time). Then
//! the latencies are still honest (measured from the due time), but the server was offered
//! less load than asked. **Behind** is defined as: more than 1% of the messages due in the
//! measured window were sent (queued, for a message) more than 1 ms after their due time.

use std::time::{Duration, Instant};

use serde::Serialize;

/// A message sent later than this after its due time counts as late.
pub const LATE: Duration = Duration::from_millis(1);
/// More than this fraction of late messages marks the run as behind its schedule.
pub const BEHIND_FRACTION: f64 = 0.01;

/// One load-generator thread's share of `--rate`: tick `k` is due at `first + k / per_sec`.
#[derive(Debug, Clone)]
pub struct Schedule {
    first: Instant,
    per_sec: f64,
    /// The next tick not yet taken.
    next: u64,
}

impl Schedule {
    /// `per_sec` ticks a second, the first at `first`.
    pub fn new(first: Instant, per_sec: f64) -> Schedule {
        Schedule { first, per_sec, next: 0 }
    }

    /// When tick `k` is due.
    pub fn due(&self, k: u64) -> Instant {
        self.first + Duration::from_secs_f64(k as f64 / self.per_sec)
    }

    /// When the next tick is due.
    pub fn next_due(&self) -> Instant {
        self.due(self.next)
    }

    /// Take the next tick if it is due by `now` and before `until`: its number and due time.
    pub fn take_due(&mut self, now: Instant, until: Instant) -> Option<(u64, Instant)> {
        let due = self.next_due();
        if due > now || due >= until {
            return None;
        }
        self.next += 1;
        Some((self.next - 1, due))
    }
}

/// What one thread counted about its schedule, in the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pacing {
    /// Ticks due in the window that were taken.
    pub due: u64,
    /// Of those, taken more than [`LATE`] after their due time.
    pub late: u64,
    /// Messages (or connections) whose sending was complete inside the window.
    pub sent: u64,
    /// Messages due in the window never answered, even after the drain.
    pub unanswered: u64,
}

impl Pacing {
    /// Count a tick taken at `now`, due at `due`, when `in_window`.
    pub fn taken(&mut self, due: Instant, now: Instant, in_window: bool) {
        if in_window {
            self.due += 1;
            self.late += u64::from(now.saturating_duration_since(due) > LATE);
        }
    }

    /// Add another thread's counts.
    pub fn merge(&mut self, other: &Pacing) {
        self.due += other.due;
        self.late += other.late;
        self.sent += other.sent;
        self.unanswered += other.unanswered;
    }
}

/// The open-loop part of a report: the rate asked for beside the rate achieved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateReport {
    /// `--rate`, per second.
    pub asked_per_s: f64,
    /// Messages (or connections) sent per second in the window.
    pub sent_per_s: f64,
    /// Echoes verified (or connections completed) per second: the rate the server sustained.
    pub achieved_per_s: f64,
    /// Due in the window.
    pub due: u64,
    /// Sent more than 1 ms after they were due.
    pub late: u64,
    /// `late / due`.
    pub late_fraction: f64,
    /// More than 1% late: the generator fell behind its own schedule, so the server was
    /// offered a burstier (or lower) load than asked.
    pub behind: bool,
    /// Due in the window, never answered (recorded at their age when the run gave up).
    pub unanswered: u64,
}

impl RateReport {
    /// Sum up `pacing` over a window of `secs`, with `achieved` answers in it.
    pub fn new(asked_per_s: f64, pacing: &Pacing, achieved: u64, secs: f64) -> RateReport {
        let late_fraction = if pacing.due == 0 { 0.0 } else { pacing.late as f64 / pacing.due as f64 };
        RateReport {
            asked_per_s,
            sent_per_s: pacing.sent as f64 / secs,
            achieved_per_s: achieved as f64 / secs,
            due: pacing.due,
            late: pacing.late,
            late_fraction,
            behind: late_fraction > BEHIND_FRACTION,
            unanswered: pacing.unanswered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_come_due_in_order_and_only_before_the_end() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 1000.0); // one a millisecond
        let end = start + Duration::from_millis(3);
        let now = start + Duration::from_millis(10);
        let taken: Vec<u64> = std::iter::from_fn(|| schedule.take_due(now, end)).map(|(k, _)| k).collect();
        assert_eq!(taken, [0, 1, 2]);
        assert_eq!(schedule.next_due(), start + Duration::from_millis(3));
        let mut early = Schedule::new(start + Duration::from_secs(1), 10.0);
        assert_eq!(early.take_due(start, start + Duration::from_secs(9)), None);
    }

    #[test]
    fn more_than_one_percent_late_is_behind() {
        let due = Instant::now();
        let mut pacing = Pacing::default();
        for i in 0..1000 {
            let late_by = if i < 10 { Duration::from_millis(2) } else { Duration::from_micros(900) };
            pacing.taken(due, due + late_by, true);
        }
        pacing.taken(due, due + Duration::from_secs(1), false); // outside the window: not counted
        let report = RateReport::new(1000.0, &pacing, 990, 1.0);
        assert_eq!((report.due, report.late, report.behind), (1000, 10, false));
        pacing.taken(due, due + Duration::from_millis(5), true);
        assert!(RateReport::new(1000.0, &pacing, 990, 1.0).behind);
    }
}
