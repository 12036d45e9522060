//! `echoloop bench --compare`: the same scenarios against every I/O model, side by side.
//!
//! Each (model, scenario) pair gets a fresh server: a child process of the `echoloop`
//! binary (`serve --model ... 127.0.0.1:0`), so its memory and CPU can be read from
//! `/proc/PID` apart from the load generator's, and so nothing one scenario left behind
//! (a grown slab, an allocator's cache, a thousand exited threads) shows up in the next.
//! The server is stopped with SIGTERM by its PID, and killed if it does not exit.
//!
//! With `--pin`, every server runs on CPU 0 and the load generator on CPU 1: each side
//! gets one whole core, and the numbers say what one core of server does. (So the
//! two-worker event loop then shares one core between its loops; without `--pin` it may
//! use both, but then competes with the load generator.)

use std::cmp::Ordering;
use std::io::{self, BufRead, BufReader, ErrorKind};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::progress::Progress;
use super::run::{self, EchoReport, IdleReport, Load};
use super::{JsonTarget, report, sys};
use crate::addr::ListenAddr;

/// The server variants `--compare` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// `--model event-loop`.
    EventLoop,
    /// `--model event-loop --workers 2`.
    EventLoopW2,
    /// `--model thread-per-conn`.
    ThreadPerConn,
    /// `--model blocking`; it serves one connection at a time, so only the 1-connection
    /// scenario means anything for it.
    Blocking,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 4] =
        [Variant::EventLoop, Variant::EventLoopW2, Variant::ThreadPerConn, Variant::Blocking];

    /// The name in `--models`, JSON and the table header.
    pub fn name(self) -> &'static str {
        match self {
            Variant::EventLoop => "event-loop",
            Variant::EventLoopW2 => "event-loop-w2",
            Variant::ThreadPerConn => "thread-per-conn",
            Variant::Blocking => "blocking",
        }
    }

    /// `echoloop serve` arguments that select it.
    fn serve_args(self) -> &'static [&'static str] {
        match self {
            Variant::EventLoop => &["--model", "event-loop"],
            Variant::EventLoopW2 => &["--model", "event-loop", "--workers", "2"],
            Variant::ThreadPerConn => &["--model", "thread-per-conn"],
            Variant::Blocking => &["--model", "blocking"],
        }
    }

    /// Whether this variant takes part in `scenario`.
    pub fn runs(self, scenario: Scenario) -> bool {
        self != Variant::Blocking || scenario == Scenario::Latency
    }
}

/// The comparison's scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1 connection, 64 B: the round trip itself (the load generator busy-polls).
    Latency,
    /// 100 connections, 128 B.
    SmallMany,
    /// 50 connections, 4 KiB, pipeline 4.
    Medium,
    /// 8 connections, 64 KiB.
    Bulk,
    /// 2000 connections, 128 B.
    Many,
    /// 10000 idle connections: server memory per connection.
    Idle,
}

/// What a scenario asks of the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Echo traffic.
    Echo {
        /// Connections.
        connections: usize,
        /// Bytes per message.
        size: usize,
        /// Messages in flight per connection.
        pipeline: usize,
        /// Busy-poll (for the latency scenario).
        spin: bool,
    },
    /// Held, silent connections.
    Idle {
        /// Connections.
        connections: usize,
    },
}

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Latency,
        Scenario::SmallMany,
        Scenario::Medium,
        Scenario::Bulk,
        Scenario::Many,
        Scenario::Idle,
    ];

    /// The name in `--scenarios` and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Latency => "latency",
            Scenario::SmallMany => "small-many",
            Scenario::Medium => "medium",
            Scenario::Bulk => "bulk",
            Scenario::Many => "many",
            Scenario::Idle => "idle",
        }
    }

    /// The load.
    pub fn shape(self) -> Shape {
        let echo = |connections, size, pipeline| Shape::Echo { connections, size, pipeline, spin: false };
        match self {
            Scenario::Latency => Shape::Echo { connections: 1, size: 64, pipeline: 1, spin: true },
            Scenario::SmallMany => echo(100, 128, 1),
            Scenario::Medium => echo(50, 4096, 4),
            Scenario::Bulk => echo(8, 65536, 1),
            Scenario::Many => echo(2000, 128, 1),
            Scenario::Idle => Shape::Idle { connections: 10_000 },
        }
    }

    /// The row label: "1 conn · 64 B".
    pub fn title(self) -> String {
        match self.shape() {
            Shape::Echo { connections, size, pipeline, .. } => {
                let conns =
                    if connections == 1 { "1 conn".to_string() } else { format!("{connections} conns") };
                let depth = if pipeline > 1 { format!(" · pipeline {pipeline}") } else { String::new() };
                format!("{conns} · {}{depth}", report::bytes(size as f64))
            }
            Shape::Idle { connections } => format!("{connections} idle conns: RSS per conn"),
        }
    }
}

