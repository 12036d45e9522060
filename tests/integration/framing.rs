//! `--framing line|length`: a read is not a message. One body per behaviour, run against
//! every model and, where both apply, both framings: `cargo test
//! framing::one_byte_writes::length` compares the models.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use echoloop::{Framing, ServerConfig};

use super::util::{
    Bin, IO_TIMEOUT, TestServer, assert_same_bytes, connect, join_bounded, proc_status_kib, random_bytes,
};
use super::variants::Variant;

/// An in-process config for `variant` with `framing` and frames of up to `max_frame`.
fn framed(variant: Variant, framing: Framing, max_frame: usize) -> ServerConfig {
    variant.config().with_framing(framing).with_max_frame(max_frame)
}

/// The real binary for `variant` with `framing` and `--max-frame max_frame`.
fn serve(variant: Variant, framing: Framing, max_frame: usize) -> Bin {
    let max_frame = max_frame.to_string();
    let mut args = vec!["127.0.0.1:0", "--framing", framing.name(), "--max-frame", &max_frame];
    args.extend_from_slice(variant.args());
    Bin::serve(&args)
}

/// `for_framings!(body: line => Framing::Line, ...)` makes `mod body { mod line { ... } }`
/// with `for_variants!`'s tests in each, calling `body(variant, framing)`.
macro_rules! for_framings {
    ($body:ident: $($framing:ident => $value:expr),+ $(,)?) => {
        mod $body {
            $(
                mod $framing {
                    use echoloop::Framing;
                    for_variants!(@tests |variant| super::super::$body(variant, $value), []);
                }
            )+
        }
    };
}

/// A length frame: the 4-byte big-endian length, then the payload.
fn length_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// `count` frames of random sizes up to `max` bytes (whole frame for a line, payload for a
/// length frame), empty length frames and one-byte lines included.
fn frames(framing: Framing, count: usize, max: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|i| match framing {
            Framing::Line => {
                let mut line: Vec<u8> = random_bytes(rng.usize(0..max), seed + i as u64);
                line.retain(|&b| b != b'\n');
                line.push(b'\n');
                line
            }
            _ => length_frame(&random_bytes(rng.usize(0..=max), seed + i as u64)),
        })
        .collect()
}

/// A frame of exactly `size` bytes as the limit counts it (a line with its `\n`, a payload).
fn frame_of(framing: Framing, size: usize) -> Vec<u8> {
    match framing {
        Framing::Line => [vec![b'x'; size - 1], vec![b'\n']].concat(),
        _ => length_frame(&vec![b'y'; size]),
    }
}

/// Read until the server closes (EOF or reset), returning every byte that came first.
fn read_until_closed(mut stream: &TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return received,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading after {} bytes: {e}", received.len()),
        }
    }
}

