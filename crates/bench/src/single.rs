//! `echoloop bench [ADDR]` without `--compare`: load one server that is already running,
//! on this machine or another, report, and turn errors or corruption into a failed run. A
//! host name is resolved once, before the first connection; reports and errors name it
//! beside the address it resolved to.

use std::io::{self, IsTerminal};
use std::path::PathBuf;

use crate::ceiling::Ceiling;
use crate::chart;
use crate::crowd;
use crate::error::Error;
use crate::findmax::{self, FindMaxReport, Slo, Step};
use crate::intervals::{IntervalLog, IntervalOptions};
use crate::progress::Progress;
use crate::report::{self, JsonTarget};
use crate::run::{self, ChaosOptions, Load};
use crate::source::{self, Sources};
use crate::sys;
use crate::target::{Address, Target};

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
    /// The server, as given: any host, or a Unix socket.
    pub address: Address,
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
    /// `--interval`, `--hdr-log`, `--csv`.
    pub intervals: Option<IntervalOptions>,
    /// `--find-max`: the SLO to search against.
    pub find_max: Option<Slo>,
    /// `--svg PATH` (with `--find-max`).
    pub svg: Option<PathBuf>,
    /// `--source`: the local addresses TCP connections come from, in turn.
    pub sources: Option<Sources>,
    /// `--active N` (idle mode): connections that echo beside the idle ones.
    pub active: usize,
}

/// Check the request, run it, report; `Err` after a report means the run found problems.
pub fn run(options: &SingleOptions) -> Result<(), Error> {
    options.load.validate().map_err(Error::Usage)?;
    check_combinations(options)?;
    let target = options.address.resolve(options.load.connect_timeout)?;
    // A name is kept beside the address it resolved to, in reports and errors alike.
    let named = |e: Error| match (e, options.address.name()) {
        (Error::Run(e), Some(_)) if !e.to_string().contains(&options.address.to_string()) => {
            Error::Run(io::Error::new(e.kind(), format!("{}: {e}", options.address)))
        }
        (e, _) => e,
    };
    let progress = Progress::on_terminal();
    let result = match target {
        Target::Udp(addr) => udp(addr, options, &progress),
        _ if options.find_max.is_some() => find_max(&target, options, &progress),
        _ => {
            install_sources(options, &target)?;
            sys::require_descriptors(needed_descriptors(options))?;
            let ceiling = Ceiling::now(&target, needed_descriptors(options));
            if ceiling.too_low() && options.mode != Mode::Idle {
                progress.warn(&format!("warning: {ceiling}")); // the idle report says it anyway
            }
            match options.mode {
                Mode::Echo => echo(&target, options, &progress),
                Mode::Idle => idle(&target, options, &progress),
                Mode::Churn => churn(&target, options, &progress),
                Mode::Chaos => chaos(&target, options, &progress),
            }
        }
    };
    result.map_err(named)
}

/// Flags that do not go together with this target or mode.
fn check_combinations(options: &SingleOptions) -> Result<(), Error> {
    let udp = matches!(options.address, Address::Udp(_));
    if udp && options.mode != Mode::Echo {
        return Err(Error::Usage("a udp: target takes --mode echo only".into()));
    }
    if options.intervals.is_some() && (udp || options.mode != Mode::Echo) {
        return Err(Error::Usage(
            "--interval, --hdr-log and --csv are for --mode echo over TCP or Unix sockets".into(),
        ));
    }
    if options.find_max.is_some() && udp {
        return Err(Error::Usage("--find-max is for TCP or Unix sockets".into()));
    }
    Ok(())
}

/// The name given, beside the address it resolved to: `localhost:7878 (127.0.0.1:7878)`.
fn describe(options: &SingleOptions, target: &Target) -> String {
    match options.address.name() {
        Some(_) => format!("{} ({target})", options.address),
        None => target.to_string(),
    }
}

/// Descriptors the run holds at once: its connections, and in chaos the hostile ones.
fn needed_descriptors(options: &SingleOptions) -> usize {
    let hostile = if options.mode == Mode::Chaos { 6 * options.chaos.hostile } else { 0 };
    options.load.connections + hostile
}

