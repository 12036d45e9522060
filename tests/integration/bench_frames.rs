//! `--framing line|length` and `udp:` targets: against small framed and UDP echo servers on
//! threads of this test (which can also misbehave), and against the real `serve --framing`
//! and `serve udp:`.
//! (Only with the `bench` feature, which brings the subcommand.)
#![cfg(feature = "bench")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::bench_load::ThreadServer;
use crate::bench_smoke::{bench_at, json};
use crate::util::{Bin, join_bounded};

/// Echo each complete line as one write, never half a line.
fn echo_lines(stream: TcpStream) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        if line.last() != Some(&b'\n') || writer.write_all(&line).is_err() {
            return; // EOF mid-line, or the client went away
        }
        line.clear();
    }
}

/// Read one length-prefixed frame: its payload length and the whole frame.
fn read_frame(stream: &mut TcpStream) -> Option<(u32, Vec<u8>)> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).ok()?;
    let len = u32::from_be_bytes(prefix);
    let mut frame = prefix.to_vec();
    frame.resize(4 + len as usize, 0);
    stream.read_exact(&mut frame[4..]).ok()?;
    Some((len, frame))
}

/// Echo each whole length-prefixed frame as one write.
fn echo_frames(mut stream: TcpStream) {
    while let Some((_, frame)) = read_frame(&mut stream) {
        if stream.write_all(&frame).is_err() {
            return;
        }
    }
}

/// Echo each frame whole, payload intact, but with its declared length one too big
/// (except for the 1-byte ping that opens each connection).
fn echo_frames_with_a_wrong_length(mut stream: TcpStream) {
    while let Some((len, mut frame)) = read_frame(&mut stream) {
        if len > 1 {
            frame[..4].copy_from_slice(&(len + 1).to_be_bytes());
        }
        if stream.write_all(&frame).is_err() {
            return;
        }
    }
}

/// Lines of 1 byte (just the `\n`) to 2000 bytes: each echoed line checked whole.
#[test]
fn lines_of_varying_sizes_come_back_whole() {
    let server = ThreadServer::start(echo_lines);
    let run = bench_at(
        &server.addr.to_string(),
        "--framing line --size 1-2000 -c 3 --pipeline 4 --warmup 0 --duration 0.4 --json",
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    assert_eq!(
        (report["framing"].as_str(), report["size"].as_u64(), report["size_max"].as_u64()),
        (Some("line"), Some(1), Some(2000)),
        "{report}"
    );
    assert!(report["msgs"].as_u64().unwrap() > 0, "{report}");
    assert_eq!((report["errors"].as_u64(), report["mismatches"].as_u64()), (Some(0), Some(0)), "{report}");
}

/// Length-prefixed frames from empty to 70 KB (bigger than one write), open loop.
#[test]
fn length_frames_including_empty_ones_come_back_whole() {
    let server = ThreadServer::start(echo_frames);
    let run = bench_at(
        &server.addr.to_string(),
        "--framing length --size 0-70000 -c 2 --rate 400 --warmup 0 --duration 0.4 --json",
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    assert_eq!((report["framing"].as_str(), report["size"].as_u64()), (Some("length"), Some(0)), "{report}");
    assert!(report["msgs"].as_u64().unwrap() > 0, "{report}");
    assert_eq!((report["errors"].as_u64(), report["mismatches"].as_u64()), (Some(0), Some(0)), "{report}");
}

/// A frame whose payload is right but whose length prefix is wrong is a wrong frame.
#[test]
fn a_wrong_length_prefix_is_a_mismatch() {
    let server = ThreadServer::start(echo_frames_with_a_wrong_length);
    let run = bench_at(
        &server.addr.to_string(),
        "--framing length --size 100 -c 1 --warmup 0 --duration 0.3 --json",
    );
    assert_eq!(run.code, 1, "stdout: {}", run.stdout_text());
    assert!(json(&run)["mismatches"].as_u64().unwrap() > 0, "{}", run.stdout_text());
}

/// A UDP echo service on a thread of this test: `mangle` decides, datagram by datagram
/// (numbered from 0), whether to answer and with what.
struct UdpServer {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    fn start(mangle: fn(u64, &mut Vec<u8>) -> bool) -> UdpServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = format!("udp:{}", socket.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut count = 0;
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue }; // timeout: look at stop
                let mut datagram = buf[..n].to_vec();
                if mangle(count, &mut datagram) {
                    let _ = socket.send_to(&datagram, from);
                }
                count += 1;
            }
        });
        UdpServer { addr, stop, thread: Some(thread) }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            join_bounded(thread, Duration::from_secs(20));
        }
    }
}