/// `--compare` settings.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The variants to start, in order.
    pub variants: Vec<Variant>,
    /// The scenarios to run on each.
    pub scenarios: Vec<Scenario>,
    /// Warm-up per echo scenario.
    pub warmup: Duration,
    /// Measured time per echo scenario.
    pub duration: Duration,
    /// Load-generator threads.
    pub threads: usize,
    /// Servers on CPU 0, the load generator on CPU 1.
    pub pin: bool,
    /// How many times to run every cell (interleaved); each cell reports its median.
    pub rounds: usize,
    /// The `echoloop` binary to start servers from; `None`: this executable.
    pub server_exe: Option<PathBuf>,
    /// `--json`: on stdout instead of the table, or to a file as well.
    pub json: JsonTarget,
    /// `--svg PATH`.
    pub svg: Option<PathBuf>,
}

impl CompareOptions {
    /// Defaults for `--compare`: every variant and scenario, 0.5 s warm-up, 2 s measured,
    /// servers from `server_exe` (`None`: this executable).
    pub fn new(server_exe: Option<PathBuf>) -> CompareOptions {
        CompareOptions {
            variants: Variant::ALL.to_vec(),
            scenarios: Scenario::ALL.to_vec(),
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(2),
            threads: 1,
            pin: false,
            rounds: 1,
            server_exe,
            json: None,
            svg: None,
        }
    }
}

/// Everything `--compare` measured: what `--json` writes and the table is drawn from.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub settings: Settings,
    /// One entry per (variant, scenario) that ran.
    pub runs: Vec<RunResult>,
}

/// The machine, for the reader of a table.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process could use.
    pub cpus: usize,
    /// The CPU's model name.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
}

/// The run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Warm-up seconds per echo scenario.
    pub warmup_s: f64,
    /// Measured seconds per echo scenario.
    pub duration_s: f64,
    /// Load-generator threads.
    pub threads: usize,
    /// Servers pinned to CPU 0, load generator to CPU 1.
    pub pinned: bool,
    /// Rounds per cell; each cell shows its median round.
    pub rounds: usize,
}

/// One (variant, scenario) run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The server variant.
    pub model: Variant,
    /// The scenario.
    pub scenario: Scenario,
    /// What was measured: with `--rounds`, the median round's measurements.
    pub outcome: Outcome,
    /// Each round's headline number in the order run: msgs/s, or bytes per idle connection
    /// (`None` for a round that failed).
    pub rounds: Vec<Option<f64>>,
    /// The server's peak resident memory (VmHWM) at the end of the run, in bytes (the most
    /// over the rounds).
    pub server_peak_rss: Option<u64>,
    /// What went wrong, for the reader (empty when nothing did), in any round.
    pub problems: Vec<String>,
}

/// A run's measurements.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// An echo scenario.
    Echo(EchoReport),
    /// The idle scenario.
    Idle(IdleMemory),
    /// The run could not happen (the server did not start, nothing could connect).
    Failed {
        /// Why.
        error: String,
    },
}

/// The idle scenario: how much resident memory each held connection cost the server.
#[derive(Debug, Clone, Serialize)]
pub struct IdleMemory {
    /// Server VmRSS before connecting, bytes.
    pub rss_before: u64,
    /// Server VmRSS with every connection held, bytes.
    pub rss_held: u64,
    /// `(rss_held - rss_before) / held`, when anything was held.
    pub bytes_per_connection: Option<f64>,
    /// The connections.
    pub connections: IdleReport,
}

