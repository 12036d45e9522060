//! The `fairness` scenario: does one connection that never stops sending starve the
//! others?
//!
//! An event loop that reads one connection until `WouldBlock` before it looks at the next
//! can be held by a client that always has more to send: the other connections wait for
//! the stream to pause, which it never does. So the scenario runs 100 small connections
//! at a fixed rate (open loop, latency from each message's due time) twice on the same
//! server: alone, then beside one connection streaming 64 KiB messages as fast as it can
//! (closed loop, 4 in flight), both on one timeline. The small connections' p99 and p99.9
//! alone and beside the stream, and the stream's throughput, say whether any model lets
//! the stream take the loop.

use std::io;

use serde::Serialize;

use crate::run::{self, EchoReport, Load};
use crate::target::Target;

/// What the fairness scenario measured, the numbers to read first at the top.
#[derive(Debug, Clone, Serialize)]
pub struct FairnessReport {
    /// The small connections' p99, alone and beside the stream.
    pub small_p99_us: Pair,
    /// The small connections' p99.9, alone and beside the stream.
    pub small_p999_us: Pair,
    /// `beside_stream / alone` of the p99: 1 is perfectly fair.
    pub p99_ratio: Option<f64>,
    /// `beside_stream / alone` of the p99.9.
    pub p999_ratio: Option<f64>,
    /// The stream's echoed MiB per second, beside the small connections.
    pub stream_mib_per_s: f64,
    /// The stream's echoed messages per second.
    pub stream_msgs_per_s: f64,
    /// The loads.
    pub small: SmallLoad,
    /// The stream's load.
    pub stream: StreamLoad,
    /// False when a load-generator thread was saturated or behind in either run.
    pub valid: bool,
    /// Why not valid, naming the run.
    pub warnings: Vec<String>,
    /// The three full reports: the small connections alone, beside the stream, and the
    /// stream.
    pub runs: FairnessRuns,
}

/// A number alone and beside the stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pair {
    /// The small connections alone.
    pub alone: f64,
    /// The small connections beside the stream.
    pub beside_stream: f64,
}

/// The small connections' load.
#[derive(Debug, Clone, Serialize)]
pub struct SmallLoad {
    /// Connections.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages per second over all of them.
    pub rate_per_s: f64,
}

/// The stream's load.
#[derive(Debug, Clone, Serialize)]
pub struct StreamLoad {
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight.
    pub pipeline: usize,
}

/// The full reports behind a [`FairnessReport`].
#[derive(Debug, Clone, Serialize)]
pub struct FairnessRuns {
    /// The small connections alone.
    pub alone: EchoReport,
    /// The small connections beside the stream.
    pub beside_stream: EchoReport,
    /// The stream.
    pub stream: EchoReport,
}

impl FairnessReport {
    /// No errors and no wrong bytes in any of the three.
    pub fn problems(&self) -> Option<String> {
        let r = &self.runs;
        let dirty: Vec<String> =
            [("small alone", &r.alone), ("small beside the stream", &r.beside_stream), ("stream", &r.stream)]
                .into_iter()
                .filter(|(_, run)| !run.is_clean())
                .map(|(name, run)| format!("{name}: {}", crate::report::echo_problems(run)))
                .collect();
        (!dirty.is_empty()).then(|| dirty.join("; "))
    }

    /// Whether any run had a saturated or late load generator.
    pub fn client_bound(&self) -> bool {
        !self.valid
    }
}

/// Run the scenario against `target`: `small` (open loop) alone, then `small` and `stream`
/// together. `watch` is the server's PID.
pub fn measure(
    target: &Target,
    small: &Load,
    stream: &Load,
    watch: Option<u32>,
) -> io::Result<FairnessReport> {
    let hidden = crate::progress::Progress::hidden();
    let alone = run::run_echo(target, small, watch, &hidden)?;
    let mut together = run::run_together(target, &[small.clone(), stream.clone()], watch, &hidden, None)?;
    let stream_report = together.pop().ok_or_else(|| io::Error::other("no stream report"))?;
    let beside = together.pop().ok_or_else(|| io::Error::other("no small report"))?;
    let pair = |f: fn(&EchoReport) -> f64| Pair { alone: f(&alone), beside_stream: f(&beside) };
    let ratio = |p: Pair| (p.alone > 0.0).then(|| p.beside_stream / p.alone);
    let (p99, p999) = (pair(|r| r.latency.p99_us), pair(|r| r.latency.p999_us));
    let named = |name: &str, run: &EchoReport| {
        run.warnings.iter().map(|w| format!("{name}: {w}")).collect::<Vec<_>>()
    };
    let warnings: Vec<String> =
        [named("small alone", &alone), named("beside the stream", &beside), named("stream", &stream_report)]
            .concat();
    Ok(FairnessReport {
        small_p99_us: p99,
        small_p999_us: p999,
        p99_ratio: ratio(p99),
        p999_ratio: ratio(p999),
        stream_mib_per_s: stream_report.mib_per_s,
        stream_msgs_per_s: stream_report.msgs_per_s,
        small: SmallLoad {
            connections: small.connections,
            size: small.sizes.min,
            rate_per_s: small.rate.unwrap_or(0.0),
        },
        stream: StreamLoad { size: stream.sizes.min, pipeline: stream.pipeline },
        valid: warnings.is_empty(),
        warnings,
        runs: FairnessRuns { alone, beside_stream: beside, stream: stream_report },
    })
}
