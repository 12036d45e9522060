//! `--mode chaos`: well-behaved clients beside hostile ones, and the server watched.
//!
//! 1. The server's resident memory (VmRSS) and open descriptors are read from `/proc`
//!    (`--server-pid`, or the process found listening on the address).
//! 2. **Calm**: the well-behaved clients alone (`--connections`, `--size`, `--pipeline`,
//!    every byte verified) for half of `--duration` (at least 0.5 s), for a p99 to compare.
//! 3. **Chaos**: the same clients again for `--duration`, with `--hostile N` clients of each
//!    hostile kind beside them ([`super::hostile`]); the server is sampled every 50 ms for
//!    its peak.
//! 4. **After**: every client gone, the server gets up to [`SETTLE_LIMIT`] to give back what
//!    it took. It has *come back* when its descriptors are at most [`FD_TOLERANCE`] above
//!    where they started, and its RSS at most `max(8 MiB, 10%)` above (an allocator keeps
//!    some freed memory for reuse; a leak per hostile connection, thousands of them, shows
//!    well beyond that).
//!
//! The verdict fails when a well-behaved client (or a hostile one that checks its echo) lost
//! or got a wrong byte, or the server did not come back.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::hostile::{self, HostileReport};
use super::{EchoReport, Load, run_echo};
use crate::procfs;
use crate::progress::Progress;
use crate::sys;
use crate::target::Target;

/// Descriptors a server may hold above its start once the chaos is over.
const FD_TOLERANCE: u64 = 2;
/// RSS a server may hold above its start once the chaos is over: this, or 10% of the
/// start, whichever is more.
const RSS_TOLERANCE: u64 = 8 << 20;
/// How long the server gets to come back.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);
/// How often the server is sampled during the chaos, and while it settles.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The calm run is at least this long.
const MIN_CALM: Duration = Duration::from_millis(500);

/// `--mode chaos` settings beyond the well-behaved load.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Clients of each hostile kind.
    pub hostile: usize,
    /// The server's PID, when given (else it is looked for).
    pub server_pid: Option<u32>,
}

/// What a chaos run saw.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// The server's address.
    pub target: String,
    /// The well-behaved clients alone.
    pub calm: EchoReport,
    /// The same clients among the hostile ones.
    pub chaos: EchoReport,
    /// Chaos p99 over calm p99 (`None` if the calm run measured nothing).
    pub p99_ratio: Option<f64>,
    /// What each hostile kind did.
    pub hostile: Vec<HostileReport>,
    /// What the server did, when it could be watched.
    pub server: ServerWatch,
    /// Why the verdict failed; empty when it passed.
    pub problems: Vec<String>,
}

impl ChaosReport {
    /// The verdict: nothing lost or wrong, and the server came back.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The server's resources across the run.
#[derive(Debug, Clone, Serialize)]
pub struct ServerWatch {
    /// The process watched, when known.
    pub pid: Option<u32>,
    /// How it was found (`--server-pid`, or the listener lookup), or why it was not.
    pub found_by: String,
    /// Resident memory, bytes.
    pub rss: Option<Span>,
    /// Open descriptors.
    pub fds: Option<Span>,
    /// Both were back within tolerance after the chaos (`None` when not watched).
    pub came_back: Option<bool>,
    /// Seconds it took to come back (or the whole settle limit, if it did not).
    pub settle_s: f64,
}

/// A resource before, at its peak during, and after the chaos.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Span {
    /// Before the calm run.
    pub before: u64,
    /// The most seen during the chaos.
    pub peak: u64,
    /// After the settle.
    pub after: u64,
}

/// One reading of the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss: u64,
    fds: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    Some(Sample { rss: sys::process_memory(pid)?.rss, fds: sys::open_descriptors(pid)? })
}

/// Run the calm and the chaos, watch the server, and judge.
pub fn run_chaos(
    target: &Target,
    load: &Load,
    options: &ChaosOptions,
    progress: &Progress,
) -> io::Result<ChaosReport> {
    let (pid, found_by) = match options.server_pid {
        Some(pid) => (Some(pid), format!("--server-pid {pid}")),
        None => match procfs::find_listener(target) {
            Ok(pid) => (Some(pid), format!("the process listening on {target}")),
            Err(why) => (None, format!("not watched: {why}; name it with --server-pid")),
        },
    };
    let before = pid.and_then(sample);
    let calm_load = Load { duration: (load.duration / 2).max(MIN_CALM), ..load.clone() };
    let calm = run_echo(target, &calm_load, pid, &Progress::hidden())?;
    let until = Instant::now() + load.warmup + load.duration;
    let stop = AtomicBool::new(false);
    let (chaos, hostile, peak) = thread::scope(|scope| {
        let sampler = scope.spawn(|| peak_until(pid, &stop));
        let hostile = scope.spawn(|| hostile::unleash(target, options.hostile, until, load.connect_timeout));
        let chaos = run_echo(target, load, pid, progress);
        let hostile = hostile.join().unwrap_or_default();
        stop.store(true, Ordering::Relaxed);
        (chaos, hostile, sampler.join().ok().flatten())
    });
    let chaos = chaos?;
    let server = settle(pid, found_by, before, peak);
    let problems = problems(&calm, &chaos, &hostile, &server);
    let p99_ratio = (calm.latency.p99_us > 0.0).then(|| chaos.latency.p99_us / calm.latency.p99_us);
    Ok(ChaosReport { target: target.to_string(), calm, chaos, p99_ratio, hostile, server, problems })
}

