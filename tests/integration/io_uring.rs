//! What is particular to the io-uring model: a provided-buffer ring that runs dry, a client
//! that does not read (no recv armed at the cap, memory flat), sends the kernel takes only
//! part of, and a crowd of idle connections at shutdown. The behaviours every model shares
//! run against it in `models.rs`.
//!
//! Every test here is skipped, with the reason printed, where the kernel refuses io_uring
//! (ENOSYS, EPERM under seccomp or `kernel.io_uring_disabled`, a kernel before 5.19); any
//! other failure to start is a failure.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use echoloop::{Model, Server, UringRecv};

use crate::live_stats::{field, line_on_sigusr1};
use crate::util::*;

/// Why the io-uring model cannot run on this kernel, or `None` when it can. Asked once per
/// test binary, through the same probe `echoloop serve --model io-uring` runs.
pub fn kernel_refuses() -> Option<String> {
    static REFUSAL: OnceLock<Option<String>> = OnceLock::new();
    REFUSAL
        .get_or_init(|| match Server::bind(&config(Model::IoUring)) {
            Err(echoloop::Error::Io(e)) if e.kind() == ErrorKind::Unsupported => Some(e.to_string()),
            _ => None, // it binds (dropped at once), or fails in a way the tests should see
        })
        .clone()
}

/// Return from the test, saying why, when the kernel refuses io_uring.
macro_rules! skip_if_kernel_refuses {
    () => {
        if let Some(reason) = kernel_refuses() {
            return eprintln!("skipped: {reason}");
        }
    };
}

/// The io-uring server binary with `env` set and `args` after `serve --model io-uring`.
fn serve_io_uring(env: &[(&str, &str)], args: &[&str]) -> Bin {
    let mut full = vec!["--model", "io-uring"];
    full.extend_from_slice(args);
    Bin::serve_env(env, &full)
}

/// SIGTERM, then the exit status must be 0; returns the whole log.
fn stop(bin: Bin) -> String {
    bin.signal(libc::SIGTERM);
    let (status, log) = bin.wait(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}; log:\n{log}");
    log
}

/// The `N` of the debug line "N recvs found the buffer ring empty".
fn ring_empty_count(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|line| line.contains("recvs found the buffer ring empty"))
        .unwrap_or_else(|| panic!("no buffer-ring line in:\n{log}"));
    let after = line.split("io_uring: ").nth(1).expect("the count after 'io_uring: '");
    after.split(' ').next().unwrap().parse().expect("a count")
}

/// `clients` clients connect, then all at once (so a few buffers cannot go round) send
/// `size` random bytes each in random chunks; each must read back exactly what it sent.
fn echo_all_at_once(addr: std::net::SocketAddr, clients: usize, size: usize, seed: u64) {
    let start = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients as u64)
        .map(|i| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let data = random_bytes(size, seed + i);
                let stream = connect(addr);
                start.wait();
                assert_same_bytes(&echo_chunked(stream, data.clone(), seed + 1000 + i), &data);
            })
        })
        .collect();
    threads.into_iter().for_each(|t| join_bounded(t, Duration::from_secs(60)));
}

/// Four receive buffers for 48 clients sending at once: recvs find the ring empty (ENOBUFS)
/// again and again, are armed again, and every client still gets exactly its bytes back.
#[test]
fn a_buffer_ring_that_runs_dry_still_echoes_exactly() {
    skip_if_kernel_refuses!();
    let env = [("RUST_LOG", "echoloop=debug")];
    let bin = serve_io_uring(&env, &["--uring-buffers", "4", "--uring-buffer-size", "2048", "127.0.0.1:0"]);
    echo_all_at_once(bin.tcp(), 48, 256 * 1024, 100);
    let log = stop(bin);
    assert_eq!(summary_echoed_bytes(&log), 48 * 256 * 1024);
    assert!(ring_empty_count(&log) > 0, "the ring never ran dry; the test proves nothing:\n{log}");
}

