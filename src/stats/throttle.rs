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

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use log::{debug, warn};

/// At most one line per condition per window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Never logged yet.
const NEVER: u64 = u64::MAX;

/// A condition a client can cause as often as it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// A connection over `--max-connections`, closed at once.
    MaxConnections,
    /// A connection without a valid PROXY header (`--proxy-protocol`), closed.
    ProxyHeader,
    /// A frame over `--max-frame`; its connection is closed.
    FrameTooLarge,
}

impl ClientEvent {
    /// What a count of them is called in the log.
    fn plural(self) -> &'static str {
        match self {
            ClientEvent::MaxConnections => "connections refused at --max-connections",
            ClientEvent::ProxyHeader => "connections refused for their PROXY header",
            ClientEvent::FrameTooLarge => "frames over --max-frame",
        }
    }
}

/// The log of the conditions clients cause, one [`Throttle`] each.
#[derive(Debug, Default)]
pub struct ClientEvents {
    max_connections: Throttle,
    proxy_header: Throttle,
    frame_too_large: Throttle,
}

impl ClientEvents {
    /// `event` occurred at `now`; `detail` says what happened to whom (it is formatted only
    /// for a line that is logged). A debug line each time; a warning the first time, then
    /// at most once per [`WINDOW`], with the count.
    pub fn log(&self, event: ClientEvent, now: Instant, detail: impl FnOnce() -> String) {
        let throttle = match event {
            ClientEvent::MaxConnections => &self.max_connections,
            ClientEvent::ProxyHeader => &self.proxy_header,
            ClientEvent::FrameTooLarge => &self.frame_too_large,
        };
        let occurred = throttle.occurred(now);
        // Formatting the detail is the cost: only for a line that will be written.
        let written =
            occurred.is_some() && log::log_enabled!(log::Level::Warn) || log::log_enabled!(log::Level::Debug);
        if !written {
            return;
        }
        let detail = detail();
        debug!("{detail}");
        match occurred {
            Some(1) => {
                warn!("{detail} (more {} are counted, and logged once per {WINDOW:?})", event.plural())
            }
            Some(n) => warn!("{n} {} since the last such line; the last: {detail}", event.plural()),
            None => {}
        }
    }
}

/// Where this process's clocks start, so that an instant fits a `u64` of milliseconds.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `now` as milliseconds since [`epoch`] (0 for an instant before it).
pub fn millis(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX - 1)
}

/// One condition's rate limit.
#[derive(Debug)]
pub struct Throttle {
    /// When the last line was logged ([`NEVER`] before the first).
    last_logged: AtomicU64,
    /// Occurrences since the last line, this one included once counted.
    since_logged: AtomicU64,
}

impl Default for Throttle {
    /// A condition that has not occurred yet.
    fn default() -> Throttle {
        Throttle { last_logged: AtomicU64::new(NEVER), since_logged: AtomicU64::new(0) }
    }
}

impl Throttle {
    /// The condition occurred at `now`. `Some(n)`: log a line now, for `n` occurrences (1 for
    /// the first ever, then those of the window that just ended); `None`: do not.
    pub fn occurred(&self, now: Instant) -> Option<u64> {
        self.since_logged.fetch_add(1, Relaxed);
        let now_ms = millis(now);
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
        let t0 = epoch() + Duration::from_secs(1);
        let throttle = Throttle::default();
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
        let t0 = epoch();
        let throttle = Throttle::default();
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
