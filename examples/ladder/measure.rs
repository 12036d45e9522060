//! Running the rungs and the load generator, each bounded in time, and reading what they
//! report: throughput, memory per idle connection, and (in `syscalls.rs`) system calls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Options;
use crate::syscalls::{self, Count};

/// A column of the table: a rung, by the example that runs it.
pub struct Rung {
    pub title: &'static str,
    pub example: &'static str,
}

/// Where the programs are.
pub struct Paths {
    /// target/release/examples: the rungs.
    pub examples: PathBuf,
    /// target/release/echoloop: the load generator (`echoloop bench`).
    pub echoloop: PathBuf,
}

/// One figure of one rung.
pub enum Figure<T> {
    Value(T),
    /// The rung serves one connection at a time; this load needs more.
    OneAtATime,
    /// The run went wrong; why, in a few words.
    Failed(String),
    /// This machine cannot measure it (a tool is missing); why.
    Unavailable(String),
}

/// A throughput run.
pub struct Cell {
    pub msgs_per_s: f64,
    /// The rung's CPU over the run, in cores.
    pub server_cpu: Option<f64>,
    /// The load generator used all of its CPU: the rung may be faster than shown.
    pub client_bound: bool,
}

/// Everything `compare` measured, indexed by row, then by rung (as `RUNGS`).
pub struct Measured {
    /// [connection count][rung][round].
    pub throughput: Vec<Vec<Vec<Figure<Cell>>>>,
    /// Bytes of resident memory per idle connection.
    pub memory: Vec<Figure<f64>>,
    pub syscalls: Vec<Figure<Count>>,
    /// The 1-minute load average before the first run and after the last: how busy the
    /// machine was with other work, which the figures share the CPUs with.
    pub load: (String, String),
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().next().unwrap_or("?").to_string()
}

/// Run every measurement, rounds interleaved (every rung once, then again).
pub fn all(paths: &Paths, rungs: &[Rung], options: &Options, pinning: &Pinning) -> Measured {
    let load_before = load_average();
    let concurrent: Vec<bool> = rungs.iter().map(|rung| serves_at_once(paths, pinning, rung)).collect();
    let mut throughput: Vec<Vec<Vec<Figure<Cell>>>> =
        options.connections.iter().map(|_| rungs.iter().map(|_| Vec::new()).collect()).collect();
    for round in 1..=options.rounds {
        for (row, &connections) in options.connections.iter().enumerate() {
            for (i, rung) in rungs.iter().enumerate() {
                eprintln!("round {round}/{}: {} with {connections} connections", options.rounds, rung.title);
                let figure = if connections > 1 && !concurrent[i] {
                    Figure::OneAtATime
                } else {
                    echo_rate(paths, pinning, rung, connections, options)
                };
                throughput[row][i].push(figure);
            }
        }
    }
    let memory = rungs
        .iter()
        .zip(&concurrent)
        .map(|(rung, &concurrent)| {
            eprintln!("memory: {} with {} idle connections", rung.title, options.idle);
            if concurrent { idle_memory(paths, pinning, rung, options.idle) } else { Figure::OneAtATime }
        })
        .collect();
    let syscalls = rungs
        .iter()
        .map(|rung| {
            eprintln!("system calls: {}", rung.title);
            syscalls::per_message(paths, pinning, rung, options.duration + options.warmup)
        })
        .collect();
    Measured { throughput, memory, syscalls, load: (load_before, load_average()) }
}

/// 128-byte messages, closed loop, `connections` at once: messages per second.
fn echo_rate(
    paths: &Paths,
    pinning: &Pinning,
    rung: &Rung,
    connections: usize,
    options: &Options,
) -> Figure<Cell> {
    let server = match Running::start(pinning.command(0, &paths.examples.join(rung.example))) {
        Ok(server) => server,
        Err(e) => return Figure::Failed(e),
    };
    let (c, duration, warmup) =
        (connections.to_string(), options.duration.to_string(), options.warmup.to_string());
    let pid = server.pid().to_string();
    let args = ["-c", &c, "--size", "128", "--duration", &duration, "--warmup", &warmup];
    let limit = Duration::from_secs_f64(options.duration + options.warmup + 40.0);
    match bench(paths, pinning, server.addr, &[&args[..], &["--server-pid", &pid]].concat(), limit, || {}) {
        Ok(json) if json["msgs"].as_u64().unwrap_or(0) == 0 => {
            Figure::Failed("no echo completed in the measured window".into())
        }
        Ok(json) => Figure::Value(Cell {
            msgs_per_s: json["msgs_per_s"].as_f64().unwrap_or(0.0),
            server_cpu: json["server_cpu"].as_f64(),
            client_bound: json["client_bound"].as_bool().unwrap_or(false),
        }),
        Err(e) => Figure::Failed(e),
    }
}

/// The growth of the rung's `VmRSS` while `count` idle connections are held, per connection.
fn idle_memory(paths: &Paths, pinning: &Pinning, rung: &Rung, count: usize) -> Figure<f64> {
    let server = match Running::start(pinning.command(0, &paths.examples.join(rung.example))) {
        Ok(server) => server,
        Err(e) => return Figure::Failed(e),
    };
    let rss = || vm_rss_kib(server.pid()).unwrap_or(0);
    let before = rss();
    let mut peak = before;
    let args = ["--mode", "idle", "-c", &count.to_string(), "--duration", "1"].map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let json =
        match bench(paths, pinning, server.addr, &args, Duration::from_secs(60), || peak = peak.max(rss())) {
            Ok(json) => json,
            Err(e) => return Figure::Failed(e),
        };
    match json["held"].as_u64() {
        Some(held) if held as usize == count => Figure::Value((peak - before) as f64 * 1024.0 / held as f64),
        held => Figure::Failed(format!("held {held:?} of {count} connections")),
    }
}

