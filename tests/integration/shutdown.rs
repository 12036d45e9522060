//! Graceful shutdown through signals: stop accepting and reading, flush what is pending
//! within `--shutdown-grace`, close, log the summary line, exit 0.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::util::*;

/// SIGTERM with echoes pending: the client gets an exact prefix, then a clean EOF (not a reset).
#[test]
fn sigterm_flushes_pending_echoes_then_exits_0() {
    // Regression: the loop used to close a connection as soon as its pending bytes were
    // written. With the client's unread bytes still in the receive queue, Linux answers
    // that close with a reset and drops the echoes still in the send queue: the client got
    // ECONNRESET and lost bytes the summary counted as echoed. Now the server sends its FIN
    // and lingers (discarding input) until the client has everything.

    // A fixed receive buffer keeps the kernel from growing it to many MiB; not under the
    // 64 KiB loopback MSS, where Linux moves data in 200 ms window probes.
    let bin = Bin::serve(&["--send-buffer", "4096", "--recv-buffer", "64K", "127.0.0.1:0"]);
    // A small client send buffer: what it still holds flows on to the lingering server,
    // which discards it; small, so that takes no time.
    let mut stream = connect_with_buffers(bin.tcp(), Some(64 * 1024), None);
    let data = random_bytes(8 << 20, 51);
    let written = write_until_blocked(&stream, &data);
    assert!(written < data.len(), "the server took 8 MiB without our reading");

    bin.signal(libc::SIGTERM);
    // Once the loop has begun shutting down it reads nothing more; what it read is echoed.
    assert!(bin.wait_for_stderr("flushing pending echoes", IO_TIMEOUT), "log:\n{}", bin.stderr());
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("a clean EOF after the pending echoes");
    assert!(!got.is_empty(), "nothing was echoed");
    assert!(got.len() <= written);
    assert_same_bytes(&got, &data[..got.len()]);
    drop(stream);

    let (status, log) = bin.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    assert_eq!(summary_echoed_bytes(&log), got.len() as u64, "log:\n{log}");
}

/// SIGINT on a server with no connections: exit 0 at once, with the summary line.
#[test]
fn sigint_on_idle_server_exits_0_promptly() {
    // Regression: `listening on` used to be printed before the signal handlers were
    // installed, so a signal sent as soon as the line appeared killed the server (status
    // "signal: 2") instead of stopping it.
    let bin = Bin::serve(&["127.0.0.1:0"]);
    let start = Instant::now();
    bin.signal(libc::SIGINT);
    let (status, log) = bin.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}, as long as the grace period",
        start.elapsed()
    );
    assert!(log.contains("summary: served 0 connections, echoed 0 bytes"), "log:\n{log}");
}

/// A client that never reads cannot hold a shutdown past `--shutdown-grace`: warning, exit 0.
#[test]
fn grace_period_ends_a_shutdown_that_cannot_finish() {
    let grace = Duration::from_millis(500);
    let bin = Bin::serve(&["--shutdown-grace", "0.5", "--send-buffer", "4096", "127.0.0.1:0"]);
    let stream = connect(bin.tcp());
    let written = write_until_blocked(&stream, &random_bytes(8 << 20, 52));
    assert!(written > 0);

    let start = Instant::now();
    bin.signal(libc::SIGTERM);
    let (status, log) = bin.wait(grace + Duration::from_secs(10));
    let took = start.elapsed();
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(took >= grace, "exited after {took:?}, before the grace period was over");
    assert!(log.contains("WARN") && log.contains("grace period over"), "no warning:\n{log}");
    assert!(log.contains("summary: "), "no summary line:\n{log}");
    drop(stream);
}

/// Idle clients do not hold a shutdown up: they get a clean EOF at once, not after the grace.
#[test]
fn idle_clients_are_closed_at_once_on_shutdown() {
    use echoloop::Model;
    use std::io::Write;
    let grace = Duration::from_secs(20);
    let server = TestServer::start(config(Model::EventLoop).with_shutdown_grace(grace));
    let silent = server.connect();
    let mut talked = server.connect();
    talked.write_all(b"hello").unwrap();
    assert_eq!(read_n(&talked, 5), b"hello");
    let start = Instant::now();
    let summary = server.stop();
    assert!(start.elapsed() < grace / 2, "shutdown waited {:?} for idle clients", start.elapsed());
    assert_eq!(summary.connections, 2);
    for mut client in [silent, talked] {
        assert_eq!(client.read(&mut [0; 8]).expect("a clean EOF"), 0);
    }
}

/// A Unix socket client with echoes pending at shutdown also gets an exact prefix and EOF.
#[test]
fn unix_socket_shutdown_with_pending_echoes() {
    let path = SocketPath::new("shutdown");
    let server = TestServer::start(path.config(echoloop::Model::EventLoop));
    let mut stream = server.connect_unix();
    let data = random_bytes(8 << 20, 53);
    let written = write_until_blocked(&stream, &data);
    assert!(written < data.len(), "the server took 8 MiB without our reading");

    // Stop it from another thread: the stop only completes once we have read our echoes.
    let stopper = std::thread::spawn(move || server.stop());
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("a clean EOF after the pending echoes");
    drop(stream);
    let summary = join_bounded(stopper, IO_TIMEOUT);
    assert!(!got.is_empty() && got.len() <= written);
    assert_same_bytes(&got, &data[..got.len()]);
    assert_eq!(summary.bytes_echoed, got.len() as u64);
    assert!(!path.0.exists());
}
