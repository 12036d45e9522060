//! `--compare` beyond the built-in models: the churn and UDP rows, any server given as
//! `--server NAME='CMD {addr}'` (socat and ncat among them), the reference peers with
//! `--references`, the fairness scenario, and `--find-max` for every server.
//! (Only with the `bench` feature, which brings the subcommand.)
#![cfg(feature = "bench")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bench_smoke::{bench, json};

const ECHOLOOP: &str = env!("CARGO_BIN_EXE_echoloop");

/// A short comparison of `models` in `scenarios`, as JSON on stdout, plus `extra` flags.
fn compare(models: &str, scenarios: &str, extra: &[&str]) -> crate::util::Finished {
    let mut args = vec![
        "--compare",
        "--models",
        models,
        "--scenarios",
        scenarios,
        "--warmup",
        "0.1",
        "--duration",
        "0.3",
        "--json",
    ];
    args.extend_from_slice(extra);
    bench(&args)
}

/// The runs of a comparison, each clean and measured.
fn clean_runs(run: &crate::util::Finished) -> Vec<Value> {
    assert_eq!(run.code, 0, "stdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
    let runs = json(run)["runs"].as_array().unwrap().clone();
    for r in &runs {
        assert_eq!(r["problems"].as_array().map(Vec::len), Some(0), "{r}");
    }
    runs
}

/// The churn scenario is a row of its own: connections per second, every echo verified.
#[test]
fn compare_has_a_churn_row() {
    let runs = clean_runs(&compare("event-loop", "churn", &[]));
    assert_eq!(runs.len(), 1);
    let outcome = &runs[0]["outcome"];
    assert_eq!(
        (runs[0]["scenario"].as_str(), outcome["kind"].as_str()),
        (Some("churn"), Some("churn")),
        "{outcome}"
    );
    assert!(outcome["conns_per_s"].as_f64().unwrap() > 0.0, "{outcome}");
    assert_eq!((outcome["errors"].as_u64(), outcome["mismatches"].as_u64()), (Some(0), Some(0)), "{outcome}");
    let table = bench(&[
        "--compare",
        "--models",
        "event-loop",
        "--scenarios",
        "churn",
        "--warmup",
        "0",
        "--duration",
        "0.3",
    ]);
    assert!(
        table.stdout_text().contains("| churn: connect, echo 64 B, close (8 at once) |"),
        "{}",
        table.stdout_text()
    );
}

/// The UDP scenarios run on the servers that serve UDP (every model, not the two-worker
/// event loop's entry), started with a `udp:` address and ready once they echo a datagram;
/// every datagram is verified, none lost.
#[test]
fn compare_has_udp_rows() {
    let uring = crate::io_uring::kernel_refuses().is_none();
    let models = if uring { "event-loop,event-loop-w2,io-uring" } else { "event-loop,event-loop-w2" };
    let runs = clean_runs(&compare(models, "udp-small,udp-burst", &[]));
    let cells: Vec<(&str, &str)> =
        runs.iter().map(|r| (r["model"].as_str().unwrap(), r["scenario"].as_str().unwrap())).collect();
    let mut want = vec![("event-loop", "udp-small"), ("event-loop", "udp-burst")];
    if uring {
        want = vec![
            ("event-loop", "udp-small"),
            ("io-uring", "udp-small"),
            ("event-loop", "udp-burst"),
            ("io-uring", "udp-burst"),
        ];
    }
    assert_eq!(cells, want, "UDP needs a UDP server");
    for r in &runs {
        let outcome = &r["outcome"];
        assert!(outcome["msgs"].as_u64().unwrap() > 0, "{outcome}");
        assert_eq!(
            (outcome["errors"].as_u64(), outcome["mismatches"].as_u64()),
            (Some(0), Some(0)),
            "{outcome}"
        );
    }
}

/// `--server NAME='CMD {addr}'`: any program, its command split like a shell would (the
/// quoted `-q` here), started on a free port and named by `--models`.
#[test]
fn compare_starts_a_server_given_by_command_line() {
    let server = format!("threads={ECHOLOOP} serve '-q' --model thread-per-conn {{addr}}");
    let runs = clean_runs(&compare("threads,event-loop", "latency", &["--server", &server]));
    let models: Vec<&str> = runs.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["threads", "event-loop"]);
    assert!(runs.iter().all(|r| r["outcome"]["msgs"].as_u64().unwrap() > 0));
}

