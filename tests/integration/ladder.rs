//! The ladder (examples/ladder/, docs/learn.md): every rung echoes byte for byte with
//! clients at once, says `listening on` with the real address, and refuses a bad argument;
//! `ladder compare` measures them all. The mistakes are in `ladder_mistakes.rs`.
//!
//! The rungs are example programs: `cargo test` builds them next to this test binary
//! (`target/release/examples/`). When only this target was built (`cargo test --test
//! integration`), each test says so in one line and returns.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

#[path = "ladder_mistakes.rs"]
mod mistakes;

/// The rungs, bottom to top, by example name.
pub const RUNGS: [&str; 5] = [
    "ladder-1-blocking",
    "ladder-2-thread-per-conn",
    "ladder-3-event-loop",
    "ladder-4-edge-triggered",
    "ladder-5-io-uring",
];

/// The example program `name`, if `cargo test` built it; else `None`, after a note saying so.
pub fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/release/deps/integration-HASH -> target/release/examples/NAME
    let path = exe.parent().and_then(|deps| deps.parent()).map(|dir| dir.join("examples").join(name));
    let found = path.filter(|path| path.is_file());
    if found.is_none() {
        eprintln!("note: skipped: examples/{name} was not built (plain `cargo test` builds it)");
    }
    found
}

/// Start example `name` with `args` then `127.0.0.1:0`, when it can run here: built, and
/// for the io_uring rung, a kernel that allows io_uring.
pub fn start(name: &str, args: &[&str]) -> Option<Bin> {
    let path = example(name)?;
    if name.contains("io-uring")
        && let Some(reason) = crate::io_uring::kernel_refuses()
    {
        eprintln!("note: skipped {name}: {reason}");
        return None;
    }
    let mut all = args.to_vec();
    all.push("127.0.0.1:0");
    Some(Bin::start(&path, &[], &all))
}

/// Read from `stream` until `want` bytes came, or none came for `quiet`, or the server
/// closed or reset the connection: what arrived.
pub fn read_until_quiet(mut stream: &TcpStream, want: usize, quiet: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while got.len() < want {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        }
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    got
}

/// One body, every rung: eight clients at once, each sending 256 KiB of its own random
/// bytes in random chunks while reading the echo, get exactly their bytes back; a client
/// that connects and leaves does no harm; the bound port is real.
fn echoes_exactly(name: &str) {
    let Some(bin) = start(name, &[]) else { return };
    assert_ne!(bin.tcp().port(), 0, "`listening on` must say the port the OS picked");
    let clients: Vec<_> = (0..8u64)
        .map(|seed| {
            let addr = bin.tcp();
            thread::spawn(move || {
                let data = random_bytes(256 * 1024, 100 + seed);
                let got = echo_chunked(connect(addr), data.clone(), 200 + seed);
                assert_same_bytes(&got, &data);
            })
        })
        .collect();
    for client in clients {
        join_bounded(client, Duration::from_secs(60));
    }
    drop(connect(bin.tcp())); // connects and closes without a byte
    assert_same_bytes(&echo_chunked(connect(bin.tcp()), b"again".to_vec(), 7), b"again");
}

#[test]
fn rung_1_blocking_echoes_exactly() {
    echoes_exactly(RUNGS[0]);
}

#[test]
fn rung_2_thread_per_conn_echoes_exactly() {
    echoes_exactly(RUNGS[1]);
}

#[test]
fn rung_3_event_loop_echoes_exactly() {
    echoes_exactly(RUNGS[2]);
}

#[test]
fn rung_4_edge_triggered_echoes_exactly() {
    echoes_exactly(RUNGS[3]);
}

#[test]
fn rung_5_io_uring_echoes_exactly() {
    echoes_exactly(RUNGS[4]);
}

