//! `--compare`: the same scenarios against every server, side by side. The top layer: it
//! starts the servers ([`crate::server`]), puts each scenario's load on them
//! ([`mod@crate::run`]), folds the rounds into [`crate::results`], and hands those to the
//! table ([`crate::report`]) and the chart ([`crate::chart`]).
//!
//! With `--pin`, every server runs on CPU 0 and the load generator on CPU 1: each side
//! gets one whole core, and the numbers say what one core of server does. (So a server
//! with two worker threads then shares one core between them; without `--pin` it may use
//! both, but then competes with the load generator.) `--pin CPUS` puts the generator's
//! threads on those CPUs instead.
//!
//! Before the first cell, every server is started once and stopped ([`server::preflight`]),
//! so that a command that cannot run fails at once. Each cell then prints one line on
//! stderr as it ends, terminal or not, so a long comparison shows where it is in a log too.

use std::cmp::Ordering;
use std::io;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Instant;

use crate::error::Error;
use crate::findmax::{self, FindMaxReport, Slo};
use crate::framing::Framing;
use crate::progress::Progress;
use crate::report::{self, JsonTarget};
use crate::results::{CompareReport, IdleMemory, Machine, Outcome, RunResult, Settings};
use crate::run::{self, Load};
use crate::scenario::{Scenario, Shape};
use crate::server::{self, ServerProcess, ServerSpec};
use crate::target::Target;
use crate::{chart, fairness, sys};

/// `--compare` settings.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The servers to start, in table order.
    pub servers: Vec<ServerSpec>,
    /// The scenarios to run on each.
    pub scenarios: Vec<Scenario>,
    /// Warm-up per echo scenario.
    pub warmup: Duration,
    /// Measured time per echo scenario.
    pub duration: Duration,
    /// Load-generator threads.
    pub threads: usize,
    /// Servers on CPU 0, the load generator on CPU 1 (or on `generator_pin`).
    pub pin: bool,
    /// `--pin CPUS`: the CPUs of the load generator's threads.
    pub generator_pin: Vec<usize>,
    /// How many times to run every cell (interleaved); each cell reports its median.
    pub rounds: usize,
    /// `--json`: on stdout instead of the table, or to a file as well.
    pub json: JsonTarget,
    /// `--svg PATH`.
    pub svg: Option<PathBuf>,
    /// Two servers the table sets against each other, when both run.
    pub ratio: Option<(String, String)>,
    /// `--find-max`: search each server's highest sustainable rate in each scenario,
    /// against this SLO, instead of measuring a closed loop.
    pub find_max: Option<Slo>,
}

/// How long the idle scenario holds its connections after measuring, to see that none is
/// dropped.
const IDLE_HOLD: Duration = Duration::from_millis(300);
/// How long the server gets to finish accepting before its memory is read.
const IDLE_SETTLE: Duration = Duration::from_millis(200);

/// Run the comparison and print the table (or JSON); `Err` if any run had problems.
pub fn run(options: &CompareOptions) -> Result<(), Error> {
    let plan = interleaved_plan(options);
    if plan.is_empty() {
        return Err(Error::Usage("--models and --scenarios leave nothing to run".into()));
    }
    let fd_limit = sys::raise_nofile_limit()?;
    // Counted before pinning: afterwards this process may run on one CPU only.
    let cpus = sys::usable_cpus();
    if options.pin && options.generator_pin.is_empty() {
        pin_load_generator()?;
    }
    let progress = Progress::on_terminal();
    server::preflight(&options.servers, options.pin, |line| progress.warn(line))?;
    progress.runs(plan.len() as u64);
    let mut rounds = Vec::with_capacity(plan.len());
    let total = plan.len();
    for (i, (server, scenario)) in plan.into_iter().enumerate() {
        progress.next_run(format!("{} · {}", server.name, scenario.name()));
        let started = Instant::now();
        let result = run_one(options, server, scenario, fd_limit);
        let took = started.elapsed().as_secs_f64();
        progress.warn(&format!("[{}/{total}] {}  ({took:.1}s)", i + 1, report::cell_line(&result)));
        rounds.push(result);
    }
    progress.finish();
    let report = CompareReport {
        machine: Machine { cpus, cpu_model: sys::cpu_model(), kernel: sys::kernel_release() },
        settings: settings(options),
        runs: medians(rounds),
        ratio: options.ratio.clone(),
    };
    emit(&report, options)?;
    verdict(&report)
}

