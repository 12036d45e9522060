//! `echoloop bench`: it measures a real server, reports JSON (with the generator's own
//! threads and lateness), catches a server that corrupts its echo, and `--compare` runs end
//! to end.
//! Durations are a fraction of a second: these tests check behaviour, never speed.
//! (Only with the `bench` feature, which brings the subcommand.)
#![cfg(feature = "bench")]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use echoloop::{ListenAddr, Model};
use serde_json::Value;

use crate::util::{Finished, TestServer, config, join_bounded, run_bin_with};

/// The longest any bench run in these tests may take.
pub const LIMIT: Duration = Duration::from_secs(120);

/// `echoloop bench ARGS...`, to completion (bounded).
pub fn bench(args: &[&str]) -> Finished {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    run_bin_with(&all, Vec::new(), LIMIT)
}

/// `echoloop bench ADDR FLAGS...`, the flags written as one line.
pub fn bench_at(addr: &str, flags: &str) -> Finished {
    let args: Vec<&str> = std::iter::once(addr).chain(flags.split_whitespace()).collect();
    bench(&args)
}

/// The run's stdout as JSON (panics, showing both streams, if it is not).
pub fn json(run: &Finished) -> Value {
    serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\nstderr: {}", run.stdout_text(), run.stderr))
}