/// A client that writes and does not read: once `--max-pending` bytes are owed, no recv is
/// armed, its bytes wait in the kernel, and server memory stays flat; when it reads, every
/// byte comes back in order.
#[test]
fn a_client_that_does_not_read_is_held_at_the_cap_then_echoed_exactly() {
    skip_if_kernel_refuses!();
    let bin = serve_io_uring(
        &[],
        &[
            "--uring-buffers=64", // 4 MiB of buffers, warmed up below
            "--max-pending=64K",
            "--send-buffer=64K",
            "--recv-buffer=64K",
            "127.0.0.1:0",
        ],
    );
    let addr = bin.tcp();
    let warm = random_bytes(4 << 20, 41); // cycles through every provided buffer
    assert_same_bytes(&echo_chunked(connect(addr), warm.clone(), 42), &warm);
    let baseline = proc_status_kib(bin.pid(), "VmRSS");

    let clients: Vec<TcpStream> =
        (0..4).map(|_| connect_with_buffers(addr, Some(64 << 10), Some(64 << 10))).collect();
    let data = random_bytes(32 << 20, 43);
    let written: Vec<usize> = clients.iter().map(|client| write_until_blocked(client, &data)).collect();
    for &n in &written {
        assert!(n < data.len(), "wrote {n} bytes without blocking: no backpressure");
    }
    let held = proc_status_kib(bin.pid(), "VmRSS");
    eprintln!("written {written:?}; server RSS {baseline} KiB before, {held} KiB while held");
    // Four caps of 64 KiB plus allocator slack; far below the MiBs each client pushed.
    assert!(held.saturating_sub(baseline) < 4 * 1024, "server memory grew from {baseline} KiB to {held} KiB");

    for (client, &n) in clients.iter().zip(&written) {
        assert_same_bytes(&read_n(client, n), &data[..n]);
        let rest = &data[n..n + 100_000]; // the connection flows again after the stall
        (&*client).write_all(rest).unwrap();
        assert_same_bytes(&read_n(client, rest.len()), rest);
    }
    drop(clients);
    stop(bin);
}

/// `--max-pending` holds exactly with every way of receiving this kernel offers, multishot
/// ones included (the kernel stops them at the byte limit they were armed with): a client
/// that writes and never reads leaves at most the cap pending in the server, not a byte
/// more (docs/models.md), read from the live statistics (SIGUSR1). Once it reads, every
/// byte comes back exactly once, and the connection flows again.
#[test]
fn pending_stays_within_max_pending_in_every_receive_mode() {
    skip_if_kernel_refuses!();
    const CAP: u64 = 10_000; // not a multiple of the buffer size: a recv must stop short
    const BUFFER: u64 = 4096;
    for mode in [UringRecv::Single, UringRecv::Multishot, UringRecv::Bundle] {
        if let Err(e) = Server::bind(&config(Model::IoUring).with_uring_recv(mode)) {
            eprintln!("--uring-recv {}: skipped: {e}", mode.name());
            continue;
        }
        let args = ["--uring-recv", mode.name(), "--max-pending=10000", "--uring-buffer-size=4096"];
        let bin = serve_io_uring(&[], &[&args[..], &["--send-buffer=4K", "127.0.0.1:0"]].concat());
        let client = connect_with_buffers(bin.tcp(), Some(16 << 10), Some(4 << 10));
        let data = random_bytes(8 << 20, 70);
        let written = write_until_blocked(&client, &data);
        assert!(written < data.len(), "{}: wrote all {written} bytes: no backpressure", mode.name());
        let pending = field(&line_on_sigusr1(&bin), "pending");
        eprintln!("--uring-recv {}: written {written}, pending {pending}", mode.name());
        assert!(pending <= CAP, "{}: pending {pending} > {CAP}", mode.name());
        assert!(pending > CAP - BUFFER, "{}: pending {pending}: the cap never stopped it", mode.name());

        assert_same_bytes(&read_n(&client, written), &data[..written]);
        let rest = &data[written..written + 100_000]; // it flows again after the stall
        (&client).write_all(rest).unwrap();
        assert_same_bytes(&read_n(&client, rest.len()), rest);
        drop(client);
        assert_eq!(summary_echoed_bytes(&stop(bin)), (written + rest.len()) as u64, "{}", mode.name());
    }
}