fn settings(options: &CompareOptions) -> Settings {
    Settings {
        warmup_s: options.warmup.as_secs_f64(),
        duration_s: options.duration.as_secs_f64(),
        threads: options.threads,
        pinned: options.pin,
        rounds: options.rounds,
        find_max: options.find_max,
    }
}

/// The chart when asked, then the table on stdout (or JSON with a bare `--json`) and the
/// JSON file when asked.
fn emit(report: &CompareReport, options: &CompareOptions) -> io::Result<()> {
    if let Some(path) = &options.svg {
        chart::draw(report, path)?;
    }
    report::emit(report, &options.json, report::table(report))
}

/// Warn about saturated runs; fail if any run had problems (the table has listed them).
fn verdict(report: &CompareReport) -> Result<(), Error> {
    let bound = report.runs.iter().filter(|r| r.outcome.client_bound()).count();
    if bound > 0 {
        eprintln!(
            "warning: in {bound} runs (‡) the load generator may have set the pace (a thread of it at ≥ 95% of a \
             CPU, or behind its schedule): those servers may be faster than shown"
        );
    }
    let troubled = report.runs.iter().filter(|r| !r.is_clean()).count();
    if troubled > 0 {
        let total = report.runs.len();
        return Err(
            io::Error::other(format!("{troubled} of {total} runs had problems (see ⚠ Problems)")).into()
        );
    }
    Ok(())
}

/// Pin this process to CPU 1 (the servers go to CPU 0).
fn pin_load_generator() -> io::Result<()> {
    if sys::usable_cpus() < 2 {
        return Err(io::Error::other(
            "--pin needs at least 2 CPUs (server on CPU 0, load generator on CPU 1)",
        ));
    }
    sys::pin_current_thread(1).map_err(|e| io::Error::new(e.kind(), format!("pinning to CPU 1: {e}")))
}

/// The order of the runs: scenario by scenario, each server in turn, round after round
/// (A B C A B C). The machine's speed drifts (other processes, CPU frequency, the host of a
/// VM); interleaving spreads that drift over every server instead of charging it to
/// whichever server happened to run during it. A server limited to fewer connections than
/// a scenario opens skips that scenario, and so does one of the other transport.
fn interleaved_plan(options: &CompareOptions) -> Vec<(&ServerSpec, Scenario)> {
    let one_round: Vec<(&ServerSpec, Scenario)> = options
        .scenarios
        .iter()
        .flat_map(|&s| {
            let runs = move |v: &&ServerSpec| v.transport == s.transport() && v.can_serve(s.connections());
            options.servers.iter().filter(runs).map(move |v| (v, s))
        })
        .collect();
    one_round.iter().copied().cycle().take(one_round.len() * options.rounds.max(1)).collect()
}

/// Fold the rounds of each (server, scenario) into one result: the median round's numbers
/// (by msgs/s, or by bytes per idle connection), every round's headline number, the
/// highest peak RSS and every problem. A cell with any failed round shows the failure.
fn medians(rounds: Vec<RunResult>) -> Vec<RunResult> {
    let mut cells: Vec<Vec<RunResult>> = Vec::new();
    for round in rounds {
        match cells.iter_mut().find(|c| c[0].model == round.model && c[0].scenario == round.scenario) {
            Some(cell) => cell.push(round),
            None => cells.push(vec![round]),
        }
    }
    cells.into_iter().map(median_of).collect()
}

fn median_of(mut cell: Vec<RunResult>) -> RunResult {
    let values: Vec<Option<f64>> = cell.iter().map(|r| r.outcome.headline()).collect();
    let peak = cell.iter().filter_map(|r| r.server_peak_rss).max();
    let problems: Vec<String> = cell.iter().flat_map(|r| r.problems.iter().cloned()).collect();
    let chosen = match cell.iter().position(|r| r.outcome.headline().is_none()) {
        Some(failed) => cell.swap_remove(failed),
        None => {
            cell.sort_by(|a, b| {
                a.outcome.headline().partial_cmp(&b.outcome.headline()).unwrap_or(Ordering::Equal)
            });
            let middle = cell.len() / 2;
            cell.swap_remove(middle)
        }
    };
    RunResult { rounds: values, server_peak_rss: peak, problems, ..chosen }
}