/// Nothing arrives on `stream` within `wait`: the server holds back half a frame.
#[track_caller]
fn assert_nothing_echoed(stream: &TcpStream, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    let mut byte = [0u8; 1];
    // A read with a timeout ends in EINTR, not a restart, when the thread is signalled (an
    // io-uring server in the same process brings such spurious wake-ups): wait on.
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()).filter(|d| !d.is_zero())
    {
        stream.set_read_timeout(Some(left)).unwrap();
        match (&*stream).read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => panic!("half a frame was echoed: {other:?}"),
        }
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// Frames sent one byte per write (every boundary a read can fall on) come back exactly,
/// and a frame short of its last byte is not echoed at all until that byte arrives.
fn one_byte_writes(variant: Variant, framing: Framing) {
    let server = TestServer::start(framed(variant, framing, 300));
    let mut stream = server.connect();
    stream.set_nodelay(true).unwrap(); // one segment per write
    let sent = frames(framing, 40, 300, 9).concat();
    let reader = stream.try_clone().unwrap();
    let receiver = thread::spawn(move || read_until_closed(&reader));
    for byte in &sent {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_same_bytes(&join_bounded(receiver, IO_TIMEOUT), &sent);

    // Byte by byte, all but the last byte of a frame: nothing may come back yet.
    let mut stream = server.connect();
    stream.set_nodelay(true).unwrap();
    let frame = frame_of(framing, 50);
    let (head, last) = frame.split_at(frame.len() - 1);
    for byte in head {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
    }
    assert_nothing_echoed(&stream, Duration::from_millis(200));
    stream.write_all(last).unwrap();
    let mut echoed = vec![0; frame.len()];
    stream.read_exact(&mut echoed).unwrap();
    assert_same_bytes(&echoed, &frame);
    drop(stream);
    let summary = server.stop();
    assert_eq!(summary.bytes_echoed, (sent.len() + frame.len()) as u64);
}
for_framings!(one_byte_writes: line => Framing::Line, length => Framing::Length);

/// Thousands of frames in one write (many frames per read, frames cut at the end of the
/// read buffer) come back exactly, while the client reads concurrently.
fn many_frames_in_one_write(variant: Variant, framing: Framing) {
    let server = TestServer::start(framed(variant, framing, 4096));
    let stream = server.connect();
    let sent = frames(framing, 5000, 600, 21).concat(); // about 1.5 MB
    let mut writer = stream.try_clone().unwrap();
    let data = sent.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    assert_same_bytes(&read_until_closed(&stream), &sent);
    join_bounded(sender, IO_TIMEOUT);
    assert_eq!(server.stop().bytes_echoed, sent.len() as u64);
}
for_framings!(many_frames_in_one_write: line => Framing::Line, length => Framing::Length);

/// A frame exactly at `--max-frame` is echoed; one byte over, the frames before it are echoed,
/// the connection is closed, the log names the peer, the size and the limit, and the server
/// goes on serving others.
fn at_the_limit_and_one_over(variant: Variant, framing: Framing) {
    const LIMIT: usize = 1000;
    let server = serve(variant, framing, LIMIT);
    let stream = connect(server.tcp());
    let at_limit = frame_of(framing, LIMIT);
    let over = frame_of(framing, LIMIT + 1);
    (&stream).write_all(&[at_limit.clone(), frame_of(framing, 1), over].concat()).unwrap();
    let echoed = read_until_closed(&stream);
    assert_same_bytes(&echoed, &[at_limit, frame_of(framing, 1)].concat());
    // A line may be judged before its `\n` arrives ("at least 1001 bytes"), if a read ends
    // right after its 1000th byte.
    let size = if framing == Framing::Line { "a line of " } else { "a frame declaring 1001 bytes" };
    let line = oversize_log_line(&server, &stream, size);
    assert!(line.contains(" 1001 bytes") && line.contains("over the limit of 1000 bytes"), "{line}");
    // The server keeps serving.
    let other = connect(server.tcp());
    let frame = frame_of(framing, 10);
    (&other).write_all(&frame).unwrap();
    other.shutdown(std::net::Shutdown::Write).unwrap();
    assert_same_bytes(&read_until_closed(&other), &frame);
}
for_framings!(at_the_limit_and_one_over: line => Framing::Line, length => Framing::Length);

/// Thousands of good frames, then one over the limit with half a megabyte behind it, from a
/// client that reads its echoes late: every echo of the good frames still arrives. (Closing
/// with the rest of the big frame unread would reset the connection and destroy the echoes
/// still in the server's send queue; the server lingers, reading and discarding, instead.)
fn echoes_before_an_oversized_frame_survive_a_late_reader(variant: Variant, framing: Framing) {
    const LIMIT: usize = 100;
    let server = serve(variant, framing, LIMIT);
    let stream = connect(server.tcp());
    let good: Vec<u8> = frames(framing, 3000, LIMIT - 1, 61).concat();
    let oversized = match framing {
        Framing::Line => vec![b'z'; 500_000],
        _ => [100_000u32.to_be_bytes().to_vec(), vec![0; 500_000]].concat(),
    };
    let mut writer = stream.try_clone().unwrap();
    let sent = [good.clone(), oversized].concat();
    // The server stops taking the big frame at some point: the writer may then see a reset.
    let sender = thread::spawn(move || drop(writer.write_all(&sent)));
    thread::sleep(Duration::from_millis(300)); // read late: the echoes wait in the kernel
    assert_same_bytes(&read_until_closed(&stream), &good);
    join_bounded(sender, IO_TIMEOUT);
}
for_framings!(echoes_before_an_oversized_frame_survive_a_late_reader: line => Framing::Line, length => Framing::Length);

/// The log line that names `stream`'s end as the peer and contains `needle` (waited for).
fn oversize_log_line(server: &Bin, stream: &TcpStream, needle: &str) -> String {
    let expected = format!("{}: {needle}", stream.local_addr().unwrap());
    assert!(server.wait_for_stderr(&expected, IO_TIMEOUT), "no '{expected}' in:\n{}", server.stderr());
    server.stderr().lines().find(|line| line.contains(&expected)).unwrap().to_string()
}

/// Virtual memory reserved (`VmPeak`) and resident (`VmHWM`) at their peaks, in KiB.
fn peaks(server: &Bin) -> (u64, u64) {
    (proc_status_kib(server.pid(), "VmPeak"), proc_status_kib(server.pid(), "VmHWM"))
}

/// A declared length of 4 GiB - 1 is refused from its prefix alone: nothing is allocated for
/// it (the server's reserved address space and resident memory do not grow by anything near
/// it), the frame before it is echoed, and the connection is closed.
fn absurd_declared_length(variant: Variant, framing: Framing) {
    let server = serve(variant, framing, 64 * 1024);
    let warm = connect(server.tcp()); // a first connection: thread stacks and buffers exist
    (&warm).write_all(&length_frame(b"warm")).unwrap();
    warm.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&warm), length_frame(b"warm"));
    let (peak_before, hwm_before) = peaks(&server);

    let stream = connect(server.tcp());
    let first = length_frame(b"before");
    (&stream).write_all(&[first.clone(), vec![0xff; 4], vec![0; 1000]].concat()).unwrap();
    assert_same_bytes(&read_until_closed(&stream), &first);
    assert!(server.wait_for_stderr("declaring 4294967295 bytes", IO_TIMEOUT), "{}", server.stderr());
    let (peak_after, hwm_after) = peaks(&server);
    // A 4 GiB allocation would reserve 4 GiB of address space even if never touched.
    assert!(peak_after - peak_before < 256 * 1024, "VmPeak grew from {peak_before} to {peak_after} KiB");
    assert!(hwm_after - hwm_before < 16 * 1024, "VmHWM grew from {hwm_before} to {hwm_after} KiB");
}
for_framings!(absurd_declared_length: length => Framing::Length);

