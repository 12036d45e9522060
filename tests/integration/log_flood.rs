//! A client cannot flood the log: conditions it causes over and over (frames over
//! `--max-frame`, connections over `--max-connections`) are counted exactly, and logged once
//! and then at most once per window with a count, however fast they come.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use super::metrics::scrape_until;
use super::util::{Bin, connect};
use super::variants::Variant;

/// How long the flood lasts, from each of [`THREADS`] client threads.
const FLOOD: Duration = Duration::from_millis(1500);
const THREADS: usize = 4;

/// Run `attempt` in a loop from [`THREADS`] threads for [`FLOOD`]; the number of attempts.
fn flood(addr: SocketAddr, attempt: fn(SocketAddr)) -> u64 {
    let attempts = AtomicU64::new(0);
    thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let end = Instant::now() + FLOOD;
                while Instant::now() < end {
                    attempt(addr);
                    attempts.fetch_add(1, Relaxed);
                }
            });
        }
    });
    attempts.into_inner()
}

/// Lines at WARN or above in `stderr` that contain `needle`.
fn warnings(stderr: &str, needle: &str) -> usize {
    stderr.lines().filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains(needle)).count()
}

/// Thousands of frames over --max-frame, each on its own connection, give one warning line
/// (the window is 10 s), and the counter counts every one.
fn oversize_frames_are_counted_not_each_logged(variant: Variant) {
    let args = [
        variant.args(),
        &["127.0.0.1:0", "--framing", "line", "--max-frame", "16", "--metrics", "127.0.0.1:0"],
    ]
    .concat();
    let server = Bin::serve(&args);
    let attempts = flood(server.tcp(), |addr| {
        let mut stream = connect(addr);
        // Over the limit: the server refuses the frame and closes once we close.
        let _ = stream.write_all(&[b'x'; 64]);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.read_to_end(&mut Vec::new());
    });
    let listener = server.addr.clone();
    scrape_until(&server, |m| m.value("echoloop_frames_too_large_total", &listener) == attempts);
    let stderr = server.stderr();
    let lines = warnings(&stderr, "--max-frame");
    let workers = if variant == Variant::Workers2 { 2 } else { 1 };
    assert!(
        (1..=2 * workers).contains(&lines),
        "{lines} warning lines for {attempts} oversize frames:\n{stderr}"
    );
    assert!(attempts > 100, "the flood was too small to show anything: {attempts}");
}
for_variants!(oversize_frames_are_counted_not_each_logged);

/// Thousands of connections over --max-connections give one warning line (per worker), and
/// the counters count every one: each is refused, or, with two workers, served by the worker
/// whose one place is free.
fn refused_connections_are_counted_not_each_logged(variant: Variant) {
    let args =
        [variant.args(), &["127.0.0.1:0", "--max-connections", "1", "--metrics", "127.0.0.1:0"]].concat();
    let server = Bin::serve(&args);
    let mut holder = connect(server.tcp());
    holder.write_all(b"hold").unwrap();
    holder.read_exact(&mut [0u8; 4]).unwrap(); // served: it holds the one place
    let attempts = flood(server.tcp(), |addr| drop(TcpStream::connect(addr).expect("connect")));
    let listener = server.addr.clone();
    let m = scrape_until(&server, |m| {
        let rejected = m.labelled("echoloop_connections_rejected_total", &listener, "max_connections");
        let served = m.value("echoloop_connections_accepted_total", &listener) - 1; // not the holder
        rejected + served == attempts && m.value("echoloop_connections_open", &listener) == 1
    });
    let rejected = m.labelled("echoloop_connections_rejected_total", &listener, "max_connections");
    let workers = if variant == Variant::Workers2 { 2 } else { 1 };
    assert!(rejected >= attempts / (2 * workers), "{rejected} of {attempts} refused");
    let stderr = server.stderr();
    let lines = warnings(&stderr, "max-connections");
    assert!(
        (1..=2 * workers as usize).contains(&lines),
        "{lines} warning lines for {rejected} refused connections:\n{stderr}"
    );
    assert!(attempts > 100, "the flood was too small to show anything: {attempts}");
    drop(holder);
}
for_variants!(refused_connections_are_counted_not_each_logged, needs: [Concurrency]);