/// A directory with `echoloop` and stand-in peers, each a script that starts the real
/// binary on the address it is given (`peer-udp` on its `udp:` form).
fn fake_exe_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("echoloop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(ECHOLOOP, dir.join("echoloop")).unwrap();
    for (peer, scheme) in [("peer-epoll", ""), ("peer-tokio", ""), ("peer-udp", "udp:")] {
        let script = dir.join(peer);
        std::fs::write(&script, format!("#!/bin/sh\nexec '{ECHOLOOP}' serve -q \"{scheme}$1\"\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// `--references` adds `peer-epoll`, `peer-tokio` and `peer-udp` from the directory of the
/// binary (here `--server-exe`), each started with the address as its one argument.
#[test]
fn compare_references_come_from_the_binarys_directory() {
    let dir = fake_exe_dir("references");
    let exe = dir.join("echoloop");
    let exe = ["--references", "--server-exe", exe.to_str().unwrap()];
    let run = compare("peer-epoll,peer-tokio,peer-udp", "latency,udp-small", &exe);
    let _ = std::fs::remove_dir_all(&dir);
    let runs = clean_runs(&run);
    let models: Vec<&str> = runs.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["peer-epoll", "peer-tokio", "peer-udp"]);
}

/// Without the peer binaries, `--references` says how to build them, and runs nothing.
#[test]
fn missing_references_say_how_to_build_them() {
    let dir = std::env::temp_dir().join(format!("echoloop-no-peers-{}", std::process::id()));
    let exe = dir.join("echoloop");
    let run = compare("event-loop", "latency", &["--references", "--server-exe", exe.to_str().unwrap()]);
    assert_eq!(run.code, 1, "stdout: {}", run.stdout_text());
    assert!(run.stderr.contains("peer-epoll"), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("build them with cargo build --release --workspace"),
        "stderr: {}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout_text());
}

/// The real reference peers, when the workspace has built them beside `echoloop`.
/// Until the peers are in the workspace it skips, saying why (then it should not).
#[test]
fn compare_against_the_real_reference_peers() {
    let dir = Path::new(ECHOLOOP).parent().unwrap();
    let missing: Vec<&str> =
        ["peer-epoll", "peer-tokio", "peer-udp"].into_iter().filter(|p| !dir.join(p).is_file()).collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: {} not built in {} (cargo build --release --workspace)",
            missing.join(", "),
            dir.display()
        );
        return;
    }
    let models = "event-loop,peer-epoll,peer-tokio,peer-udp";
    let runs = clean_runs(&compare(models, "latency,churn,udp-small", &["--references"]));
    assert_eq!(runs.len(), 8, "3 × latency and churn, 2 × udp-small");
}

/// The fairness scenario: the small connections' p99 and p99.9 alone and beside the
/// stream, and the stream's throughput, at the top of its JSON; the three runs behind them
/// clean; a row of its own in the table.
#[test]
fn compare_measures_fairness_beside_a_stream() {
    let run = compare("event-loop", "fairness", &[]);
    let runs = clean_runs(&run);
    let outcome = &runs[0]["outcome"];
    assert_eq!(outcome["kind"].as_str(), Some("fairness"), "{outcome}");
    for pair in ["small_p99_us", "small_p999_us"] {
        for side in ["alone", "beside_stream"] {
            assert!(outcome[pair][side].as_f64().unwrap() > 0.0, "{pair}.{side}: {outcome}");
        }
    }
    assert!(outcome["stream_mib_per_s"].as_f64().unwrap() > 0.0, "{outcome}");
    assert_eq!(outcome["small"]["connections"].as_u64(), Some(100), "{outcome}");
    assert_eq!(outcome["stream"]["size"].as_u64(), Some(65536), "{outcome}");
    for part in ["alone", "beside_stream", "stream"] {
        let r = &outcome["runs"][part];
        assert_eq!((r["errors"].as_u64(), r["mismatches"].as_u64()), (Some(0), Some(0)), "{part}: {r}");
    }
    // The small connections ran open loop at 5000/s in all, alone and beside the stream.
    assert_eq!(outcome["runs"]["beside_stream"]["rate"]["asked_per_s"].as_f64(), Some(5000.0));
    assert_eq!(outcome["runs"]["stream"]["connections"].as_u64(), Some(1));
}

/// `--compare --find-max`: each server's highest sustainable rate, its steps in the JSON,
/// a row that says what was searched for, and one chart of every server's curve.
#[test]
fn compare_finds_each_servers_highest_sustainable_rate() {
    let svg = std::env::temp_dir().join(format!("echoloop-compare-find-max-{}.svg", std::process::id()));
    let server = format!("threads={ECHOLOOP} serve -q --model thread-per-conn {{addr}}");
    let run = compare(
        "event-loop,threads",
        "small-many",
        &["--find-max", "--slo", "p99=20ms", "--svg", svg.to_str().unwrap(), "--server", &server],
    );
    let chart = std::fs::read_to_string(&svg);
    let _ = std::fs::remove_file(&svg);
    let runs = clean_runs(&run);
    assert_eq!(runs.len(), 2);
    for r in &runs {
        let outcome = &r["outcome"];
        assert_eq!(outcome["kind"].as_str(), Some("find_max"), "{outcome}");
        let steps = outcome["steps"].as_array().unwrap();
        assert!((2..=12).contains(&steps.len()), "{outcome}");
        assert_eq!(outcome["slo"]["limit_us"].as_f64(), Some(20_000.0), "{outcome}");
    }
    let chart = chart.expect("the chart was drawn");
    assert!(
        chart.contains("event-loop") && chart.contains("threads") && chart.contains("SLO"),
        "{chart:.300}"
    );
}

/// Servers nobody here wrote, as a new user would run them: socat (a process forked per
/// connection, exit status 143 on SIGTERM) and ncat (`-k -e /bin/cat`: a `cat` per
/// connection), given `{host}` and `{port}`. Both stop cleanly; their CPU and memory are
/// those of every process they started, not of the parent alone.
#[test]
fn compare_counts_forking_servers_whole() {
    let missing: Vec<&str> = ["socat", "ncat"].into_iter().filter(|p| !on_path(p)).collect();
    if !missing.is_empty() {
        eprintln!("skipped: {} not installed (apt-get install socat ncat)", missing.join(", "));
        return;
    }
    let run = compare(
        "socat,ncat",
        "small-many",
        &[
            "--server",
            "socat=socat TCP-LISTEN:{port},bind={host},fork,reuseaddr PIPE",
            "--server",
            "ncat=ncat -l -k {host} {port} -e /bin/cat",
        ],
    );
    for r in clean_runs(&run) {
        let outcome = &r["outcome"];
        assert!(outcome["msgs"].as_u64().unwrap() > 0, "{r}");
        // 100 connections at full speed keep the children busy: the parent alone is idle.
        assert!(outcome["server_cpu"].as_f64().unwrap() > 0.05, "CPU of the parent alone? {r}");
        assert!(r["server_peak_rss"].as_u64().unwrap() > 1 << 20, "{r}");
    }
    assert!(!run.stderr.contains("exit status: 143"), "{}", run.stderr);
}

/// Whether `program` is on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