impl RunResult {
    /// No errors, no corruption, nothing failed.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How long the idle scenario holds its connections after measuring, to see that none is
/// dropped.
const IDLE_HOLD: Duration = Duration::from_millis(300);
/// How long the server gets to finish accepting before its memory is read.
const IDLE_SETTLE: Duration = Duration::from_millis(200);

/// Run the comparison and print the table (or JSON); `Err` if any run had problems.
pub fn run(options: &CompareOptions) -> io::Result<()> {
    let machine = Machine { cpus: sys::usable_cpus(), cpu_model: sys::cpu_model(), kernel: kernel_release() };
    let exe = match &options.server_exe {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let limit = sys::raise_nofile_limit()?;
    if options.pin {
        pin_load_generator()?;
    }
    let plan = interleaved_plan(options);
    if plan.is_empty() {
        return Err(io::Error::new(ErrorKind::InvalidInput, "--models and --scenarios leave nothing to run"));
    }
    let progress = Progress::on_terminal();
    progress.runs(plan.len() as u64);
    let mut rounds = Vec::with_capacity(plan.len());
    for (variant, scenario) in plan {
        progress.next_run(format!("{} · {}", variant.name(), scenario.name()));
        rounds.push(run_one(options, &exe, variant, scenario, limit));
    }
    let runs = medians(rounds);
    progress.finish();
    let settings = Settings {
        warmup_s: options.warmup.as_secs_f64(),
        duration_s: options.duration.as_secs_f64(),
        threads: options.threads,
        pinned: options.pin,
        rounds: options.rounds,
    };
    let report = CompareReport { machine, settings, runs };
    report::emit_comparison(&report, &options.json, &options.svg)?;
    let bound =
        report.runs.iter().filter(|r| matches!(&r.outcome, Outcome::Echo(e) if e.client_bound)).count();
    if bound > 0 {
        eprintln!(
            "warning: in {bound} runs (‡) the load generator used ≥ 95% of its CPU: those servers may be faster than shown"
        );
    }
    let troubled = report.runs.iter().filter(|r| !r.is_clean()).count();
    if troubled > 0 {
        let total = report.runs.len();
        return Err(io::Error::other(format!("{troubled} of {total} runs had problems (see ⚠ Problems)")));
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

/// The order of the runs: scenario by scenario, each model in turn, round after round
/// (A B C A B C). The machine's speed drifts (other processes, CPU frequency, the host of a
/// VM); interleaving spreads that drift over every model instead of charging it to
/// whichever model happened to run during it.
fn interleaved_plan(options: &CompareOptions) -> Vec<(Variant, Scenario)> {
    let one_round: Vec<(Variant, Scenario)> = options
        .scenarios
        .iter()
        .flat_map(|&s| options.variants.iter().filter(move |v| v.runs(s)).map(move |&v| (v, s)))
        .collect();
    one_round.iter().copied().cycle().take(one_round.len() * options.rounds.max(1)).collect()
}

/// Fold the rounds of each (model, scenario) into one result: the median round's numbers
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
    let values: Vec<Option<f64>> = cell.iter().map(|r| headline(&r.outcome)).collect();
    let peak = cell.iter().filter_map(|r| r.server_peak_rss).max();
    let problems: Vec<String> = cell.iter().flat_map(|r| r.problems.iter().cloned()).collect();
    let chosen = match cell.iter().position(|r| headline(&r.outcome).is_none()) {
        Some(failed) => cell.swap_remove(failed),
        None => {
            cell.sort_by(|a, b| {
                headline(&a.outcome).partial_cmp(&headline(&b.outcome)).unwrap_or(Ordering::Equal)
            });
            let middle = cell.len() / 2;
            cell.swap_remove(middle)
        }
    };
    RunResult { rounds: values, server_peak_rss: peak, problems, ..chosen }
}

/// A round's headline number: msgs/s, or bytes per idle connection; `None` if it failed.
fn headline(outcome: &Outcome) -> Option<f64> {
    match outcome {
        Outcome::Echo(e) => Some(e.msgs_per_s),
        Outcome::Idle(m) => m.bytes_per_connection,
        Outcome::Failed { .. } => None,
    }
}

/// One fresh server, one scenario, then stop the server.
fn run_one(
    options: &CompareOptions,
    exe: &Path,
    variant: Variant,
    scenario: Scenario,
    fd_limit: u64,
) -> RunResult {
    let mut result = RunResult {
        model: variant,
        scenario,
        outcome: failed("not run"),
        rounds: vec![],
        server_peak_rss: None,
        problems: vec![],
    };
    let server = match ServerProcess::start(exe, variant, options.pin) {
        Ok(server) => server,
        Err(e) => {
            result.problems.push(format!("server did not start: {e}"));
            result.outcome = failed(e);
            return result;
        }
    };
    let outcome = match scenario.shape() {
        Shape::Echo { connections, size, pipeline, spin } => {
            let load = Load {
                connections,
                size,
                pipeline,
                warmup: options.warmup,
                duration: options.duration,
                threads: options.threads,
                spin,
            };
            run::run_echo(&server.addr, &load, Some(server.pid()), &Progress::hidden()).map(Outcome::Echo)
        }
        Shape::Idle { connections } => {
            // Leave room for the load generator's own descriptors under the limit.
            let count = connections.min(fd_limit.saturating_sub(super::RESERVED_DESCRIPTORS) as usize);
            if count < connections {
                result.problems.push(format!(
                    "holding {count} connections, not {connections}: RLIMIT_NOFILE is {fd_limit}"
                ));
            }
            measure_idle(&server, count).map(Outcome::Idle)
        }
    };
    result.outcome = outcome.unwrap_or_else(failed);
    result.server_peak_rss = server.memory().map(|m| m.peak);
    result.problems.extend(problems_of(&result.outcome));
    if let Err(problem) = server.stop() {
        result.problems.push(problem);
    }
    result
}

fn failed(error: impl ToString) -> Outcome {
    Outcome::Failed { error: error.to_string() }
}

/// The idle scenario: server RSS before, connect and hold `count`, server RSS after.
fn measure_idle(server: &ServerProcess, count: usize) -> io::Result<IdleMemory> {
    let gone = || io::Error::other("the server exited");
    let before = server.memory().ok_or_else(gone)?;
    let set = run::open_idle(&server.addr, count, &Progress::hidden())?;
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
        Outcome::Idle(m) if !m.connections.is_clean() => vec![report::idle_problems(&m.connections)],
        Outcome::Failed { error } => vec![error.clone()],
        _ => vec![],
    }
}

/// `uname -r`, for the report.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// A server under test: a child process, stopped (or killed) when done.
struct ServerProcess {
    child: Child,
    addr: ListenAddr,
    /// Everything the server wrote to stderr, for problem reports.
    stderr: Arc<Mutex<String>>,
}

/// How long a server may take to print its `listening on` line.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(5);

impl ServerProcess {
    /// `EXE serve --model ... 127.0.0.1:0`, pinned to CPU 0 when asked; wait for its
    /// `listening on` line.
    fn start(exe: &Path, variant: Variant, pin: bool) -> io::Result<ServerProcess> {
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args(variant.serve_args())
            // Above the idle scenario's count, so the cap is never what is measured.
            .args(["--max-connections", "20000", "--shutdown-grace", "1", "-q", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if pin {
            // SAFETY: runs in the child between fork and exec; sched_setaffinity is a
            // plain system call and allocates nothing.
            unsafe { command.pre_exec(|| sys::pin_current_thread(0)) };
        }
        let mut child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", exe.display())))?;
        let stderr = collect_stderr(&mut child);
        let line = first_stdout_line(&mut child);
        let mut server = ServerProcess { child, addr: ListenAddr::Unix(PathBuf::new()), stderr };
        match line.as_deref().and_then(|l| l.trim_end().strip_prefix("listening on ")).map(str::parse) {
            Some(Ok(addr)) => server.addr = addr,
            _ => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                return Err(io::Error::other(format!(
                    "no 'listening on' line; stderr: {}",
                    server.stderr_tail()
                )));
            }
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn memory(&self) -> Option<sys::Memory> {
        sys::process_memory(self.pid())
    }

    /// SIGTERM by PID, wait, kill if it hangs. `Err` describes anything abnormal: it had
    /// already exited, it needed killing, or it exited with a failure.
    fn stop(mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("server exited during the run ({status}); stderr: {}", self.stderr_tail()));
        }
        // SAFETY: kill(2) on our own child's PID, which we have not yet reaped.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_LIMIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("server exited with {status}; stderr: {}", self.stderr_tail()));
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "server ignored SIGTERM for {}s and was killed",
                        STOP_LIMIT.as_secs()
                    ));
                }
                Err(e) => return Err(format!("waiting for the server: {e}")),
            }
        }
    }

    /// The last few lines of the server's stderr.
    fn stderr_tail(&self) -> String {
        thread::sleep(Duration::from_millis(50)); // let the reader thread catch up
        let text = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        if tail.is_empty() { "(empty)".into() } else { tail }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only reached with the child still running if a run was cut short.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Read the child's stderr on a thread into a shared string.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let sink = Arc::clone(&text);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut text) = sink.lock() {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
    }
    text
}

