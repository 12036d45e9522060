//! Backpressure: a client that writes and does not read is held at `--max-pending`: its
//! bytes wait in kernel buffers (and in the end in the client), not in server memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

/// Memory the server may gain while clients push data it cannot echo yet (allocator slack,
/// the pending buffers themselves); far less than the data pushed through it.
const RSS_GROWTH_LIMIT_KIB: u64 = 8 * 1024;

/// Push at least this much through the server, in rounds of "write until blocked, then read
/// it all back".
const TOTAL: usize = 64 << 20;

/// Clients pushing at once, each on its own thread.
const CLIENTS: usize = 4;

/// SO_SNDBUF and SO_RCVBUF on both ends. Fixed sizes (the kernel doubles them) stop the
/// kernel from auto-tuning them, so a round holds at most about 4 x 2 MiB + the 64 KiB cap.
const SOCKET_BUFFER: usize = 1 << 20;

/// Writers that do not read are held at `--max-pending`: server memory stays flat, no byte is lost.
#[test]
fn writer_that_never_reads_is_held_at_the_cap() {
    let buffer = SOCKET_BUFFER.to_string();
    let bin = Bin::serve(&[
        "--max-pending",
        "64K",
        "--send-buffer",
        &buffer,
        "--recv-buffer",
        &buffer,
        "127.0.0.1:0",
    ]);
    let addr = bin.tcp();
    // Warm up (the first connection allocates what every later one reuses), then measure.
    let warm = random_bytes(1 << 20, 31);
    assert_same_bytes(&echo_chunked(connect(addr), warm.clone(), 32), &warm);
    let baseline = proc_status_kib(bin.pid(), "VmRSS");

    // One random block, stored twice in a row, so that any window of `len` bytes is
    // contiguous: the byte at stream offset `o` is `doubled[o % len]`.
    let len = (16 << 20) + 17;
    let block = random_bytes(len, 33);
    let doubled = Arc::new([&block[..], &block[..]].concat());
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let doubled = Arc::clone(&doubled);
            std::thread::spawn(move || {
                let stream = connect_with_buffers(addr, Some(SOCKET_BUFFER), Some(SOCKET_BUFFER));
                let mut offset = c * 1_000_003; // each client its own byte stream
                let mut pushed = 0;
                while pushed < TOTAL / CLIENTS {
                    let window = &doubled[offset % len..offset % len + len];
                    let written = write_until_blocked(&stream, window);
                    assert!(written < len, "wrote {written} bytes without blocking: no backpressure");
                    let echoed = read_n(&stream, written);
                    assert_same_bytes(&echoed, &window[..written]);
                    offset += written;
                    pushed += written;
                }
                pushed
            })
        })
        .collect();
    let pushed: usize = clients.into_iter().map(|c| join_bounded(c, Duration::from_secs(60))).sum();
    let peak = proc_status_kib(bin.pid(), "VmHWM");
    eprintln!(
        "pushed {} MiB in {:?}; server RSS {baseline} KiB before, peak {peak} KiB",
        pushed >> 20,
        start.elapsed()
    );
    assert!(
        peak.saturating_sub(baseline) < RSS_GROWTH_LIMIT_KIB,
        "server memory grew from {baseline} KiB to a peak of {peak} KiB while {pushed} bytes passed"
    );
}

/// A pending cap of a few bytes (even one) still echoes exactly: the cap bounds memory only.
#[test]
fn tiny_pending_caps_still_echo_exactly() {
    use echoloop::Model;
    for cap in [1, 7, 4099] {
        let server =
            TestServer::start(config(Model::EventLoop).with_max_pending(cap).with_send_buffer(Some(4096)));
        let data = random_bytes(96 * 1024, 34 + cap as u64);
        let got = echo_chunked(server.connect(), data.clone(), 35);
        assert_same_bytes(&got, &data);
        assert_eq!(server.stop().bytes_echoed, data.len() as u64, "cap {cap}");
    }
}
