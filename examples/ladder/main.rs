//! `ladder`: the five rungs side by side, measured on this machine (docs/learn.md).
//!
//! ```text
//! cargo run --release --example ladder                 # the rungs, and how to run each
//! cargo run --release --example ladder -- compare      # measure them all (about 2 minutes)
//! ```
//!
//! `compare` builds the rungs and `echoloop` (`cargo build --release`), then loads each rung
//! in turn with the project's load generator, `echoloop bench --json`: the rung pinned to
//! CPU 0 (`taskset -c 0`) and the load to CPU 1, over loopback, every run bounded in time.
//! It prints one Markdown table:
//! - throughput: 128-byte messages echoed per second with 1, 100 and 2,000 connections
//!   (closed loop), with the rung's CPU; the rounds interleave the rungs, each cell shows its
//!   median round, and its ratio to rung 3 is the median of the per-round ratios;
//! - memory per idle connection: how far the rung's resident memory (`VmRSS`) grows while
//!   the load generator holds N idle connections, divided by N;
//! - system calls per message: `strace -c -f` on the rung while one client sends 500
//!   messages a second (for as long as a throughput cell), less the calls of starting and
//!   stopping with no load.
//!
//! A rung that serves one connection at a time (a probe: a second client gets no echo
//! within a second) gets no cell with more connections: the table says so instead.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

mod measure;
mod report;
mod syscalls;

use measure::{Measured, Paths, Rung};

/// Bottom to top: the column title and the example that runs it.
const RUNGS: [Rung; 5] = [
    Rung { title: "1 blocking", example: "ladder-1-blocking" },
    Rung { title: "2 thread-per-conn", example: "ladder-2-thread-per-conn" },
    Rung { title: "3 event loop", example: "ladder-3-event-loop" },
    Rung { title: "4 edge-triggered", example: "ladder-4-edge-triggered" },
    Rung { title: "5 io_uring", example: "ladder-5-io-uring" },
];
/// The rung the ratios are taken against: the smallest correct event loop.
const BASELINE: usize = 2;

const USAGE: &str = "usage: ladder [compare [--rounds R] [--duration SECS] [--warmup SECS]
                       [--connections N,N,...] [--idle N] [--no-build]]";

/// What `compare` measures, and how long.
pub struct Options {
    /// Interleaved rounds of the throughput cells.
    pub rounds: usize,
    /// Seconds measured per throughput cell, after `warmup` seconds of load.
    pub duration: f64,
    pub warmup: f64,
    /// The connection counts of the throughput rows.
    pub connections: Vec<usize>,
    /// Idle connections held for the memory row.
    pub idle: usize,
    /// Build the rungs and `echoloop` first.
    pub build: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => list(),
        Some("compare") => match parse_options(&args[1..]) {
            Ok(options) => {
                if let Err(e) = compare(&options) {
                    eprintln!("ladder compare: {e}");
                    std::process::exit(1);
                }
            }
            Err(problem) => usage(&problem),
        },
        Some(other) => usage(&format!("unknown command '{other}'")),
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("ladder: {problem}\n{USAGE}");
    std::process::exit(2)
}

/// `ladder` alone: the rungs, and how to run each.
fn list() {
    println!("The ladder: the same echo server five ways (docs/learn.md).\n");
    for rung in &RUNGS {
        let file = format!("examples/ladder/{}.rs", rung.file_stem());
        println!("  {:<20} {file:<40} cargo run --release --example {}", rung.title, rung.example);
    }
    println!("\nThe mistakes: cargo run --release --example ladder-mistakes -- MISTAKE [--fixed] ADDR");
    println!("Measure them all: cargo run --release --example ladder -- compare\n\n{USAGE}");
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        rounds: 3,
        duration: 1.5,
        warmup: 0.5,
        connections: vec![1, 100, 2000],
        idle: 1000,
        build: true,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--no-build" {
            options.build = false;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_: std::num::ParseIntError| format!("{flag}: '{value}' is not a whole number");
        let bad_secs = |_: std::num::ParseFloatError| format!("{flag}: '{value}' is not a number of seconds");
        match flag.as_str() {
            "--rounds" => options.rounds = value.parse().map_err(bad)?,
            "--duration" => options.duration = value.parse().map_err(bad_secs)?,
            "--warmup" => options.warmup = value.parse().map_err(bad_secs)?,
            "--idle" => options.idle = value.parse().map_err(bad)?,
            "--connections" => {
                options.connections =
                    value.split(',').map(str::parse).collect::<Result<_, _>>().map_err(bad)?
            }
            _ => return Err(format!("unknown option '{flag}'")),
        }
    }
    let sane = options.rounds >= 1
        && (0.1..=5.0).contains(&options.duration)
        && (0.0..=5.0).contains(&options.warmup)
        && options.idle >= 1
        && !options.connections.is_empty()
        && options.connections.iter().all(|&n| n >= 1);
    if !sane {
        return Err("need --rounds ≥ 1, --duration 0.1–5, --warmup 0–5, counts ≥ 1".into());
    }
    Ok(options)
}

fn compare(options: &Options) -> Result<(), String> {
    if options.build {
        build()?;
    }
    let paths = Paths::beside(&std::env::current_exe().map_err(|e| e.to_string())?)?;
    measure::raise_descriptor_limit();
    let pinning = measure::Pinning::detect();
    eprintln!("ladder compare: {}", pinning.describe());
    let measured: Measured = measure::all(&paths, &RUNGS, options, &pinning);
    let command: Vec<String> = std::env::args().skip(1).collect();
    print!("{}", report::markdown(&RUNGS, BASELINE, options, &measured, &pinning, &command.join(" ")));
    Ok(())
}

/// `cargo build --release` of `echoloop` and every rung, so that what is measured is what
/// the sources say now.
fn build() -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut command = Command::new(cargo);
    command.args(["build", "--release", "--bin", "echoloop", "--manifest-path"]).arg(&manifest);
    for rung in &RUNGS {
        command.args(["--example", rung.example]);
    }
    eprintln!("ladder compare: building the rungs and echoloop");
    let status = command.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("cargo build failed ({status})")) }
}

impl Rung {
    /// `1_blocking` for `ladder-1-blocking`: the source file's name.
    fn file_stem(&self) -> String {
        self.example.trim_start_matches("ladder-").replace('-', "_")
    }
}

/// Where the programs are: the rungs beside this one, `echoloop` one level up.
impl Paths {
    fn beside(exe: &Path) -> Result<Paths, String> {
        let examples = exe.parent().ok_or("no directory for this program")?.to_path_buf();
        let echoloop = examples.parent().map(|dir| dir.join("echoloop")).unwrap_or_else(PathBuf::new);
        let missing: Vec<String> = RUNGS
            .iter()
            .map(|rung| examples.join(rung.example))
            .chain([echoloop.clone()])
            .filter(|path| !path.is_file())
            .map(|path| path.display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(format!("not built: {} (run without --no-build)", missing.join(", ")));
        }
        Ok(Paths { examples, echoloop })
    }
}