/// The child's first stdout line, waiting at most [`START_LIMIT`]; the rest of stdout is
/// drained so the child never blocks on a full pipe.
fn first_stdout_line(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = io::copy(&mut reader, &mut io::sink());
    });
    rx.recv_timeout(START_LIMIT).ok().filter(|l| !l.is_empty())
}

/// Hand-made outcomes for unit tests of the comparison and its report.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::bench::histogram::Latency;

    pub fn echo(msgs_per_s: f64, p99_us: f64, client_bound: bool, mismatches: u64) -> Outcome {
        Outcome::Echo(EchoReport {
            target: "127.0.0.1:1".into(),
            requested: 1,
            connections: 1,
            size: 64,
            pipeline: 1,
            threads: 1,
            spin: false,
            warmup_s: 0.1,
            duration_s: 1.0,
            msgs: msgs_per_s as u64,
            total_msgs: msgs_per_s as u64,
            msgs_per_s,
            mib_per_s: 0.0,
            latency: Latency { p99_us, ..Latency::default() },
            errors: 0,
            mismatches,
            first_error: None,
            client_cpu: if client_bound { 0.99 } else { 0.5 },
            client_bound,
            server_cpu: Some(0.5),
        })
    }

    pub fn idle(bytes_per_connection: f64, held: usize) -> Outcome {
        Outcome::Idle(IdleMemory {
            rss_before: 1 << 20,
            rss_held: (1 << 20) + (bytes_per_connection * held as f64) as u64,
            bytes_per_connection: Some(bytes_per_connection),
            connections: IdleReport {
                target: "127.0.0.1:1".into(),
                requested: 10_000,
                connected: held,
                failed: 10_000 - held,
                dropped: 0,
                held,
                connect_s: 1.0,
                duration_s: 0.3,
                first_error: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_their_json() {
        for v in Variant::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.name());
        }
        for s in Scenario::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }

    #[test]
    fn blocking_runs_only_the_latency_scenario() {
        let runs: Vec<_> = Scenario::ALL.into_iter().filter(|&s| Variant::Blocking.runs(s)).collect();
        assert_eq!(runs, [Scenario::Latency]);
        assert!(Scenario::ALL.iter().all(|&s| Variant::ThreadPerConn.runs(s)));
    }

    fn round(model: Variant, outcome: Outcome, problems: &[&str]) -> RunResult {
        RunResult {
            model,
            scenario: Scenario::Many,
            outcome,
            rounds: vec![],
            server_peak_rss: Some(1000),
            problems: problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn rounds_run_interleaved() {
        let mut options = CompareOptions::new(None);
        options.variants = vec![Variant::EventLoop, Variant::Blocking];
        options.scenarios = vec![Scenario::Latency, Scenario::Many];
        options.rounds = 2;
        let (a, b) = (Variant::EventLoop, Variant::Blocking);
        let (l, m) = (Scenario::Latency, Scenario::Many);
        assert_eq!(interleaved_plan(&options), [(a, l), (b, l), (a, m), (a, l), (b, l), (a, m)]);
    }

    #[test]
    fn each_cell_reports_its_median_round() {
        use fixtures::echo;
        let rounds = vec![
            round(Variant::EventLoop, echo(300.0, 1.0, false, 0), &[]),
            round(Variant::ThreadPerConn, echo(50.0, 1.0, false, 0), &[]),
            round(Variant::EventLoop, echo(100.0, 2.0, false, 0), &[]),
            round(Variant::ThreadPerConn, Outcome::Failed { error: "gone".into() }, &["gone"]),
            round(Variant::EventLoop, echo(200.0, 3.0, false, 0), &[]),
            round(Variant::ThreadPerConn, echo(60.0, 1.0, false, 0), &[]),
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

    #[test]
    fn titles_describe_the_load() {
        assert_eq!(Scenario::Latency.title(), "1 conn · 64 B");
        assert_eq!(Scenario::Medium.title(), "50 conns · 4 KiB · pipeline 4");
        assert_eq!(Scenario::Idle.title(), "10000 idle conns: RSS per conn");
    }
}
