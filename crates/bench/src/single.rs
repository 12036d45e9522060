//! `echoloop bench [ADDR]` without `--compare`: load one server that is already running,
//! report, and turn errors or corruption into a failed run.

use std::io;

use crate::error::Error;
use crate::progress::Progress;
use crate::report::{self, JsonTarget};
use crate::run::{self, Load};
use crate::sys;
use crate::target::Target;

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Echo messages and measure throughput and latency.
    Echo,
    /// Open the connections, hold them, and report how many succeeded (for
    /// memory-per-connection studies).
    Idle,
}

/// A single run's settings.
#[derive(Debug, Clone)]
pub struct SingleOptions {
    /// The server; loopback or a Unix socket only.
    pub target: Target,
    /// Echo messages, or just hold connections.
    pub mode: Mode,
    /// The load (in idle mode: `connections`, and `duration` as the holding time).
    pub load: Load,
    /// Where JSON goes, if anywhere.
    pub json: JsonTarget,
}

/// Check the request, run it, report; `Err` after a report means the run found problems.
pub fn run(options: &SingleOptions) -> Result<(), Error> {
    if !options.target.is_local() {
        // Our network rule, and good manners: load goes only to this machine.
        return Err(Error::Usage(format!(
            "bench: {} is not a loopback address; the load generator only targets this machine \
             (127.0.0.1, [::1] or unix:PATH)",
            options.target
        )));
    }
    options.load.validate().map_err(Error::Usage)?;
    sys::require_descriptors(options.load.connections)?;
    let progress = Progress::on_terminal();
    match options.mode {
        Mode::Echo => echo(options, &progress),
        Mode::Idle => idle(options, &progress),
    }
}

fn echo(options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let report = run::run_echo(&options.target, &options.load, None, progress)?;
    if report.client_bound {
        progress.warn(report::CLIENT_BOUND_WARNING);
    }
    report::emit(&report, &options.json, report::echo_text(&report))?;
    outcome(report.is_clean(), || report::echo_problems(&report))
}

fn idle(options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let set = run::open_idle(&options.target, options.load.connections, progress)?;
    progress.finish();
    eprintln!("holding {} connections for {:.1}s", set.held(), options.load.duration.as_secs_f64());
    let report = set.hold(options.load.duration)?;
    report::emit(&report, &options.json, report::idle_text(&report))?;
    outcome(report.is_clean(), || report::idle_problems(&report))
}

/// The run's verdict: the report is out; errors or corruption make the exit code non-zero.
fn outcome(clean: bool, problems: impl FnOnce() -> String) -> Result<(), Error> {
    if clean { Ok(()) } else { Err(io::Error::other(problems()).into()) }
}
