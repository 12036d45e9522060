//! Rate-limited logging of what clients cause, so that no client can flood the log.
//!
//! A condition one client can repeat as fast as it likes (a frame over `--max-frame`, a
//! connection over `--max-connections`, a bad PROXY header) is counted always (the counters
//! reach the metrics, the live line and the summary), and logged at most once per
//! [`WINDOW`]: the first occurrence at once, then, while they go on, one line per window
//! with the count since the last line, as the accept back-off log does
//! ([`crate::net::BackoffLog`]). The other occurrences get a debug line. What the operator
//! does (start, stop, a listener failing) is logged at once, elsewhere.
//!
//! It is shared by every thread of a server: one atomic add per occurrence, and a
//! compare-and-swap, so that exactly one thread writes each window's line.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// At most one line per condition per window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Never logged yet.
const NEVER: u64 = u64::MAX;

/// One condition's rate limit.
#[derive(Debug)]
pub struct Throttle {
    /// Times are kept as milliseconds since here, so they fit an atomic.
    epoch: Instant,
    /// When the last line was logged ([`NEVER`] before the first).
    last_logged: AtomicU64,
    /// Occurrences since the last line, this one included once counted.
    since_logged: AtomicU64,
}

impl Throttle {
    /// A condition that has not occurred yet.
    pub fn new(epoch: Instant) -> Throttle {
        Throttle { epoch, last_logged: AtomicU64::new(NEVER), since_logged: AtomicU64::new(0) }
    }

    /// The condition occurred at `now`. `Some(n)`: log a line now, for `n` occurrences (1 for
    /// the first ever, then those of the window that just ended); `None`: do not.
    pub fn occurred(&self, now: Instant) -> Option<u64> {
        self.since_logged.fetch_add(1, Relaxed);
        let now_ms =
            u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(NEVER - 1);
        let last = self.last_logged.load(Relaxed);
        let due = last == NEVER || now_ms.saturating_sub(last) >= WINDOW.as_millis() as u64;
        // Only the thread that moves `last_logged` logs: the others lost the race to it.
        if due && self.last_logged.compare_exchange(last, now_ms, Relaxed, Relaxed).is_ok() {
            return Some(self.since_logged.swap(0, Relaxed));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_line_per_window_with_a_count() {
        let t0 = Instant::now();
        let throttle = Throttle::new(t0);
        assert_eq!(throttle.occurred(t0), Some(1));
        // 999 more within the window: none logged.
        for i in 1..1000 {
            assert_eq!(throttle.occurred(t0 + WINDOW * i / 1000), None);
        }
        // The first after the window logs them all, itself included.
        assert_eq!(throttle.occurred(t0 + WINDOW), Some(1000));
        assert_eq!(throttle.occurred(t0 + WINDOW + Duration::from_millis(1)), None);
        // A quiet spell, then one more: logged at once, with the one still unlogged.
        assert_eq!(throttle.occurred(t0 + WINDOW * 5), Some(2));
    }

    /// However many threads race, each window gives one line, and no occurrence is lost.
    #[test]
    fn racing_threads_log_once_per_window_and_count_everything() {
        let t0 = Instant::now();
        let throttle = Throttle::new(t0);
        let logged: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..10_000u32)
                            .filter_map(|i| throttle.occurred(t0 + WINDOW * (i / 1000)))
                            .collect::<Vec<u64>>()
                    })
                })
                .collect();
            let lines: Vec<u64> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
            assert!(lines.len() <= 10, "{} lines for 10 windows", lines.len());
            lines.iter().sum()
        });
        let unlogged = throttle.since_logged.load(Relaxed);
        assert_eq!(logged + unlogged, 40_000);
    }
}
