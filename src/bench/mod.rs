//! `echoloop bench`: a verifying load generator, and `--compare`, which starts each I/O
//! model in turn and puts the same scenarios on each.
//!
//! The load generator is itself a mio event loop (one thread by default, `--threads` for
//! more): a generator built on a thread per connection would spend its CPU switching
//! between threads, and at 2000 connections it, not the server, would be measured.
//! The load it runs is written so that it costs as little as the server it measures: no
//! allocation or copy per message, one `write` and one `read` per round trip, and a
//! comparison against a fixed pattern to check every byte.
//!
//! - [`mod@run`]: connections, the event loop, verification, timing.
//! - [`pattern`]: the bytes sent, and the check of every byte echoed.
//! - [`histogram`]: round-trip times.
//! - [`report`]: what the user reads: text, JSON, the comparison table; [`chart`]: the SVG.
//! - [`compare`]: starting servers, the scenarios, server memory and CPU from `/proc`.
//! - [`sys`]: descriptor limits, CPU time and pinning, `/proc` reading.
//! - [`progress`]: the progress bar (on a terminal only).

pub mod chart;
pub mod compare;
pub mod histogram;
pub mod pattern;
pub mod progress;
pub mod report;
pub mod run;
pub mod sys;

use std::io::{self, ErrorKind};
use std::path::PathBuf;

pub use compare::{CompareOptions, Scenario, Variant};
pub use run::{EchoReport, IdleReport, Load};

use crate::addr::ListenAddr;
use progress::Progress;

/// What `echoloop bench` was asked to do.
#[derive(Debug, Clone)]
pub enum Task {
    /// Measure one server that is already running.
    Single(BenchOptions),
    /// Start each model and compare them.
    Compare(CompareOptions),
}

/// How a single run reports: JSON on stdout instead of text (`Some(None)`), JSON to a
/// file besides the text (`Some(Some(path))`), or text only (`None`).
pub type JsonTarget = Option<Option<PathBuf>>;

/// `echoloop bench [ADDR]` without `--compare`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The server; loopback or a Unix socket only.
    pub target: ListenAddr,
    /// Echo messages, or just hold connections.
    pub mode: Mode,
    /// The load (in idle mode: `connections`, and `duration` as the holding time).
    pub load: Load,
    /// Where JSON goes, if anywhere.
    pub json: JsonTarget,
}

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep `pipeline` messages in flight on each connection.
    Echo,
    /// Open the connections, hold them, report how many succeeded.
    Idle,
}

/// Run the task; an `Err` after a report means the run found errors or corruption.
pub fn run(task: &Task) -> io::Result<()> {
    match task {
        Task::Single(options) => single(options),
        Task::Compare(options) => compare::run(options),
    }
}

fn single(options: &BenchOptions) -> io::Result<()> {
    require_local(&options.target)?;
    options.load.validate().map_err(|msg| io::Error::new(ErrorKind::InvalidInput, msg))?;
    require_descriptors(options.load.connections)?;
    let progress = Progress::on_terminal();
    match options.mode {
        Mode::Echo => {
            let report = run::run_echo(&options.target, &options.load, None, &progress)?;
            if report.client_bound {
                progress.warn(report::CLIENT_BOUND_WARNING);
            }
            report::emit(&report, &options.json, report::echo_text(&report))?;
            outcome(report.is_clean(), || report::echo_problems(&report))
        }
        Mode::Idle => {
            let set = run::open_idle(&options.target, options.load.connections, &progress)?;
            progress.finish();
            eprintln!("holding {} connections for {:.1}s", set.held(), options.load.duration.as_secs_f64());
            let report = set.hold(options.load.duration)?;
            report::emit(&report, &options.json, report::idle_text(&report))?;
            outcome(report.is_clean(), || report::idle_problems(&report))
        }
    }
}

/// Our network rule, and good manners: load goes only to this machine.
pub fn require_local(target: &ListenAddr) -> io::Result<()> {
    match target {
        ListenAddr::Tcp(addr) if !addr.ip().is_loopback() => Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "bench: {addr} is not a loopback address; the load generator only targets this machine \
                 (127.0.0.1, [::1] or unix:PATH)"
            ),
        )),
        _ => Ok(()),
    }
}

/// Raise the descriptor limit, and refuse at once if `connections` cannot fit under it.
fn require_descriptors(connections: usize) -> io::Result<()> {
    let limit = sys::raise_nofile_limit()?;
    let needed = connections as u64 + RESERVED_DESCRIPTORS;
    if needed > limit {
        return Err(io::Error::other(format!(
            "--connections {connections} needs about {needed} file descriptors, but the limit is {limit} \
             (raise the hard limit: ulimit -Hn)"
        )));
    }
    Ok(())
}

/// Descriptors kept for everything but connections: stdio, epoll, wakers, files.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The run's verdict: the report is out; errors or corruption make the exit code non-zero.
fn outcome(clean: bool, problems: impl FnOnce() -> String) -> io::Result<()> {
    if clean { Ok(()) } else { Err(io::Error::other(problems())) }
}