/// Against an in-process event loop: the JSON report parses, messages flowed, every
/// echoed byte matched, exit 0.
#[test]
fn measures_an_in_process_server() {
    let server = TestServer::start(config(Model::EventLoop));
    let addr = server.addr().to_string();
    let run = bench(&[
        &addr,
        "-c",
        "4",
        "--size",
        "1000",
        "--pipeline",
        "3",
        "--warmup",
        "0.1",
        "--duration",
        "0.5",
        "--json",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    assert!(report["msgs"].as_u64().unwrap() > 0, "{report}");
    assert!(report["msgs_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["latency"]["p99_us"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!((report["errors"].as_u64(), report["mismatches"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!(report["connections"].as_u64(), Some(4));
    // The generator's own thread and its scheduling delay, and whether it set the pace.
    assert_eq!(report["generator"]["thread_cpu"].as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(report["generator"]["delay"]["kind"].as_str(), Some("scheduling-delay"), "{report}");
    assert_eq!(
        report["valid"].as_bool(),
        Some(report["warnings"].as_array().unwrap().is_empty()),
        "{report}"
    );
    // Every byte the server echoed was one the bench sent and checked.
    let summary = server.stop();
    assert!(summary.bytes_echoed >= report["total_msgs"].as_u64().unwrap() * 1000, "{summary}");
}

/// Messages larger than the kernel's socket buffers and the server's pending cap still
/// come back whole (many partial reads and writes per message), over a Unix socket.
#[test]
fn measures_large_messages_over_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("echoloop-bench-{}.sock", std::process::id()));
    let server = TestServer::start(config(Model::EventLoop).with_addr(ListenAddr::Unix(path)));
    let addr = server.addr().to_string();
    let run = bench(&[
        &addr,
        "-c",
        "2",
        "--size",
        "300K",
        "--pipeline",
        "2",
        "--warmup",
        "0",
        "--duration",
        "0.5",
        "--json",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    assert!(report["total_msgs"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["mismatches"].as_u64(), Some(0));
}

/// The text report (no --json) names throughput, latency and the verdict.
#[test]
fn text_report_for_people() {
    let server = TestServer::start(config(Model::EventLoop));
    let run = bench(&[&server.addr().to_string(), "-c", "2", "--warmup", "0", "--duration", "0.3"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let text = run.stdout_text();
    for needle in ["msgs/s", "MiB/s", "p50", "p99", "p99.9", "max", "errors 0  mismatches 0"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

/// A server that flips one byte in every thousand: the bench counts mismatches and exits
/// non-zero.
#[test]
fn detects_a_corrupting_server() {
    let connections = 2;
    let (addr, server) = corrupting_server(connections);
    let run = bench(&[&addr, "-c", "2", "--size", "200", "--warmup", "0", "--duration", "0.3", "--json"]);
    join_bounded(server, LIMIT);
    assert_ne!(run.code, 0, "corruption must fail the run; stdout: {}", run.stdout_text());
    let report = json(&run);
    assert!(report["mismatches"].as_u64().unwrap() > 0, "{report}");
    assert!(run.stderr.contains("corrupted echoes"), "stderr: {}", run.stderr);
}

/// An echo server on its own threads that corrupts every byte at stream offset 999 mod
/// 1000 (so the 1-byte ping at offset 0 passes). It serves `count` connections, then ends.
fn corrupting_server(count: usize) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let handle = thread::spawn(move || {
        let deadline = Instant::now() + LIMIT;
        let mut workers = Vec::new();
        while workers.len() < count && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => workers.push(thread::spawn(move || echo_corrupted(stream))),
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("accept: {e}"),
            }
        }
        for worker in workers {
            join_bounded(worker, LIMIT);
        }
    });
    (addr, handle)
}

fn echo_corrupted(mut stream: TcpStream) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 16 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return, // the bench closed (or reset) the connection
            Ok(n) => n,
        };
        for byte in &mut buf[..n] {
            if offset % 1000 == 999 {
                *byte ^= 0xFF;
            }
            offset += 1;
        }
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// `--mode idle` opens and holds the connections and says how many it held.
#[test]
fn idle_mode_holds_connections() {
    let server = TestServer::start(config(Model::EventLoop));
    let run =
        bench(&[&server.addr().to_string(), "--mode", "idle", "-c", "300", "--duration", "0.3", "--json"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    assert_eq!((report["held"].as_u64(), report["failed"].as_u64()), (Some(300), Some(0)), "{report}");
    assert_eq!(server.stop().peak_connections, 300);
}

/// Nothing listening: a clear error naming the address, exit 1.
#[test]
fn no_server_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let run = bench(&[&format!("127.0.0.1:{port}"), "-c", "3", "--duration", "0.2"]);
    assert_eq!(run.code, 1, "stdout: {}", run.stdout_text());
    assert!(run.stderr.contains("cannot connect to 127.0.0.1"), "stderr: {}", run.stderr);
}

/// `--compare` on a tiny duration, two rounds: starts each server itself, prints the table,
/// writes JSON and SVG, and exits 0.
#[test]
fn compare_runs_end_to_end() {
    let dir = std::env::temp_dir();
    let (json_path, svg_path) = (
        dir.join(format!("echoloop-compare-{}.json", std::process::id())),
        dir.join(format!("echoloop-compare-{}.svg", std::process::id())),
    );
    let run = bench(&[
        "--compare",
        "--models",
        "event-loop,event-loop-w2",
        "--scenarios",
        "latency,medium,idle",
        "--warmup",
        "0.1",
        "--duration",
        "0.3",
        "--rounds",
        "2",
        "--json",
        json_path.to_str().unwrap(),
        "--svg",
        svg_path.to_str().unwrap(),
    ]);
    let (json_text, svg) = (std::fs::read_to_string(&json_path), std::fs::read_to_string(&svg_path));
    let _ = (std::fs::remove_file(&json_path), std::fs::remove_file(&svg_path));
    assert_eq!(run.code, 0, "stdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
    let table = run.stdout_text();
    assert!(table.contains("| scenario | event-loop | event-loop-w2 |"), "{table}");
    for row in [
        "| 1 conn · 64 B |",
        "| 50 conns · 4 KiB · pipeline 4 |",
        "| 10000 idle conns",
        "| server peak RSS |",
    ] {
        assert!(table.contains(row), "{row:?} missing from:\n{table}");
    }
    let report: Value = serde_json::from_str(&json_text.expect("JSON written")).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "{report}");
    for r in runs {
        assert_eq!(r["problems"].as_array().map(Vec::len), Some(0), "{r}");
        assert_eq!(r["rounds"].as_array().map(Vec::len), Some(2), "{r}");
        match r["outcome"]["kind"].as_str() {
            Some("echo") => assert!(r["outcome"]["msgs"].as_u64().unwrap() > 0, "{r}"),
            Some("idle") => assert!(r["outcome"]["bytes_per_connection"].as_f64().is_some(), "{r}"),
            other => panic!("unexpected outcome {other:?}: {r}"),
        }
        assert!(r["server_peak_rss"].as_u64().unwrap() > 0, "{r}");
    }
    let svg = svg.expect("SVG written");
    assert!(svg.contains("<svg") && svg.contains("event-loop-w2"), "not a chart: {svg:.200}");
    for panel in ["msgs/s (higher is better)", "p99 round trip", "server CPU per message"] {
        assert!(svg.contains(panel), "no {panel:?} panel: {svg:.300}");
    }
    // One line per cell on stderr, though it is not a terminal.
    assert!(run.stderr.contains("[1/12] event-loop · latency: "), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("[12/12] event-loop-w2 · idle: "), "stderr: {}", run.stderr);
}

/// `--compare` starts the models named, as command lines with a free port for `{addr}`,
/// waits for each to accept, and names each in the JSON; the blocking model, which serves
/// one connection at a time, takes part in the 1-connection scenario.
#[test]
fn compare_names_each_model_it_started() {
    let run = bench(&[
        "--compare",
        "--models",
        "event-loop,blocking",
        "--scenarios",
        "latency",
        "--warmup",
        "0.1",
        "--duration",
        "0.3",
        "--json",
    ]);
    assert_eq!(run.code, 0, "stdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
    let report = json(&run);
    let runs = report["runs"].as_array().unwrap();
    let models: Vec<&str> = runs.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["event-loop", "blocking"], "{report}");
    for r in runs {
        assert_eq!(r["scenario"].as_str(), Some("latency"), "{r}");
        assert_eq!(r["outcome"]["kind"].as_str(), Some("echo"), "{r}");
        assert!(r["outcome"]["msgs"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["outcome"]["mismatches"].as_u64(), Some(0), "{r}");
        assert_eq!(r["problems"].as_array().map(Vec::len), Some(0), "{r}");
    }
}

/// `--models` is checked against the models this binary knows, before anything starts.
#[test]
fn compare_refuses_an_unknown_model() {
    let run = bench(&["--compare", "--models", "event-loop,tokio", "--duration", "0.2"]);
    assert_eq!(run.code, 2, "stdout: {}", run.stdout_text());
    let want =
        "no server named 'tokio' (known: event-loop, event-loop-w2, thread-per-conn, blocking, io-uring)";
    assert!(run.stderr.contains(want), "stderr: {}", run.stderr);
}

/// A server whose program is not there is found before the comparison starts: a usage
/// error naming the server and the program, and no cell runs.
#[test]
fn compare_checks_every_server_before_the_first_cell() {
    let missing = std::env::temp_dir().join(format!("echoloop-missing-{}", std::process::id()));
    let run = bench(&[
        "--compare",
        "--models",
        "event-loop",
        "--scenarios",
        "latency",
        "--duration",
        "0.2",
        "--server-exe",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "stdout: {}", run.stdout_text());
    let want = format!("server 'event-loop': program '{}' not found", missing.display());
    assert!(run.stderr.contains(&want), "stderr: {}", run.stderr);
    assert!(!run.stderr.contains("[1/"), "a cell ran: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout_text());
}

/// A server that starts but never listens fails the check too (a failed run, exit 1),
/// with its stderr, before any cell runs; one that listens is checked on stderr.
#[test]
fn compare_reports_a_server_that_does_not_listen() {
    let run = bench(&[
        "--compare",
        "--server",
        "mute=sh -c 'echo no socket for {port} >&2; exit 3'",
        "--models",
        "event-loop,mute",
        "--scenarios",
        "latency",
        "--duration",
        "0.2",
    ]);
    assert_eq!(run.code, 1, "stdout: {}", run.stdout_text());
    assert!(run.stderr.contains("checked event-loop: listens, and stops on SIGTERM"), "{}", run.stderr);
    assert!(
        run.stderr.contains("before the comparison: server 'mute': exited (exit status: 3)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("stderr: no socket for "), "{}", run.stderr);
    assert!(!run.stderr.contains("[1/"), "a cell ran: {}", run.stderr);
}