/// A line that never ends is cut at `--max-frame`: the server closes the connection (the
/// client's writes fail) and holds no more than about one frame for it meanwhile.
fn a_line_that_never_ends(variant: Variant, framing: Framing) {
    const LIMIT: usize = 1 << 20;
    let server = match variant {
        // io-uring's receive buffers (256 x 64 KiB by default) are touched as a stream fills
        // them: a fixed cost, not what the line holds. 32 of them keep it inside the bound.
        Variant::IoUring => {
            let max_frame = LIMIT.to_string();
            let framing = ["--framing", framing.name(), "--max-frame", &max_frame];
            Bin::serve(&[&["127.0.0.1:0"][..], &framing, variant.args(), &["--uring-buffers", "32"]].concat())
        }
        _ => serve(variant, framing, LIMIT),
    };
    let (_, hwm_before) = peaks(&server);
    let mut stream = connect(server.tcp());
    let chunk = vec![b'z'; 64 * 1024];
    let mut written = 0usize;
    let error = loop {
        match stream.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        assert!(written < 256 << 20, "the server accepted {written} bytes of one line");
    };
    assert!(
        matches!(error.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
        "after {written} bytes: {error}"
    );
    let line = oversize_log_line(&server, &stream, "a line of at least ");
    assert!(line.contains("(no \\n yet) is over the limit of 1048576 bytes"), "{line}");
    let (_, hwm_after) = peaks(&server);
    // One frame (1 MiB) plus the loop's buffers (io-uring's 32 x 64 KiB); a server that kept
    // the line would grow by whatever the client managed to send.
    assert!(hwm_after - hwm_before < 8 * 1024, "VmHWM grew from {hwm_before} to {hwm_after} KiB");
    let other = connect(server.tcp());
    (&other).write_all(b"still here\n").unwrap();
    other.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&other), b"still here\n");
}
for_framings!(a_line_that_never_ends: line => Framing::Line);