/// Tiny pending caps (even one byte) still echo exactly: a recv never asks for more than
/// the room left, and the cap bounds memory only.
#[test]
fn tiny_pending_caps_still_echo_exactly() {
    skip_if_kernel_refuses!();
    for cap in [1, 7, 4099] {
        let config = config(Model::IoUring).with_max_pending(cap).with_send_buffer(Some(4096));
        let server = TestServer::start(config);
        let data = random_bytes(96 * 1024, 44 + cap as u64);
        assert_same_bytes(&echo_chunked(server.connect(), data.clone(), 45), &data);
        assert_eq!(server.stop().bytes_echoed, data.len() as u64, "cap {cap}");
    }
}

/// `--send-buffer 4K`: most sends are short, so the rest goes out of the outbox in several
/// sends; 4 MiB per client still come back exactly, from four clients at once.
#[test]
fn partial_sends_echo_several_mib_exactly() {
    skip_if_kernel_refuses!();
    let config = config(Model::IoUring).with_send_buffer(Some(4096));
    let server = TestServer::start(config);
    let addr = server.tcp();
    let size = 4 << 20;
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            thread::spawn(move || {
                let data = random_bytes(size, 50 + i);
                assert_same_bytes(&echo_chunked(connect(addr), data.clone(), 60 + i), &data);
            })
        })
        .collect();
    threads.into_iter().for_each(|t| join_bounded(t, Duration::from_secs(60)));
    assert_eq!(server.stop().bytes_echoed, 4 * size as u64);
}

/// A thousand idle connections (each served once, then quiet) cost no buffer each, and a
/// SIGTERM closes them all promptly: every client sees EOF, the summary counts them all.
#[test]
fn a_thousand_idle_connections_then_shutdown() {
    skip_if_kernel_refuses!();
    // Buffers are taken in ring order, so every one gets touched in time: a small ring,
    // gone round before the baseline, keeps that fixed cost out of the per-connection figure.
    let bin = serve_io_uring(&[], &["--uring-buffers", "64", "127.0.0.1:0"]);
    let addr = bin.tcp();
    let mut first = connect(addr);
    for _ in 0..128 {
        first.write_all(b"warm").unwrap();
        assert_eq!(read_n(&first, 4), b"warm");
    }
    let baseline = proc_status_kib(bin.pid(), "VmRSS");
    let mut clients: Vec<TcpStream> = (0..999).map(|_| connect(addr)).collect();
    clients.push(first);
    for (i, client) in clients.iter_mut().enumerate() {
        let message = format!("client {i}");
        client.write_all(message.as_bytes()).unwrap();
        assert_eq!(read_n(client, message.len()), message.as_bytes());
    }
    let idle = proc_status_kib(bin.pid(), "VmRSS");
    let per_connection = (idle.saturating_sub(baseline) * 1024) / 1000;
    eprintln!("server RSS {baseline} KiB -> {idle} KiB with 1000 idle connections: {per_connection} B each");
    assert!(per_connection < 4096, "{per_connection} bytes per idle connection: a buffer each?");

    let started = Instant::now();
    let log = stop(bin);
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    assert!(log.contains("summary: served 1000 connections"), "log:\n{log}");
    for client in &mut clients {
        let mut rest = Vec::new();
        match client.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "unexpected bytes {rest:?}"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        }
    }
}