/// One fresh server, one scenario, then stop the server.
fn run_one(options: &CompareOptions, spec: &ServerSpec, scenario: Scenario, fd_limit: u64) -> RunResult {
    let mut result = RunResult {
        model: spec.name.clone(),
        scenario,
        outcome: failed("not run"),
        rounds: vec![],
        server_peak_rss: None,
        problems: vec![],
    };
    let server = match ServerProcess::start(spec, options.pin) {
        Ok(server) => server,
        Err(e) => {
            result.problems.push(format!("server did not start: {e}"));
            result.outcome = failed(e);
            return result;
        }
    };
    let (outcome, peak) = while_sampling_memory(&server, || {
        measure(options, &server, scenario, fd_limit, &mut result.problems).unwrap_or_else(failed)
    });
    result.outcome = outcome;
    result.server_peak_rss = peak.into_iter().chain(server.memory().map(|m| m.peak)).max();
    result.problems.extend(problems_of(&result.outcome));
    if let Err(problem) = server.stop() {
        result.problems.push(problem);
    }
    result
}

/// How often a server's memory is read while it runs: a forking server's processes come
/// and go with the connections, and the kernel keeps no peak for a group of processes.
const MEMORY_SAMPLE: Duration = Duration::from_millis(250);

/// Run `work` while a thread reads the server's memory every [`MEMORY_SAMPLE`]; the most
/// it saw.
fn while_sampling_memory<T>(server: &ServerProcess, work: impl FnOnce() -> T) -> (T, Option<u64>) {
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = None;
            while !done.load(AtomicOrdering::Relaxed) {
                peak = peak.max(server.memory().map(|m| m.peak));
                thread::sleep(MEMORY_SAMPLE);
            }
            peak
        });
        let value = work();
        done.store(true, AtomicOrdering::Relaxed);
        (value, sampler.join().ok().flatten())
    })
}

/// Put `scenario`'s load on a running server.
fn measure(
    options: &CompareOptions,
    server: &ServerProcess,
    scenario: Scenario,
    fd_limit: u64,
    problems: &mut Vec<String>,
) -> io::Result<Outcome> {
    let target = Target::Tcp(server.addr());
    let watch = Some(server.pid());
    match scenario.shape() {
        Shape::Echo { connections, size, pipeline, spin } => {
            let load = Load { spin, ..scenario_load(options, connections, size, pipeline) };
            match options.find_max {
                Some(slo) => search(&target, &load, watch, slo).map(|r| Outcome::FindMax(Box::new(r))),
                None => run::run_echo(&target, &load, watch, &Progress::hidden()).map(Outcome::Echo),
            }
        }
        Shape::Churn { connections, size } => {
            let load = scenario_load(options, connections, size, 1);
            run::run_churn(&target, &load, watch, &Progress::hidden()).map(Outcome::Churn)
        }
        Shape::Idle { connections } => {
            // Leave room for the load generator's own descriptors under the limit.
            let count = connections.min(fd_limit.saturating_sub(sys::RESERVED_DESCRIPTORS) as usize);
            if count < connections {
                problems.push(format!(
                    "holding {count} connections, not {connections}: RLIMIT_NOFILE is {fd_limit}"
                ));
            }
            measure_idle(server, &target, count).map(Outcome::Idle)
        }
        Shape::Udp { sockets, size, pipeline, train } => {
            let load = scenario_load(options, sockets, size, pipeline);
            run::run_udp(server.addr(), &load, train, watch, &Progress::hidden())
                .map(|report| Outcome::Echo(report.as_echo()))
        }
        Shape::Fairness { connections, size, rate, stream_size, stream_pipeline } => {
            let small = Load { rate: Some(rate), ..scenario_load(options, connections, size, 1) };
            let stream = scenario_load(options, 1, stream_size, stream_pipeline);
            fairness::measure(&target, &small, &stream, watch).map(|r| Outcome::Fairness(Box::new(r)))
        }
    }
}

/// `--find-max` in one scenario: the search, each step on `load` at the rate asked.
fn search(target: &Target, load: &Load, watch: Option<u32>, slo: Slo) -> io::Result<FindMaxReport> {
    let measure = |rate: Option<f64>| {
        let step = Load { rate, ..load.clone() };
        run::run_echo(target, &step, watch, &Progress::hidden())
    };
    let (steps, last) = findmax::search(slo, None, measure, |_| {})?;
    Ok(FindMaxReport::new(target.to_string(), slo, &last, steps))
}