/// EOF in the middle of a frame: a last line without `\n` is echoed (the end of the stream
/// ends it); a length frame cut short is discarded, with a log line saying how many bytes.
fn eof_mid_frame(variant: Variant, framing: Framing) {
    let server = serve(variant, framing, 1000);
    let stream = connect(server.tcp());
    let whole = frames(framing, 20, 200, 5).concat();
    let cut = match framing {
        Framing::Line => b"the last line, without its end".to_vec(),
        _ => length_frame(&[7; 100])[..37].to_vec(),
    };
    (&stream).write_all(&[whole.clone(), cut.clone()].concat()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let echoed = read_until_closed(&stream);
    if framing == Framing::Line {
        assert_same_bytes(&echoed, &[whole, cut].concat());
    } else {
        assert_same_bytes(&echoed, &whole);
        let expected =
            format!("{}: EOF in the middle of a frame: discarded its 37 bytes", stream.local_addr().unwrap());
        assert!(server.wait_for_stderr(&expected, IO_TIMEOUT), "no '{expected}' in:\n{}", server.stderr());
    }
}
for_framings!(eof_mid_frame: line => Framing::Line, length => Framing::Length);

/// A client that sends line frames and does not read is held by backpressure (its writes
/// stall) while the server holds at most about one connection cap; once it reads, every
/// frame comes back whole. Event loop only: the cap is its own (`--max-pending`).
#[test]
fn backpressure_counts_the_partial_frame() {
    let server = serve(Variant::EventLoop, Framing::Line, 64 * 1024);
    let (_, hwm_before) = peaks(&server);
    let stream = connect(server.tcp());
    let sent = frames(Framing::Line, 200_000, 400, 77).concat(); // about 40 MB: more than every buffer on the way
    let written = super::util::write_until_blocked(&stream, &sent);
    assert!(written < sent.len(), "a client that never reads was never stopped");
    let (_, hwm_after) = peaks(&server);
    assert!(hwm_after - hwm_before < 4 * 1024, "VmHWM grew from {hwm_before} to {hwm_after} KiB");
    let mut writer = stream.try_clone().unwrap();
    let rest = sent[written..].to_vec();
    let sender = thread::spawn(move || {
        writer.write_all(&rest).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    assert_same_bytes(&read_until_closed(&stream), &sent);
    join_bounded(sender, IO_TIMEOUT);
}

/// Frames cut at random places and echoed through a 4 KiB send buffer: completing frames
/// (a held start plus the end just read, in one `writev`) are often taken only in part, and
/// the rest waits in the pending buffer, in order.
fn partial_writes_of_completed_frames(variant: Variant, framing: Framing) {
    let server = TestServer::start(framed(variant, framing, 60_000).with_send_buffer(Some(4096)));
    let sent = frames(framing, 300, 60_000, 31).concat(); // about 9 MB
    let echoed = super::util::echo_chunked(server.connect(), sent.clone(), 32);
    assert_same_bytes(&echoed, &sent);
}
for_framings!(partial_writes_of_completed_frames: line => Framing::Line, length => Framing::Length);

/// The trace in docs/framing.md: one 15-byte length frame arriving in three reads (2, 7 and
/// 6 bytes). The first two leave a partial frame; the third completes it, and the held start
/// and the new bytes go back in one write.
#[test]
fn trace_of_one_frame_in_three_reads() {
    let server = Bin::serve_env(&[("RUST_LOG", "echoloop=trace")], &["127.0.0.1:0", "--framing", "length"]);
    let mut stream = connect(server.tcp());
    stream.set_nodelay(true).unwrap();
    let frame = length_frame(b"hello world");
    for (part, held) in [(&frame[..2], "held=2 (+2)"), (&frame[2..9], "held=9 (+7)")] {
        stream.write_all(part).unwrap();
        let needle = format!("partial frame: {held}");
        assert!(server.wait_for_stderr(&needle, IO_TIMEOUT), "no '{needle}' in:\n{}", server.stderr());
    }
    stream.write_all(&frame[9..]).unwrap();
    let mut echoed = vec![0; frame.len()];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, frame);
    let written = "write n=15 of 15 (held start + this read)";
    assert!(server.wait_for_stderr(written, IO_TIMEOUT), "no '{written}' in:\n{}", server.stderr());
    let trace = server.stderr();
    let whole = trace.find("frame whole: 9 bytes held + 6 read").expect("the frame completed");
    assert!(trace[whole..].contains(written), "{trace}");
}
