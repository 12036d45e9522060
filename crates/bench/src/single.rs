//! `echoloop bench [ADDR]` without `--compare`: load one server that is already running,
//! report, and turn errors or corruption into a failed run.

use std::io;

use crate::error::Error;
use crate::progress::Progress;
use crate::report::{self, JsonTarget};
use crate::run::{self, ChaosOptions, Load};
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
    /// Connect, echo one message, close; again and again.
    Churn,
    /// Echo clients beside hostile ones; the server's memory and descriptors watched.
    Chaos,
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
    /// `--mode chaos`: the hostile clients, and the server's PID (also used for its CPU).
    pub chaos: ChaosOptions,
    /// Where JSON goes, if anywhere.
    pub json: JsonTarget,
    /// UDP, closed loop: datagrams per train (`--train`; 1 when not given).
    pub train: usize,
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
    let progress = Progress::on_terminal();
    if let Target::Udp(addr) = options.target {
        if options.mode != Mode::Echo {
            return Err(Error::Usage("a udp: target takes --mode echo only".into()));
        }
        return udp(addr, options, &progress);
    }
    sys::require_descriptors(needed_descriptors(options))?;
    match options.mode {
        Mode::Echo => echo(options, &progress),
        Mode::Idle => idle(options, &progress),
        Mode::Churn => churn(options, &progress),
        Mode::Chaos => chaos(options, &progress),
    }
}

/// Descriptors the run holds at once: its connections, and in chaos the hostile ones.
fn needed_descriptors(options: &SingleOptions) -> usize {
    let hostile = if options.mode == Mode::Chaos { 6 * options.chaos.hostile } else { 0 };
    options.load.connections + hostile
}

fn echo(options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let report = run::run_echo(&options.target, &options.load, options.chaos.server_pid, progress)?;
    warn_if(progress, report.cpu.client_bound, report::CLIENT_BOUND_WARNING);
    warn_if(progress, report.is_behind(), report::BEHIND_WARNING);
    report::emit(&report, &options.json, report::echo_text(&report))?;
    outcome(report.is_clean(), || report::echo_problems(&report))
}

fn idle(options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let set = run::open_idle(
        &options.target,
        options.load.connections,
        options.load.framing,
        options.load.connect_timeout,
        progress,
    )?;
    progress.finish();
    eprintln!("holding {} connections for {:.1}s", set.held(), options.load.duration.as_secs_f64());
    let report = set.hold(options.load.duration)?;
    report::emit(&report, &options.json, report::idle_text(&report))?;
    outcome(report.is_clean(), || report::idle_problems(&report))
}

fn churn(options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let report = run::run_churn(&options.target, &options.load, options.chaos.server_pid, progress)?;
    warn_if(progress, report.cpu.client_bound, report::CLIENT_BOUND_WARNING);
    warn_if(progress, report.is_behind(), report::BEHIND_WARNING);
    report::emit(&report, &options.json, report::churn_text(&report))?;
    outcome(report.is_clean(), || report::churn_problems(&report))
}

fn chaos(options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let report = run::run_chaos(&options.target, &options.load, &options.chaos, progress)?;
    if report.server.pid.is_none() {
        progress
            .warn(&format!("warning: the server's memory and descriptors are {}", report.server.found_by));
    }
    report::emit(&report, &options.json, report::chaos_text(&report))?;
    outcome(report.passed(), || format!("chaos verdict: {}", report.problems.join("; ")))
}

fn udp(addr: std::net::SocketAddr, options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let report = run::run_udp(addr, &options.load, options.train, options.chaos.server_pid, progress)?;
    warn_if(progress, report.cpu.client_bound, report::CLIENT_BOUND_WARNING);
    report::emit(&report, &options.json, report::udp_text(&report))?;
    outcome(report.is_clean(), || report::udp_problems(&report))
}

fn warn_if(progress: &Progress, condition: bool, warning: &str) {
    if condition {
        progress.warn(warning);
    }
}

/// The run's verdict: the report is out; errors or corruption make the exit code non-zero.
fn outcome(clean: bool, problems: impl FnOnce() -> String) -> Result<(), Error> {
    if clean { Ok(()) } else { Err(io::Error::other(problems()).into()) }
}
