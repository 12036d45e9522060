//! Partial writes: with tiny socket buffers the kernel takes only part of an echo; the rest
//! waits in the pending buffer, the loop asks for WRITABLE, and no byte is lost or reordered.

use std::io::Write;
use std::sync::Arc;
use std::thread;

use crate::util::*;

/// A 4 KiB send buffer forces partial writes and WRITABLE interest (traced); the echo stays exact.
#[test]
fn tiny_send_buffer_forces_partial_writes_and_echo_stays_exact() {
    let bin = Bin::serve_env(
        &[("RUST_LOG", "echoloop=trace")],
        // The receive buffer stays at its default: one under the 64 KiB loopback MSS makes
        // Linux move data in 200 ms window probes (1 MiB would take many seconds).
        &["--send-buffer", "4096", "127.0.0.1:0"],
    );
    let stream = connect(bin.tcp());
    let data = Arc::new(random_bytes(1 << 20, 41));
    let writer = {
        let (mut stream, data) = (stream.try_clone().unwrap(), Arc::clone(&data));
        thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(42);
            let mut rest = &data[..];
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(rng.usize(1..=rest.len().min(30_000)));
                stream.write_all(chunk).expect("send");
                rest = tail;
            }
        })
    };
    // Not reading yet: our receive buffer fills, then the server's 4 KiB send buffer, so
    // a partial write is certain before we read a byte.
    assert!(
        bin.wait_for_stderr("partial write", IO_TIMEOUT),
        "no partial write while the client was not reading; log:\n{}",
        bin.stderr()
    );
    let got = read_n(&stream, data.len());
    join_bounded(writer, IO_TIMEOUT);
    assert_same_bytes(&got, &data);

    bin.signal(libc::SIGTERM);
    let (status, log) = bin.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}");
    let to_writable =
        log.lines().find(|l| l.contains(" interest ") && l.rsplit("->").next().unwrap().contains("WRITABLE"));
    assert!(to_writable.is_some(), "no interest change to WRITABLE in the trace");
    assert_eq!(summary_echoed_bytes(&log), data.len() as u64);
}

/// 50 clients at once through 4 KiB send buffers and a 5000-byte pending cap: all exact.
#[test]
fn many_clients_with_partial_writes_and_a_small_cap() {
    use echoloop::Model;
    let server =
        TestServer::start(config(Model::EventLoop).with_send_buffer(Some(4096)).with_max_pending(5000));
    let clients: Vec<_> = (0..50u64)
        .map(|i| {
            let stream = server.connect();
            thread::spawn(move || {
                let data = random_bytes(256 * 1024 + i as usize * 997, 700 + i);
                assert_same_bytes(&echo_chunked(stream, data.clone(), i), &data);
                data.len() as u64
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| join_bounded(c, IO_TIMEOUT)).sum();
    assert_eq!(server.stop().bytes_echoed, total);
}