/// Sample the server until `stop`; the most of each resource seen.
fn peak_until(pid: Option<u32>, stop: &AtomicBool) -> Option<Sample> {
    let pid = pid?;
    let mut peak: Option<Sample> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Some(now) = sample(pid) {
            let p = peak.get_or_insert(now);
            (p.rss, p.fds) = (p.rss.max(now.rss), p.fds.max(now.fds));
        }
        thread::sleep(SAMPLE_EVERY);
    }
    peak
}

/// Wait (bounded) for the server to come back; what it came back to.
fn settle(pid: Option<u32>, found_by: String, before: Option<Sample>, peak: Option<Sample>) -> ServerWatch {
    let unwatched =
        |found_by| ServerWatch { pid, found_by, rss: None, fds: None, came_back: None, settle_s: 0.0 };
    let (Some(id), Some(before)) = (pid, before) else { return unwatched(found_by) };
    let start = Instant::now();
    let mut after = sample(id);
    while !after.is_some_and(|a| came_back(before, a)) && start.elapsed() < SETTLE_LIMIT {
        thread::sleep(SAMPLE_EVERY);
        after = sample(id);
    }
    let Some(after) = after else { return unwatched(format!("{found_by}; it exited during the run")) };
    let peak = peak.unwrap_or(after);
    ServerWatch {
        pid,
        found_by,
        rss: Some(Span { before: before.rss, peak: peak.rss.max(after.rss), after: after.rss }),
        fds: Some(Span { before: before.fds, peak: peak.fds.max(after.fds), after: after.fds }),
        came_back: Some(came_back(before, after)),
        settle_s: start.elapsed().as_secs_f64(),
    }
}

/// Within tolerance of where it started (see the module docs).
fn came_back(before: Sample, after: Sample) -> bool {
    let rss_allowance = RSS_TOLERANCE.max(before.rss / 10);
    after.fds <= before.fds + FD_TOLERANCE && after.rss <= before.rss + rss_allowance
}

/// The verdict's reasons to fail, for the reader.
fn problems(
    calm: &EchoReport,
    chaos: &EchoReport,
    hostile: &[HostileReport],
    server: &ServerWatch,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (phase, run) in [("calm", calm), ("chaos", chaos)] {
        if !run.is_clean() {
            let first =
                run.first_error.as_deref().map(|e| format!(" (first error: {e})")).unwrap_or_default();
            problems.push(format!(
                "well-behaved clients, {phase}: {} connection errors, {} corrupted echoes{first}",
                run.errors, run.mismatches
            ));
        }
    }
    for h in hostile.iter().filter(|h| h.wrong_echoes > 0) {
        problems.push(format!("{:?} clients got {} wrong echoes", h.kind, h.wrong_echoes));
    }
    if server.came_back == Some(false) {
        let (fds, rss) = (server.fds.unwrap_or_default(), server.rss.unwrap_or_default());
        problems.push(format!(
            "the server did not come back within {}s: descriptors {} -> {} (tolerance +{FD_TOLERANCE}), RSS {} -> {} KiB",
            SETTLE_LIMIT.as_secs(),
            fds.before,
            fds.after,
            rss.before >> 10,
            rss.after >> 10
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coming_back_allows_a_little_slack() {
        let before = Sample { rss: 4 << 20, fds: 5 };
        assert!(came_back(before, Sample { rss: 12 << 20, fds: 7 }));
        assert!(!came_back(before, Sample { rss: 4 << 20, fds: 8 }), "descriptors leaked");
        assert!(!came_back(before, Sample { rss: 13 << 20, fds: 5 }), "memory kept");
        let big = Sample { rss: 1 << 30, fds: 5 };
        assert!(came_back(big, Sample { rss: (1 << 30) + (100 << 20), fds: 5 }), "10% of a big server");
    }
}