fn echo(target: &Target, options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    // Live lines only where someone watches: on a terminal.
    let live =
        |i: &IntervalOptions| IntervalOptions { live: i.live && io::stderr().is_terminal(), ..i.clone() };
    let mut log = options.intervals.as_ref().map(|i| IntervalLog::create(&live(i))).transpose()?;
    let mut report =
        run::run_echo_logged(target, &options.load, options.chaos.server_pid, progress, log.as_mut())?;
    report.target = describe(options, target);
    warn_all(progress, &report.warnings);
    report::emit(&report, &options.json, report::echo_text(&report))?;
    outcome(report.is_clean(), || report::echo_problems(&report))
}

fn find_max(target: &Target, options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let slo = options.find_max.ok_or_else(|| Error::Usage("--find-max needs --slo".into()))?;
    sys::require_descriptors(options.load.connections)?;
    let json_on_stdout = matches!(options.json, Some(None));
    let measure = |rate: Option<f64>| {
        let step = Load { rate, ..options.load.clone() };
        run::run_echo(target, &step, options.chaos.server_pid, &Progress::hidden())
    };
    // Each step's line as it is judged: on stdout with the text report, on stderr when
    // stdout carries the JSON.
    let say = |step: &Step| {
        let line = report::step_line(step, slo);
        if json_on_stdout {
            progress.warn(&line);
        } else {
            println!("{line}");
        }
    };
    let (steps, last) = findmax::search(slo, options.load.rate, measure, say)?;
    let report = FindMaxReport::new(describe(options, target), slo, &last, steps);
    warn_all(progress, &report.warnings);
    if let Some(path) = &options.svg {
        chart::draw_findmax(&report, path)?;
    }
    report::emit(&report, &options.json, report::findmax_text(&report))?;
    match report.problems() {
        Some(problems) => Err(io::Error::other(problems).into()),
        None => Ok(()),
    }
}

fn idle(target: &Target, options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let (load, pid) = (&options.load, options.chaos.server_pid);
    let mut report = crowd::run(target, load.connections, options.active, load, pid, progress)?;
    report.idle.target = describe(options, target);
    report::emit(&report, &options.json, crowd::text(&report))?;
    outcome(report.is_clean(), || report.problems())
}

/// `--source`: connect from these addresses, for the whole run (TCP targets only).
fn install_sources(options: &SingleOptions, target: &Target) -> Result<(), Error> {
    let Some(sources) = &options.sources else { return Ok(()) };
    let Target::Tcp(addr) = target else {
        return Err(Error::Usage(format!("--source is for TCP targets, not {target}")));
    };
    sources.check_family(*addr).map_err(Error::Usage)?;
    source::install(sources.clone()).map_err(Error::Usage)
}

fn churn(target: &Target, options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let mut report = run::run_churn(target, &options.load, options.chaos.server_pid, progress)?;
    report.target = describe(options, target);
    warn_all(progress, &report.warnings);
    report::emit(&report, &options.json, report::churn_text(&report))?;
    outcome(report.is_clean(), || report::churn_problems(&report))
}

fn chaos(target: &Target, options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let report = run::run_chaos(target, &options.load, &options.chaos, progress)?;
    if report.server.pid.is_none() {
        progress
            .warn(&format!("warning: the server's memory and descriptors are {}", report.server.found_by));
    }
    report::emit(&report, &options.json, report::chaos_text(&report))?;
    outcome(report.passed(), || format!("chaos verdict: {}", report.problems.join("; ")))
}

fn udp(addr: std::net::SocketAddr, options: &SingleOptions, progress: &Progress) -> Result<(), Error> {
    let mut report = run::run_udp(addr, &options.load, options.train, options.chaos.server_pid, progress)?;
    if options.address.name().is_some() {
        report.target = format!("{} ({})", options.address, report.target);
    }
    warn_all(progress, &report.warnings);
    report::emit(&report, &options.json, report::udp_text(&report))?;
    outcome(report.is_clean(), || report::udp_problems(&report))
}

/// Each warning on its own line on stderr.
fn warn_all(progress: &Progress, warnings: &[String]) {
    for warning in warnings {
        progress.warn(&format!("warning: {warning}"));
    }
}

/// The run's verdict: the report is out; errors or corruption make the exit code non-zero.
fn outcome(clean: bool, problems: impl FnOnce() -> String) -> Result<(), Error> {
    if clean { Ok(()) } else { Err(io::Error::other(problems()).into()) }
}