/// Rung 1 serves one client at a time: a second one is connected (by the kernel) but gets
/// no echo while the first is served, and all of it once the first leaves.
#[test]
fn rung_1_serves_one_client_at_a_time() {
    let Some(bin) = start(RUNGS[0], &[]) else { return };
    let mut first = connect(bin.tcp());
    first.write_all(b"one").unwrap();
    assert_eq!(read_n(&first, 3), b"one");
    let mut second = connect(bin.tcp());
    second.write_all(b"two").unwrap();
    assert!(read_until_quiet(&second, 3, Duration::from_secs(1)).is_empty(), "served two at once");
    drop(first);
    assert_eq!(read_n(&second, 3), b"two");
}

/// Run example `path` with `args` to its end: its exit code and its stderr.
fn run_example(path: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(path);
    command.args(args);
    let out = run_to_end(command);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every rung, and the mistakes: a bad argument is one line and exit 2; an address in use,
/// one line naming it and exit 1.
#[test]
fn rungs_refuse_bad_arguments() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    for name in RUNGS.iter().chain(&["ladder-mistakes"]) {
        let Some(path) = example(name) else { return };
        let mistake: &[&str] = if *name == "ladder-mistakes" { &["edge-no-drain"] } else { &[] };
        let with = |args: &[&str]| run_example(&path, &[mistake, args].concat());
        let (code, stderr) = with(&["not-an-address"]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(stderr.starts_with(&format!("{name}: 'not-an-address'")), "{name}: {stderr}");
        assert_eq!(with(&["127.0.0.1:1", "127.0.0.1:2"]).0, Some(2), "{name}: two addresses");
        if name.contains("io-uring") && crate::io_uring::kernel_refuses().is_some() {
            continue; // it could not bind anything here
        }
        let (code, stderr) = with(&[&in_use]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(stderr.contains(&in_use) && stderr.contains("in use"), "{name}: {stderr}");
    }
    let Some(path) = example("ladder-mistakes") else { return };
    let (code, stderr) = run_example(&path, &["no-such-mistake"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no mistake called 'no-such-mistake'"), "{stderr}");
    assert!(stderr.contains("trust-events"), "the usage names every mistake: {stderr}");
}

/// `ladder compare`, cut short: a table with a cell for every rung, every load and every
/// figure; rung 1 marked as serving one connection at a time instead of timing out.
#[test]
fn ladder_compare_measures_every_rung() {
    let Some(ladder) = example("ladder") else { return };
    let started = Instant::now();
    let mut command = Command::new(ladder);
    command.args(["compare", "--no-build", "--rounds", "1", "--duration", "0.3", "--warmup", "0.1"]);
    command.args(["--connections", "1,20", "--idle", "50"]);
    let out = run_with_stdin(command, Vec::new(), Duration::from_secs(120));
    let (table, stderr) = (out.stdout_text(), out.stderr);
    assert_eq!(out.code, 0, "ladder compare failed:\n{stderr}\n{table}");
    let header = table.lines().find(|line| line.starts_with("| rung |")).unwrap_or_default();
    for column in ["1 connection", "20 connections", "memory per idle connection", "system calls per message"]
    {
        assert!(header.contains(column), "no column {column}:\n{table}");
    }
    for rung in ["1 blocking", "2 thread-per-conn", "3 event loop", "4 edge-triggered", "5 io_uring"] {
        let row = table.lines().find(|line| line.starts_with(&format!("| {rung} |")));
        // "| rung | a | b | c | d |": one " | " before each of the 4 figures (2 loads).
        let cells = row.map_or(0, |row| row.matches(" | ").count());
        assert_eq!(cells, 4, "{rung}: not a full row:\n{table}");
    }
    assert!(table.contains("one at a time"), "rung 1's limit is not said:\n{table}");
    for row in table.lines().filter(|line| line.contains("failed")) {
        // Only rung 5, where the kernel refuses io_uring, may fail to start.
        let refused = row.starts_with("| 5 io_uring |") && crate::io_uring::kernel_refuses().is_some();
        assert!(refused, "a cell failed: {row}\n{stderr}");
    }
    eprintln!("ladder compare took {:.1}s", started.elapsed().as_secs_f64());
}