/// A short UDP run; a datagram unanswered for `loss_timeout` seconds is lost.
fn udp_bench(server: &UdpServer, loss_timeout: &str) -> (i32, serde_json::Value, String) {
    let flags = format!(
        "-c 2 --pipeline 4 --size 8-1400 --warmup 0 --duration 0.4 --connect-timeout {loss_timeout} --json"
    );
    let run = bench_at(&server.addr, &flags);
    (run.code, json(&run), run.stderr)
}

/// Every datagram echoed exactly: none lost, none wrong.
#[test]
fn udp_datagrams_are_echoed_and_checked() {
    let server = UdpServer::start(|_, _| true);
    // A long loss timeout: on a busy machine a reply can take a while; none may be lost.
    let (code, report, stderr) = udp_bench(&server, "5");
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(report["echoed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!((report["lost"].as_u64(), report["mismatches"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!(report["sent"].as_u64(), report["echoed"].as_u64(), "{report}");
}

/// A service that drops every 10th datagram: losses are counted, and are not a failure.
#[test]
fn udp_loss_is_counted_not_failed() {
    let server = UdpServer::start(|i, _| i % 10 != 9);
    let (code, report, stderr) = udp_bench(&server, "0.2");
    assert_eq!(code, 0, "loss is not corruption; stderr: {stderr}");
    let (lost, sent) = (report["lost"].as_u64().unwrap(), report["sent"].as_u64().unwrap());
    assert!(lost > 0 && lost * 5 < sent, "about a tenth lost: {report}");
    assert_eq!(report["mismatches"].as_u64(), Some(0), "{report}");
}

/// A service that flips the last byte of every 7th datagram (past its sequence number):
/// mismatches fail the run.
#[test]
fn udp_wrong_replies_are_mismatches() {
    let server = UdpServer::start(|i, d| {
        if i % 7 == 6 && d.len() > 8 {
            let last = d.len() - 1;
            d[last] ^= 1;
        }
        true
    });
    let (code, report, _) = udp_bench(&server, "5");
    assert_eq!(code, 1, "{report}");
    assert!(report["mismatches"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["lost"].as_u64(), Some(0), "a wrong reply is not a loss: {report}");
}

/// The real server's framings: lines and length-prefixed frames of varying sizes (empty
/// frames, and frames larger than one read, included) come back whole.
#[test]
fn the_real_server_echoes_whole_frames() {
    for (framing, sizes) in [("line", "1-5000"), ("length", "0-70000")] {
        let server = Bin::serve(&["--framing", framing, "--max-frame", "128K", "-q", "127.0.0.1:0"]);
        let flags =
            format!("--framing {framing} --size {sizes} -c 3 --pipeline 2 --warmup 0 --duration 0.4 --json");
        let run = bench_at(&server.addr, &flags);
        assert_eq!(run.code, 0, "{framing}: stderr: {}", run.stderr);
        let report = json(&run);
        assert!(report["msgs"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(
            (report["errors"].as_u64(), report["mismatches"].as_u64()),
            (Some(0), Some(0)),
            "{report}"
        );
    }
}

/// The real server's UDP echo: every datagram back, exact.
#[test]
fn the_real_server_echoes_datagrams() {
    let server = Bin::serve(&["-q", "udp:127.0.0.1:0"]);
    assert!(server.addr.starts_with("udp:"), "{}", server.addr);
    let run = bench_at(&server.addr, "-c 2 --pipeline 4 --size 8-1400 --warmup 0 --duration 0.4 --json");
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = json(&run);
    assert!(report["echoed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!((report["lost"].as_u64(), report["mismatches"].as_u64()), (Some(0), Some(0)), "{report}");
}
