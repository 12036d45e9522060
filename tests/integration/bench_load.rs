//! Open loop (`--rate`): a stalling server cannot hide its stall, and a generator that falls
//! behind its schedule says so. `--mode churn`: every connection's echo verified, at full
//! speed or at a rate. `--connect-timeout` bounds a server that never answers.
//! (Only with the `bench` feature, which brings the subcommand.)
#![cfg(feature = "bench")]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use echoloop::Model;

use crate::bench_smoke::{bench_at, json};
use crate::util::{TestServer, config, join_bounded};

/// An echo server on threads of this test, one per connection, whose behaviour is
/// `handler`; it accepts until dropped.
pub struct ThreadServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ThreadServer {
    /// Listen on 127.0.0.1:0 and hand each connection (blocking, with 30 s timeouts) to
    /// `handler` on a thread of its own.
    pub fn start(handler: fn(TcpStream)) -> ThreadServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
                        // Ends when the client closes, or at its timeouts.
                        thread::spawn(move || handler(stream));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        ThreadServer { addr, stop, thread: Some(thread) }
    }
}

impl Drop for ThreadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            join_bounded(thread, Duration::from_secs(20));
        }
    }
}

/// How long the stalling server stops once, 200 ms into a connection.
const STALL: Duration = Duration::from_millis(300);

