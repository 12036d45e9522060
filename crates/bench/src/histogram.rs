//! Round-trip times in an HDR histogram.
//!
//! Why a histogram and not a list of samples: a million round trips a second would need a
//! growing buffer and a sort. An HDR histogram has fixed-size buckets chosen so that every
//! value keeps three significant digits (38.2 µs and 1.23 s alike), so recording is an
//! increment, memory is fixed, and per-thread histograms add up exactly.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest round trip that is told apart from longer ones: a minute.
const HIGHEST_NANOS: u64 = 60_000_000_000;

/// Round-trip times of one load-generator thread, or of all of them merged.
#[derive(Debug, Clone)]
pub struct RoundTrips(Histogram<u64>);

impl Default for RoundTrips {
    fn default() -> Self {
        Self::new()
    }
}

impl RoundTrips {
    /// An empty histogram: 1 ns to a minute, 3 significant digits.
    pub fn new() -> RoundTrips {
        let histogram = Histogram::new_with_bounds(1, HIGHEST_NANOS, 3).expect("constant, valid bounds");
        RoundTrips(histogram)
    }

    /// Record one round trip (longer than a minute counts as a minute).
    pub fn record(&mut self, round_trip: Duration) {
        let nanos = u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(nanos);
    }

    /// Add another thread's round trips to these.
    pub fn merge(&mut self, other: &RoundTrips) {
        // Both come from `new`, so the bounds match and `add` cannot fail.
        self.0.add(&other.0).expect("histograms with equal bounds");
    }

    /// How many round trips were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The histogram itself, in nanoseconds, for the interval log.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.0
    }

    /// The quantiles a report shows.
    pub fn latency(&self) -> Latency {
        let micros = |nanos: u64| nanos as f64 / 1000.0;
        let at = |q: f64| micros(self.0.value_at_quantile(q));
        Latency {
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: micros(self.0.max()),
            mean_us: self.0.mean() / 1000.0,
        }
    }
}

/// Round-trip quantiles in microseconds (all 0 when nothing was recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// The median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The slowest round trip.
    pub max_us: f64,
    /// The mean.
    pub mean_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within the histogram's 3 significant digits.
    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= want * 0.001
    }

    #[test]
    fn quantiles_of_a_known_spread() {
        let mut trips = RoundTrips::new();
        for us in 1..=1000u64 {
            trips.record(Duration::from_micros(us));
        }
        let l = trips.latency();
        assert!(close(l.p50_us, 500.0), "{l:?}");
        assert!(close(l.p99_us, 990.0), "{l:?}");
        assert!(close(l.p999_us, 999.0), "{l:?}");
        assert!(close(l.max_us, 1000.0), "{l:?}");
        assert!(close(l.mean_us, 500.5), "{l:?}");
    }

    #[test]
    fn merged_threads_count_every_sample() {
        let (mut a, mut b) = (RoundTrips::new(), RoundTrips::new());
        a.record(Duration::from_micros(10));
        b.record(Duration::from_millis(10));
        b.record(Duration::from_secs(3600)); // saturates at a minute, still counted
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert!(close(a.latency().max_us, 60e6));
    }

    #[test]
    fn empty_is_all_zero() {
        assert_eq!(RoundTrips::new().latency(), Latency::default());
    }
}