/// A closed-loop load of the comparison's timing.
fn scenario_load(options: &CompareOptions, connections: usize, size: usize, pipeline: usize) -> Load {
    Load {
        warmup: options.warmup,
        duration: options.duration,
        threads: options.threads,
        pin: options.generator_pin.clone(),
        ..Load::closed(connections, size, pipeline)
    }
}

fn failed(error: impl ToString) -> Outcome {
    Outcome::Failed { error: error.to_string() }
}

/// The idle scenario: server RSS before, connect and hold `count`, server RSS after.
fn measure_idle(server: &ServerProcess, target: &Target, count: usize) -> io::Result<IdleMemory> {
    let gone = || io::Error::other("the server exited");
    let before = server.memory().ok_or_else(gone)?;
    let set =
        run::open_idle(target, count, Framing::Raw, None, run::DEFAULT_CONNECT_TIMEOUT, &Progress::hidden())?;
    thread::sleep(IDLE_SETTLE);
    let held_memory = server.memory().ok_or_else(gone)?;
    let held_at_measurement = set.held();
    let connections = set.hold(IDLE_HOLD)?;
    let growth = held_memory.rss.saturating_sub(before.rss) as f64;
    Ok(IdleMemory {
        rss_before: before.rss,
        rss_held: held_memory.rss,
        bytes_per_connection: (held_at_measurement > 0).then(|| growth / held_at_measurement as f64),
        connections,
    })
}

/// The problems a reader must see next to a run's numbers.
fn problems_of(outcome: &Outcome) -> Vec<String> {
    match outcome {
        Outcome::Echo(r) if !r.is_clean() => vec![report::echo_problems(r)],
        Outcome::Churn(r) if !r.is_clean() => vec![report::churn_problems(r)],
        Outcome::Idle(m) if !m.connections.is_clean() => vec![report::idle_problems(&m.connections)],
        Outcome::Fairness(f) => f.problems().into_iter().collect(),
        Outcome::FindMax(m) => m.problems().into_iter().collect(),
        Outcome::Failed { error } => vec![error.clone()],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::fixtures::{cell, echo};

    fn options(servers: &[ServerSpec], scenarios: &[Scenario], rounds: usize) -> CompareOptions {
        CompareOptions {
            servers: servers.to_vec(),
            scenarios: scenarios.to_vec(),
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            threads: 1,
            pin: false,
            generator_pin: vec![],
            rounds,
            json: None,
            svg: None,
            ratio: None,
            find_max: None,
        }
    }

    #[test]
    fn rounds_run_interleaved_and_limited_servers_skip_big_loads() {
        let a = ServerSpec::new("a", ["{addr}"]);
        let b = ServerSpec::new("b", ["{addr}"]).serving_at_most(1);
        let (l, m) = (Scenario::Latency, Scenario::Many);
        let options = options(&[a, b], &[l, m], 2);
        let plan: Vec<(&str, Scenario)> =
            interleaved_plan(&options).into_iter().map(|(s, sc)| (s.name.as_str(), sc)).collect();
        assert_eq!(plan, [("a", l), ("b", l), ("a", m), ("a", l), ("b", l), ("a", m)]);
    }

    #[test]
    fn nothing_to_run_is_a_usage_error() {
        let only_one = ServerSpec::new("one", ["{addr}"]).serving_at_most(1);
        let error = run(&options(&[only_one], &[Scenario::Many], 1)).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
    }

    #[test]
    fn each_cell_reports_its_median_round() {
        let many = Scenario::Many;
        let rounds = vec![
            cell("event-loop", many, echo(300.0, 1.0, false, 0), &[]),
            cell("thread-per-conn", many, echo(50.0, 1.0, false, 0), &[]),
            cell("event-loop", many, echo(100.0, 2.0, false, 0), &[]),
            cell("thread-per-conn", many, Outcome::Failed { error: "gone".into() }, &["gone"]),
            cell("event-loop", many, echo(200.0, 3.0, false, 0), &[]),
            cell("thread-per-conn", many, echo(60.0, 1.0, false, 0), &[]),
        ];
        let cells = medians(rounds);
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].rounds, [Some(300.0), Some(100.0), Some(200.0)]);
        assert!(
            matches!(&cells[0].outcome, Outcome::Echo(e) if e.msgs_per_s == 200.0 && e.latency.p99_us == 3.0)
        );
        assert!(cells[0].is_clean());
        // A failed round is shown, not hidden behind the median of the others.
        assert!(matches!(cells[1].outcome, Outcome::Failed { .. }));
        assert_eq!(cells[1].problems, ["gone"]);
    }
}
