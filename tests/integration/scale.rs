//! Many connections, at a scale CI can afford: the server and the load generator each start
//! with a soft descriptor limit far below what they must hold and raise it to the hard limit
//! themselves; the load generator spreads its connections over several source addresses
//! (`--source`), which the server sees; `--active` echoes beside an idle crowd. (How many
//! bytes a connection costs is measured by the benchmark, `echoloop bench --mode idle
//! --server-pid`, and recorded in docs/results/: a timed test would only be noisy.)

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::bench_smoke::json;
use crate::util::*;

/// The soft limit both processes start with: fewer descriptors than the connections.
const LOW_SOFT_LIMIT: u64 = 256;
/// Connections held: more than the low soft limit allows either process.
const CONNECTIONS: usize = 600;

/// `echoloop ARGS...` started with the soft RLIMIT_NOFILE at `soft` (the hard one kept).
pub fn with_soft_limit(args: &[&str], soft: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_echoloop"));
    command.args(args);
    // SAFETY: between fork and exec the closure makes only getrlimit and setrlimit calls,
    // which are async-signal-safe, on a struct on its own stack.
    unsafe {
        command.pre_exec(move || {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = soft.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// This process's hard RLIMIT_NOFILE (the children inherit it).
pub fn hard_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit.rlim_max
}

/// The source addresses of the connections a server logged opening (`-v`: `opened
/// peer=IP:PORT`), counted per address.
fn peers_by_address(log: &str) -> BTreeMap<String, usize> {
    let mut peers = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(" opened peer=")) {
        let peer = line.split(" opened peer=").nth(1).and_then(|rest| rest.split_whitespace().next());
        if let Some((ip, _port)) = peer.and_then(|p| p.rsplit_once(':')) {
            *peers.entry(ip.to_string()).or_insert(0) += 1;
        }
    }
    peers
}

/// A server and a load generator that both start with 256 descriptors hold 600 connections:
/// each raised its soft limit to the hard one (the server says so in its log), and the
/// connections came from the four `--source` addresses in turn, as the server saw them.
fn raises_limits_and_spreads_sources(model: &str) {
    let hard = hard_limit();
    if hard < 2 * CONNECTIONS as u64 {
        return eprintln!("skipped: the hard descriptor limit here is {hard}, below {}", 2 * CONNECTIONS);
    }
    let serve = ["-v", "serve", "--model", model, "--max-connections", "1000", "127.0.0.1:0"];
    let server = Bin::spawn(with_soft_limit(&serve, LOW_SOFT_LIMIT));
    let raised = format!("descriptor limit {hard} (raised from {LOW_SOFT_LIMIT} to the hard limit)");
    assert!(server.wait_for_stderr(&raised, IO_TIMEOUT), "no {raised:?} in the log:\n{}", server.stderr());
    let count = CONNECTIONS.to_string();
    let pid = server.pid().to_string();
    let bench = [
        "bench",
        &server.addr,
        "--mode",
        "idle",
        "-c",
        &count,
        "--duration",
        "0.2",
        "--source",
        "127.0.0.2-127.0.0.5",
        "--server-pid",
        &pid,
        "--json",
    ];
    let run = run_with_stdin(with_soft_limit(&bench, LOW_SOFT_LIMIT), Vec::new(), IO_TIMEOUT * 6);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    assert_eq!((report["held"].as_u64(), report["dropped"].as_u64()), (Some(600), Some(0)), "{report}");
    let sources: Vec<u64> =
        report["sources"].as_array().unwrap().iter().map(|s| s[1].as_u64().unwrap()).collect();
    assert_eq!(sources, [150; 4], "{report}");
    assert!(report["connects_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["server"]["bytes_per_connection"].as_f64().is_some(), "{report}");
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    let expected: BTreeMap<String, usize> =
        (2..=5).map(|last| (format!("127.0.0.{last}"), CONNECTIONS / 4)).collect();
    assert_eq!(peers_by_address(&log), expected, "the server's view of where connections came from");
    assert!(log.contains("peak 600 concurrent connections"), "{log}");
}

#[test]
fn event_loop_raises_limits_and_spreads_sources() {
    raises_limits_and_spreads_sources("event-loop");
}

#[test]
fn io_uring_raises_limits_and_spreads_sources() {
    raises_limits_and_spreads_sources("io-uring");
}

/// `--active N`: N connections echo at a fixed rate beside the idle crowd, every byte
/// checked, and their latency is reported; the idle ones are all still held at the end.
#[test]
fn active_connections_echo_beside_an_idle_crowd() {
    let server = TestServer::start(config(echoloop::Model::EventLoop));
    let addr = server.addr().to_string();
    let run = crate::bench_smoke::bench_at(
        &addr,
        "--mode idle -c 300 --active 20 --rate 2000 --size 64 --warmup 0.2 --duration 0.5 --json",
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    assert_eq!((report["held"].as_u64(), report["requested"].as_u64()), (Some(280), Some(280)), "{report}");
    let active = &report["active"];
    assert_eq!((active["connections"].as_u64(), active["errors"].as_u64()), (Some(20), Some(0)), "{report}");
    assert_eq!(active["mismatches"].as_u64(), Some(0), "{report}");
    assert!(
        active["msgs"].as_u64().unwrap() > 0 && active["latency"]["p99_us"].as_f64().is_some(),
        "{report}"
    );
    assert_eq!(server.stop().peak_connections, 300);
}

/// `--source` is refused where it cannot work, in one line and with exit code 2.
#[test]
fn sources_that_cannot_work_are_usage_errors() {
    for (args, why) in [
        (
            &["unix:/nonexistent.sock", "--mode", "idle", "--source", "127.0.0.2"][..],
            "--source is for TCP targets",
        ),
        (&["[::1]:7", "--mode", "idle", "--source", "127.0.0.2"], "not the same address family"),
        (&["127.0.0.1:7", "--source", "127.0.0.9-127.0.0.2"], "lower address comes first"),
    ] {
        let run = crate::bench_smoke::bench(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(why), "{args:?}: {}", run.stderr);
    }
}