/// Echo exactly, but 200 ms after the first byte stop for [`STALL`] once.
fn echo_with_one_stall(mut stream: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    let (mut first, mut stalled) = (None, false);
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        let start = *first.get_or_insert_with(Instant::now);
        if !stalled && start.elapsed() >= Duration::from_millis(200) {
            thread::sleep(STALL);
            stalled = true;
        }
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn micros(report: &serde_json::Value, field: &str) -> f64 {
    report["latency"][field].as_f64().unwrap_or_else(|| panic!("no latency.{field}: {report}"))
}

/// The server stalls for 300 ms once. Open loop at 200/s, the ~60 messages due during the
/// stall each count from their due time, so p99 shows the stall; closed loop, the same
/// stall delays one message of thousands, and p99 hides it.
#[test]
fn open_loop_latency_counts_from_the_due_time() {
    let stall_us = STALL.as_micros() as f64;
    let server = ThreadServer::start(echo_with_one_stall);
    let addr = server.addr.to_string();
    let open = bench_at(&addr, "-c 1 --rate 200 --warmup 0 --duration 1 --json");
    assert_eq!(open.code, 0, "stderr: {}", open.stderr);
    let report = json(&open);
    assert_eq!(report["mismatches"].as_u64(), Some(0), "{report}");
    assert!(micros(&report, "max_us") >= stall_us * 0.9, "the stall is hidden: {report}");
    assert!(micros(&report, "p99_us") >= stall_us * 0.8, "p99 hides the stall: {report}");
    let rate = &report["rate"];
    assert_eq!(rate["asked_per_s"].as_f64(), Some(200.0), "{report}");
    assert!((150..=210).contains(&rate["due"].as_u64().unwrap()), "{report}");
    assert!(rate["achieved_per_s"].as_f64().unwrap() > 100.0, "{report}");
    assert_eq!(rate["unanswered"].as_u64(), Some(0), "{report}");

    let closed = bench_at(&addr, "-c 1 --warmup 0 --duration 1 --json");
    assert_eq!(closed.code, 0, "stderr: {}", closed.stderr);
    let report = json(&closed);
    assert!(report["rate"].is_null(), "{report}");
    assert!(micros(&report, "max_us") >= stall_us * 0.9, "{report}");
    assert!(micros(&report, "p99_us") < stall_us / 2.0, "closed loop p99 should hide it: {report}");
}

/// Asked for far more than one thread can send: the result is marked behind, in the JSON
/// and with a warning, and every echo is still verified.
#[test]
fn a_generator_that_cannot_keep_up_is_marked_behind() {
    let server = TestServer::start(config(Model::EventLoop));
    let addr = server.addr().to_string();
    let run = bench_at(&addr, "-c 2 --rate 5M --warmup 0 --duration 0.3 --json");
    assert_eq!(run.code, 0, "being behind is not a failure; stderr: {}", run.stderr);
    let report = json(&run);
    assert_eq!(report["rate"]["behind"].as_bool(), Some(true), "{report}");
    assert!(report["rate"]["late_fraction"].as_f64().unwrap() > 0.01, "{report}");
    assert!(report["rate"]["sent_per_s"].as_f64().unwrap() < 5e6, "{report}");
    assert_eq!(report["mismatches"].as_u64(), Some(0), "{report}");
    assert!(run.stderr.contains("fell behind its --rate schedule"), "stderr: {}", run.stderr);
    // Not valid, and why; how late the sends were.
    assert_eq!(report["valid"].as_bool(), Some(false), "{report}");
    let warnings = report["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("fell behind")), "{report}");
    assert_eq!(report["generator"]["delay"]["kind"].as_str(), Some("send-lateness"), "{report}");
    assert!(report["generator"]["delay"]["p99_us"].as_f64().unwrap() >= 999.0, "{report}");
}

/// Churn against the event loop: connections open, echo, close; each verified; the server
/// served at least as many connections as the bench completed.
#[test]
fn churn_verifies_every_connection() {
    let server = TestServer::start(config(Model::EventLoop));
    let addr = server.addr().to_string();
    let run = bench_at(&addr, "--mode churn -c 4 --size 1-3000 --warmup 0.1 --duration 0.5 --json");
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    let total = report["total_connections"].as_u64().unwrap();
    assert!(report["connections"].as_u64().unwrap() > 0 && total > 0, "{report}");
    assert!(report["conns_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(micros(&report, "p99_us") > 0.0, "{report}");
    assert_eq!((report["errors"].as_u64(), report["mismatches"].as_u64()), (Some(0), Some(0)), "{report}");
    assert!(server.stop().connections >= total);
}

/// Echo, but with the 10th byte of every connection flipped.
fn echo_flipping_byte_10(mut stream: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    let mut offset = 0usize;
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if (offset..offset + n).contains(&9) {
            buf[9 - offset] ^= 0x55;
        }
        offset += n;
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Churn checks every echo: one flipped byte per connection fails the run.
#[test]
fn churn_catches_a_corrupted_echo() {
    let server = ThreadServer::start(echo_flipping_byte_10);
    let run =
        bench_at(&server.addr.to_string(), "--mode churn -c 2 --size 64 --warmup 0 --duration 0.3 --json");
    assert_eq!(run.code, 1, "stdout: {}", run.stdout_text());
    let report = json(&run);
    assert!(report["mismatches"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        report["mismatches"].as_u64(),
        report["total_connections"].as_u64(),
        "every one was corrupt: {report}"
    );
    assert!(run.stderr.contains("corrupted echoes"), "stderr: {}", run.stderr);
}

/// Churn at a rate: connections start on schedule, and the rate asked is reported beside
/// the one achieved.
#[test]
fn churn_at_a_rate() {
    let server = TestServer::start(config(Model::EventLoop));
    let addr = server.addr().to_string();
    let run = bench_at(&addr, "--mode churn -c 8 --rate 200 --warmup 0 --duration 0.5 --json");
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    assert_eq!(report["rate"]["asked_per_s"].as_f64(), Some(200.0), "{report}");
    let due = report["rate"]["due"].as_u64().unwrap();
    assert!((90..=101).contains(&due), "200/s for 0.5 s: {report}");
    assert_eq!(
        report["connections"].as_u64(),
        Some(due - report["rate"]["unanswered"].as_u64().unwrap()),
        "{report}"
    );
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
}

/// A server that accepts (the kernel's backlog does) but never answers the ping: the bench
/// gives up after --connect-timeout, not its default, and says why.
#[test]
fn connect_timeout_bounds_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap(); // never accepts, never reads
    let addr = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    let run = bench_at(&addr, "-c 1 --connect-timeout 0.3 --duration 0.2");
    let took = started.elapsed();
    drop(listener);
    assert_eq!(run.code, 1, "stdout: {}", run.stdout_text());
    assert!(run.stderr.contains("no answer to a 1-byte ping within 0.3s"), "stderr: {}", run.stderr);
    assert!(took < Duration::from_secs(4), "took {took:?}");
}