/// Clients mid-echo at SIGTERM: the server stops receiving (cancelling the armed recvs),
/// but what it did receive, including what a recv brought as it was being cancelled, is
/// echoed without a hole: each client reads back an exact prefix of what it sent, then EOF,
/// and the summary counts exactly the bytes they read.
#[test]
fn shutdown_echoes_an_exact_prefix_of_what_was_sent() {
    skip_if_kernel_refuses!();
    let bin = serve_io_uring(&[], &["--send-buffer", "4K", "127.0.0.1:0"]);
    let clients: Vec<TcpStream> =
        (0..8).map(|_| connect_with_buffers(bin.tcp(), Some(4096), Some(4096))).collect();
    let data = random_bytes(2 << 20, 70);
    for client in &clients {
        let n = write_until_blocked(client, &data);
        assert!(n < data.len(), "wrote {n} bytes without blocking");
        client.shutdown(Shutdown::Write).unwrap();
    }
    bin.signal(libc::SIGTERM);
    let mut total = 0;
    for client in &clients {
        let mut echoed = Vec::new();
        let _ = (&*client).read_to_end(&mut echoed); // EOF, or a reset after the grace period
        assert_same_bytes(&echoed, &data[..echoed.len()]);
        total += echoed.len() as u64;
    }
    let (status, log) = bin.wait(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert_eq!(summary_echoed_bytes(&log), total);
}

/// Out of descriptors (EMFILE): the accept fails, the server pauses 100 ms before arming it
/// again (not spinning), and serves the queued clients once descriptors free up.
///
/// io_uring's accept reads RLIMIT_NOFILE when the request is armed, and a multishot accept
/// stays armed, so lowering the limit of a running server (as `limits.rs` does for the event
/// loop) would not be seen. The limit is set before the server starts instead, and clients
/// use up the descriptors. (This is io-uring's form of
/// `reliability::descriptor_exhaustion_logs_a_few_lines_then_recovers`, and runs as its
/// `io_uring` test: see `variants::Need::LimitLoweredWhileRunning`.)
pub(crate) fn out_of_descriptors_backs_off_then_serves_the_queue() {
    skip_if_kernel_refuses!();
    const LIMIT: usize = 64;
    let script = format!("ulimit -n {LIMIT} && exec \"$0\" serve --model io-uring 127.0.0.1:0");
    let bin =
        Bin::start(std::path::Path::new("/bin/sh"), &[], &["-c", &script, env!("CARGO_BIN_EXE_echoloop")]);
    let addr = bin.tcp();
    let echo = |client: &mut TcpStream, message: &[u8]| {
        client.write_all(message).unwrap();
        assert_eq!(read_n(client, message.len()), message);
    };
    let leave = |client: &TcpStream| {
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!((&*client).read(&mut [0; 8]).unwrap(), 0); // after the server closed it
    };
    let mut first = connect(addr); // the server has made its ring and eventfd by now
    echo(&mut first, b"ready?");
    leave(&first);
    let open = std::fs::read_dir(format!("/proc/{}/fd", bin.pid()))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .filter(|&fd| fd < LIMIT) // inherited descriptors above the limit take no place under it
        .count();
    let mut fillers: Vec<TcpStream> = (0..LIMIT - open - 2).map(|_| connect(addr)).collect();
    fillers.iter_mut().for_each(|client| echo(client, b"filler"));
    let start = Instant::now();
    let mut served: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    served.iter_mut().for_each(|client| echo(client, b"the last two descriptors"));
    let mut queued: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    assert!(bin.wait_for_stderr("out of resources", IO_TIMEOUT), "no EMFILE warning:\n{}", bin.stderr());
    for client in &mut queued {
        client.write_all(b"waiting").unwrap(); // sits in the kernel until we are accepted
    }
    thread::sleep(Duration::from_millis(1000)); // about 10 pauses of 100 ms
    served.iter().for_each(leave);
    for client in &queued {
        assert_eq!(read_n(client, 7), b"waiting");
        leave(client);
    }
    // Retries are paced (100 ms apart): a spinning loop would log a warning per attempt.
    let log = bin.stderr();
    let warnings = log.matches("pausing accepts").count();
    let paced = (start.elapsed().as_millis() / 100) as usize + 5;
    assert!(warnings <= paced, "{warnings} accept warnings in {:?}: not backing off", start.elapsed());
    // Regression (the noisy back-off, in this model): every pause ended with an INFO line
    // ("resuming accepting connections"), ten a second for as long as descriptors were
    // short. The back-off log says when the episode starts and ends; a pause's end is debug.
    let infos = log.lines().filter(|line| line.contains(" INFO ") && line.contains("accept")).count();
    let recoveries = log.matches("accepting again").count();
    assert!(infos == recoveries && recoveries <= warnings, "an INFO line per pause:\n{log}");
    drop(fillers);
    stop(bin);
}

/// The kernel's refusal, where it refuses, is one line naming what is missing, and exit 1;
/// where it does not, `serve --model io-uring` starts. Either way, no panic.
#[test]
fn refusal_is_one_line_and_exit_1() {
    match kernel_refuses() {
        Some(reason) => {
            let (code, _, stderr) = run_bin(&["serve", "--model", "io-uring", "127.0.0.1:0"]);
            assert_eq!(code, 1, "stderr: {stderr}");
            assert_eq!(stderr.trim(), format!("echoloop: {reason}"));
        }
        None => drop(serve_io_uring(&[], &["127.0.0.1:0"])), // starts, prints `listening on`
    }
}

/// A bad buffer-ring setting is a usage error naming the flag, before the server binds.
#[test]
fn a_bad_buffer_setting_is_named() {
    let (code, stdout, stderr) =
        run_bin(&["serve", "--model", "io-uring", "--uring-buffers", "1000", "127.0.0.1:0"]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stdout.is_empty(), "bound before checking: {stdout}");
    assert!(
        stderr.contains("--uring-buffers 1000: the kernel's buffer ring takes a power of two"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

/// Buffers the system will not give (here: more than the address space the process may
/// have, `ulimit -v`) are refused while the server binds, before `listening on`: one line
/// naming the settings and the cause, exit 1. (They were allocated once the server ran, after
/// it had announced itself, and the error was a bare "Cannot allocate memory".)
#[test]
fn buffers_the_system_refuses_are_named_before_listening() {
    skip_if_kernel_refuses!();
    // 1 GiB of address space: room for the program, not for 32768 buffers of 64 KiB (2 GiB).
    let script = "ulimit -v 1048576 && exec \"$0\" serve --model io-uring --uring-buffers 32768 127.0.0.1:0";
    let mut command = std::process::Command::new("/bin/sh");
    command.args(["-c", script, env!("CARGO_BIN_EXE_echoloop")]);
    let out = run_to_end(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "announced before allocating: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        stderr.trim(),
        "echoloop: io_uring: cannot allocate --uring-buffers 32768 x --uring-buffer-size 65536 \
         (2147483648 bytes): Cannot allocate memory (os error 12)"
    );
}

/// Many clients at once through four 4 KiB buffers and a small cap, in every receive mode:
/// recvs end at their byte limit all the time, bundles span the ring's wrap, sends are
/// short, and every client still reads back exactly what it sent.
#[test]
fn every_receive_mode_echoes_many_clients_exactly_through_a_tiny_ring() {
    skip_if_kernel_refuses!();
    for mode in [UringRecv::Single, UringRecv::Multishot, UringRecv::Bundle] {
        if let Err(e) = Server::bind(&config(Model::IoUring).with_uring_recv(mode)) {
            eprintln!("--uring-recv {}: skipped: {e}", mode.name());
            continue;
        }
        let args = ["--uring-recv", mode.name(), "--uring-buffers=4", "--uring-buffer-size=4K"];
        let bin = serve_io_uring(
            &[],
            &[&args[..], &["--max-pending=6000", "--send-buffer=4K", "127.0.0.1:0"]].concat(),
        );
        echo_all_at_once(bin.tcp(), 32, 512 * 1024, 300);
        assert_eq!(summary_echoed_bytes(&stop(bin)), 32 * 512 * 1024, "{}", mode.name());
    }
}