/// Whether the rung serves two clients at once: with the first one connected and answered,
/// a second one gets its echo within a second.
fn serves_at_once(paths: &Paths, pinning: &Pinning, rung: &Rung) -> bool {
    let Ok(server) = Running::start(pinning.command(0, &paths.examples.join(rung.example))) else {
        return true; // it will fail where it is measured, and say why there
    };
    let answered = |wait: Duration| -> bool {
        let Ok(mut client) = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5)) else {
            return false;
        };
        let mut byte = [0u8; 1];
        let _ = client.set_read_timeout(Some(wait));
        client.write_all(b"?").is_ok() && client.read(&mut byte).is_ok_and(|n| n == 1)
    };
    let first = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5));
    let served = first.is_ok_and(|mut first| {
        let mut byte = [0u8; 1];
        let _ = first.set_read_timeout(Some(Duration::from_secs(5)));
        first.write_all(b"!").is_ok() && first.read(&mut byte).is_ok() && answered(Duration::from_secs(1))
    });
    if !served {
        eprintln!("{}: a second client got no echo while the first was connected", rung.title);
    }
    served
}

/// `echoloop bench ADDR ARGS --json`, pinned to the load's CPU, bounded by `limit`, calling
/// `tick` every 20 ms while it runs: its JSON report, or why there is none.
pub fn bench(
    paths: &Paths,
    pinning: &Pinning,
    addr: SocketAddr,
    args: &[&str],
    limit: Duration,
    mut tick: impl FnMut(),
) -> Result<Value, String> {
    let mut command = pinning.command(1, &paths.echoloop);
    command.arg("bench").arg(addr.to_string()).args(args).arg("--json");
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("cannot run echoloop bench: {e}"))?;
    let stdout = read_all_later(child.stdout.take());
    let stderr = read_all_later(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the load generator took over {}s", limit.as_secs()));
        }
        tick();
        thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    let json: Option<Value> = serde_json::from_str(&stdout).ok();
    match json {
        // A report with errors or corrupted echoes exits non-zero: say what went wrong.
        Some(json) if status.success() => Ok(json),
        Some(json) => Err(json["first_error"].as_str().unwrap_or("errors in the echo").to_string()),
        None => Err(stderr.lines().last().unwrap_or("no report").to_string()),
    }
}

/// Read a pipe to its end on a thread, so that the child never blocks on a full pipe.
fn read_all_later(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// A rung running as a child process, listening on a port the OS picked; killed on drop.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
}

impl Running {
    /// Start `command` with `127.0.0.1:0` added, and wait (up to 10 s) for its
    /// `listening on ADDR` line.
    pub fn start(mut command: Command) -> Result<Running, String> {
        command.arg("127.0.0.1:0").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child =
            command.spawn().map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout?);
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let _ = tx.send(line);
            std::io::copy(&mut reader, &mut std::io::sink()).ok() // keep the pipe drained
        });
        let complaint = read_all_later(stderr); // drained to the end, so it never blocks the rung
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let mut running = Running { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        if let Some(Ok(addr)) = line.trim().strip_prefix("listening on ").map(str::parse) {
            running.addr = addr;
            return Ok(running);
        }
        drop(running); // killed: its stderr ends
        let complaint = complaint.join().unwrap_or_default();
        let why = complaint.lines().last().unwrap_or("no 'listening on ADDR' line");
        Err(format!("{:?} did not start: {why}", command.get_program()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `limit` for it to exit by itself: whether it did.
    pub fn exited_within(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of process `pid`, in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Rungs on CPU 0 and the load generator on CPU 1, when `taskset` and two CPUs are there.
pub enum Pinning {
    Pinned,
    Unpinned(String),
}

impl Pinning {
    pub fn detect() -> Pinning {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let taskset = Command::new("taskset").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
        match (cpus, taskset) {
            (2.., Ok(status)) if status.success() => Pinning::Pinned,
            (2.., _) => Pinning::Unpinned("taskset is not installed".into()),
            _ => Pinning::Unpinned("this machine has one CPU".into()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Pinning::Pinned => "each rung on CPU 0, the load generator on CPU 1 (taskset)".into(),
            Pinning::Unpinned(why) => format!("not pinned to CPUs: {why}"),
        }
    }

    /// `program`, to run on `cpu` when pinning.
    pub fn command(&self, cpu: usize, program: &Path) -> Command {
        match self {
            Pinning::Pinned => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpu.to_string()).arg(program);
                command
            }
            Pinning::Unpinned(_) => Command::new(program),
        }
    }
}

/// Raise this process's soft limit on open files to its hard limit: the rungs and the load
/// generator inherit it, and 2,000 connections need more than the usual 1,024.
pub fn raise_descriptor_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers to an initialised struct, for the duration of each call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                eprintln!("note: cannot raise the open-file limit: {}", std::io::Error::last_os_error());
            }
        }
    }
}
