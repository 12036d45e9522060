//! `--mode chaos`: hostile clients beside verified ones, the server watched through /proc.
//! A server that never closes what it accepted fails the verdict; the real server passes.
//! (Only with the `bench` feature, which brings the subcommand.)
#![cfg(feature = "bench")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::bench_smoke::{bench_at, json};
use crate::util::{Bin, wait_until};

/// Set in the environment of the leaking server's child process: the file it writes its
/// address to (its stdout belongs to the test harness).
const LEAKING_SERVER: &str = "ECHOLOOP_TEST_LEAKING_SERVER";

/// Not a test of its own: the leaking server, run in a child process (this test binary,
/// re-executed with [`LEAKING_SERVER`] set) by `chaos_fails_against_a_leaking_server`, so
/// that its descriptors can be counted apart from this process's. It echoes, and never
/// closes a connection it accepted. It exits when its stdin closes, or after a minute.
#[test]
#[ignore = "the child process of chaos_fails_against_a_leaking_server; runs only there"]
fn leaking_server_process() {
    let addr_file =
        std::env::var_os(LEAKING_SERVER).expect("run only by chaos_fails_against_a_leaking_server");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Written whole, then renamed: the parent never reads half an address.
    let partial = PathBuf::from(&addr_file).with_extension("partial");
    std::fs::write(&partial, listener.local_addr().unwrap().to_string()).unwrap();
    std::fs::rename(&partial, &addr_file).unwrap();
    // The parent's end of our stdin closes when it is done (or dies): then so are we.
    thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let kept: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Ok((mut stream, _)) = listener.accept() else {
            thread::sleep(Duration::from_millis(2));
            continue;
        };
        let kept = Arc::clone(&kept);
        thread::spawn(move || {
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            kept.lock().unwrap().push(stream); // the leak: never closed
        });
    }
}

/// The leaking server's process; killed on drop.
struct Leaking(Child);

impl Drop for Leaking {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the leaking server; its process and address.
fn leaking_server() -> (Leaking, String) {
    let addr_file = std::env::temp_dir().join(format!("echoloop-leaking-{}.addr", std::process::id()));
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["bench_chaos::leaking_server_process", "--exact", "--ignored", "--test-threads", "1"])
        .env(LEAKING_SERVER, &addr_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-run this test binary");
    let server = Leaking(child);
    let mut addr = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            addr = std::fs::read_to_string(&addr_file).ok();
            addr.is_some()
        }),
        "the leaking server did not start"
    );
    let _ = std::fs::remove_file(&addr_file);
    (server, addr.unwrap_or_default())
}

/// A server that never closes what it accepted: the well-behaved clients get every byte,
/// but its descriptors do not come back, and the verdict fails.
#[test]
fn chaos_fails_against_a_leaking_server() {
    let (server, addr) = leaking_server();
    let pid = server.0.id().to_string();
    let flags = format!("--mode chaos -c 2 --hostile 1 --server-pid {pid} --warmup 0.1 --duration 1 --json");
    let run = bench_at(&addr, &flags);
    drop(server);
    assert_eq!(run.code, 1, "a leak must fail the verdict; stderr: {}", run.stderr);
    let report = json(&run);
    let watch = &report["server"];
    assert_eq!(watch["pid"].as_u64().map(|p| p.to_string()), Some(pid), "{report}");
    assert_eq!(watch["came_back"].as_bool(), Some(false), "{report}");
    let (before, after) = (watch["fds"]["before"].as_u64().unwrap(), watch["fds"]["after"].as_u64().unwrap());
    assert!(after >= before + 20, "hundreds of hostile connections leaked: {report}");
    let problems = report["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p.as_str().unwrap().contains("did not come back")), "{report}");
    // The well-behaved clients themselves were served exactly.
    for phase in ["calm", "chaos"] {
        assert_eq!(report[phase]["mismatches"].as_u64(), Some(0), "{report}");
        assert_eq!(report[phase]["errors"].as_u64(), Some(0), "{report}");
    }
    assert!(run.stderr.contains("chaos verdict"), "stderr: {}", run.stderr);
}

/// The real server, found through /proc by the address it listens on, passes: every
/// well-behaved echo exact, every hostile kind at work, descriptors and memory back.
#[test]
fn chaos_passes_against_the_real_server() {
    let server = Bin::serve(&["-q", "127.0.0.1:0"]);
    let run = bench_at(&server.addr, "--mode chaos -c 4 --hostile 1 --warmup 0.2 --duration 2 --json");
    assert_eq!(run.code, 0, "stdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
    let report = json(&run);
    let watch = &report["server"];
    assert_eq!(watch["pid"].as_u64(), Some(u64::from(server.pid())), "found by its listener: {report}");
    assert!(watch["found_by"].as_str().unwrap().contains("listening on"), "{report}");
    assert_eq!(watch["came_back"].as_bool(), Some(true), "{report}");
    assert!(watch["fds"]["peak"].as_u64() > watch["fds"]["before"].as_u64(), "the chaos was seen: {report}");
    assert_eq!(report["problems"].as_array().map(Vec::len), Some(0), "{report}");
    for phase in ["calm", "chaos"] {
        assert!(report[phase]["msgs"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(
            (report[phase]["errors"].as_u64(), report[phase]["mismatches"].as_u64()),
            (Some(0), Some(0)),
            "{report}"
        );
    }
    assert!(report["p99_ratio"].as_f64().is_some(), "{report}");
    let hostile = report["hostile"].as_array().unwrap();
    let kinds: Vec<&str> = hostile.iter().map(|h| h["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reset", "half-close", "connect-close", "slow-bytes", "never-read", "send-close"]);
    for h in hostile {
        assert!(h["connections"].as_u64().unwrap() > 0, "{h}");
        assert_eq!(h["wrong_echoes"].as_u64(), Some(0), "{h}");
    }
}
