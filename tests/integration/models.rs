//! The models side by side: one body per behaviour, run by `for_variants!` against each
//! model (event-loop, event-loop with two workers, thread-per-conn, blocking, io-uring), so
//! `cargo test models::half_close` compares them all at once.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use echoloop::ListenAddr;

use super::util::{
    Bin, IO_TIMEOUT, TestServer, assert_same_bytes, connect, echo_chunked, join_bounded, random_bytes,
};
use super::variants::Variant;

/// Many clients send random data in random chunks and get back exactly what they sent; the
/// summary counts every connection and byte. (The blocking model: one client after another.)
fn many_clients_echo_exactly(variant: Variant) {
    let server = TestServer::start(variant.config());
    let addr = server.tcp();
    let (clients, size) = if variant.serves_one_at_a_time() { (6, 200_000) } else { (32, 256 * 1024) };
    let run_client = move |i: u64| {
        let data = random_bytes(size, i);
        let echoed = echo_chunked(connect(addr), data.clone(), 1000 + i);
        assert_same_bytes(&echoed, &data);
    };
    if variant.serves_one_at_a_time() {
        (0..clients).for_each(run_client);
    } else {
        let threads: Vec<_> = (0..clients).map(|i| thread::spawn(move || run_client(i))).collect();
        threads.into_iter().for_each(|t| join_bounded(t, Duration::from_secs(60)));
    }
    let summary = server.stop();
    assert_eq!(summary.connections, clients);
    assert_eq!(summary.bytes_echoed, clients * size as u64);
    assert_eq!(summary.rejected, 0);
}
for_variants!(many_clients_echo_exactly);

/// A client that half-closes before reading anything still gets its whole echo, then EOF:
/// the server finishes echoing, then closes its side.
fn half_close(variant: Variant) {
    let server = TestServer::start(variant.config());
    let mut stream = server.connect();
    let data = random_bytes(48 * 1024, 7); // small enough to sit in loopback buffers unread
    stream.write_all(&data[..1000]).unwrap();
    stream.write_all(&data[1000..]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).expect("echo, then EOF");
    assert_same_bytes(&echoed, &data);
    let summary = server.stop();
    assert_eq!((summary.connections, summary.bytes_echoed), (1, data.len() as u64));
}
for_variants!(half_close);

/// A client that goes quiet is closed once `--idle-timeout` has passed (and not before); a
/// second client is served meanwhile, or, in the blocking model, right after.
fn idle_timeout_closes_quiet_clients(variant: Variant) {
    let timeout = Duration::from_millis(500);
    let server = TestServer::start(variant.config().with_idle_timeout(Some(timeout)));
    let mut quiet = server.connect();
    let last_activity = Instant::now(); // the server's last activity comes after this
    expect_echo(&mut quiet, b"ping");
    let mut second = server.connect(); // queued behind `quiet` in the blocking model
    second.write_all(b"second").unwrap();
    let mut rest = Vec::new();
    quiet.read_to_end(&mut rest).expect("the server closes the quiet client");
    assert!(rest.is_empty(), "unexpected bytes {rest:?}");
    assert!(
        last_activity.elapsed() >= timeout,
        "closed after {:?}, before the timeout",
        last_activity.elapsed()
    );
    let mut echo = [0; 6];
    second.read_exact(&mut echo).expect("the second client is served");
    assert_eq!(&echo, b"second");
    drop(second);
    assert_eq!(server.stop().connections, 2);
}
for_variants!(idle_timeout_closes_quiet_clients);

/// A client that sends but never reads moves no bytes once the buffers are full, so the idle
/// timeout closes it too (the threaded models learn it from SO_SNDTIMEO).
fn idle_timeout_closes_clients_that_never_read(variant: Variant) {
    let config = variant
        .config()
        .with_idle_timeout(Some(Duration::from_millis(500)))
        .with_send_buffer(Some(16 * 1024))
        .with_recv_buffer(Some(16 * 1024));
    let server = TestServer::start(config);
    let stream = connect_small_buffers(server.tcp());
    let (sent, writer) = write_without_reading(stream.try_clone().unwrap());
    let error = join_bounded(writer, IO_TIMEOUT + Duration::from_secs(5));
    assert!(
        matches!(error, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "the server should have closed the connection; the client's write ended with {error:?}"
    );
    let summary = server.stop();
    assert_eq!(summary.connections, 1);
    assert!(summary.bytes_echoed < sent.load(Ordering::SeqCst), "echoed more than was sent");
}
for_variants!(idle_timeout_closes_clients_that_never_read);

/// SIGTERM to the real binary, with one client connected and idle: the blocked reads and
/// accepts wake up, the client sees the server close, and the process exits 0 after logging
/// the summary line.
fn sigterm_exits_zero_with_summary(variant: Variant) {
    let mut args = variant.args().to_vec();
    args.push("127.0.0.1:0");
    let bin = Bin::serve(&args);
    let mut client = connect(bin.tcp());
    expect_echo(&mut client, b"hello");
    bin.signal(libc::SIGTERM);
    let (status, stderr) = bin.wait(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("summary: served 1 connections, echoed 5 bytes"),
        "no summary line in stderr:\n{stderr}"
    );
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
}
for_variants!(sigterm_exits_zero_with_summary);

/// Regression: main.rs installed the signal handlers only after printing `listening on`, so
/// a SIGTERM sent as soon as that line was read killed the process (status 143) about one
/// time in three. Now the handlers come first.
fn sigterm_right_after_the_listening_line(variant: Variant) {
    for _ in 0..3 {
        let mut args = variant.args().to_vec();
        args.push("127.0.0.1:0");
        let bin = Bin::serve(&args);
        bin.signal(libc::SIGTERM);
        let (status, stderr) = bin.wait(Duration::from_secs(20));
        assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
        assert!(stderr.contains("summary: served 0 connections"), "stderr:\n{stderr}");
    }
}
for_variants!(sigterm_right_after_the_listening_line);

/// A stop with a client that keeps sending and never reads: reading stops at once, the
/// stuck echo gets `--shutdown-grace`, and the server returns soon after, whatever the
/// client does. What the client finally reads is a prefix of what it sent.
fn shutdown_is_bounded_by_grace(variant: Variant) {
    let grace = Duration::from_millis(500);
    let config = variant
        .config()
        .with_shutdown_grace(grace)
        .with_send_buffer(Some(16 * 1024))
        .with_recv_buffer(Some(16 * 1024));
    let server = TestServer::start(config);
    let mut stream = connect_small_buffers(server.tcp());
    expect_echo(&mut stream, b"x"); // the connection is being served (not queued)
    let (sent, writer) = write_without_reading(stream.try_clone().unwrap());
    wait_until_stalled(&sent); // every buffer on the way is full: the server is stuck writing
    let started = Instant::now();
    let summary = server.stop();
    let took = started.elapsed();
    assert!(took < grace + Duration::from_secs(10), "stop took {took:?} with a grace of {grace:?}");
    stream.shutdown(Shutdown::Write).ok(); // unblock our own writer if it is still sending
    let _ = join_bounded(writer, IO_TIMEOUT + Duration::from_secs(5));
    let mut echoed = Vec::new();
    let _ = stream.read_to_end(&mut echoed); // ends with EOF or a reset
    assert_same_bytes(&echoed, &pattern(echoed.len() as u64));
    assert_eq!(summary.connections, 1);
    assert!(summary.bytes_echoed >= echoed.len() as u64, "the client read more than the summary says");
}
for_variants!(shutdown_is_bounded_by_grace);

/// Regression: on a stop, the threaded models closed a connection as soon as they had
/// written back what they had read. The client was still sending, so the close found unread
/// bytes, and Linux answered it with a reset that threw away the echoes still in the send
/// queue (megabytes on loopback): the client got less than the summary counted as echoed.
/// Every model now sends its FIN behind the echoes and lingers until the client has them.
fn a_stop_while_the_client_sends_delivers_every_echo(variant: Variant) {
    let server = TestServer::start(variant.config());
    let stream = server.connect();
    expect_echo(&mut stream.try_clone().unwrap(), b"x"); // served, not queued
    let eof_seen = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut stream, eof_seen) = (stream.try_clone().unwrap(), Arc::clone(&eof_seen));
        let chunk = pattern(251 * 64);
        thread::spawn(move || {
            let mut at = 0; // as in `write_without_reading`: the chunk repeats seamlessly
            while !eof_seen.load(Ordering::SeqCst) {
                match stream.write(&chunk[at..]) {
                    Ok(n) => at = (at + n) % chunk.len(),
                    Err(_) => return, // the server is gone (the bug: a reset)
                }
            }
        })
    };
    let reader = {
        let (mut stream, eof_seen) = (stream.try_clone().unwrap(), Arc::clone(&eof_seen));
        thread::spawn(move || {
            let (mut got, mut buf) = (Vec::new(), vec![0; 64 * 1024]);
            let end = loop {
                match stream.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => break Err(e.kind()),
                }
                // A slower reader than writer: the echoes queue up in the server's send buffer.
                thread::sleep(Duration::from_millis(1));
            };
            // What a polite client does at the server's EOF: stop sending, and say so.
            eof_seen.store(true, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Write);
            (got, end)
        })
    };
    thread::sleep(Duration::from_millis(300)); // every buffer on the way fills up
    let summary = server.stop();
    let (got, end) = join_bounded(reader, IO_TIMEOUT);
    join_bounded(writer, IO_TIMEOUT);
    assert_same_bytes(&got, &pattern(got.len() as u64));
    assert_eq!(
        end,
        Ok(()),
        "the client got {} of {} echoed bytes, then",
        got.len() + 1,
        summary.bytes_echoed
    );
    assert_eq!(got.len() as u64 + 1, summary.bytes_echoed, "the summary counts bytes the client never got");
}
for_variants!(a_stop_while_the_client_sends_delivers_every_echo);

/// Over `--max-connections` (2 here), a client is accepted and closed at once; the others
/// stay served. The cap is the whole process's, whichever worker the kernel picks: with
/// two workers too, exactly two of three clients are served, and the summary counts each
/// as served or rejected.
fn max_connections_rejects_the_extra_client(variant: Variant) {
    let config = variant.config().with_max_connections(2);
    let capacity = 2;
    let server = TestServer::start(config);
    let (mut served, mut rejected) = (Vec::new(), 0);
    for i in 0..=capacity {
        let mut client = server.connect();
        match served_or_closed(&mut client, format!("client {i}").as_bytes()) {
            true => served.push(client),
            false => rejected += 1,
        }
    }
    assert_eq!((served.len(), rejected), (capacity, 1), "served and rejected of {} clients", capacity + 1);
    for client in &mut served {
        expect_echo(client, b"still here");
    }
    let count = served.len() as u64;
    drop(served);
    let summary = server.stop();
    assert_eq!((summary.connections, summary.rejected), (count, rejected));
}
for_variants!(max_connections_rejects_the_extra_client, needs: [Concurrency]);

/// Send `data`: true if it comes back, false if the server closes the connection instead.
fn served_or_closed(client: &mut TcpStream, data: &[u8]) -> bool {
    client.write_all(data).expect("send"); // a closed peer takes it; it answers with a reset
    let mut echo = vec![0; data.len()];
    match client.read_exact(&mut echo) {
        Ok(()) => {
            assert_same_bytes(&echo, data);
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => false,
        Err(e) => panic!("neither an echo nor a close: {e}"),
    }
}

/// Every model serves a Unix domain socket, and removes the socket file when it stops.
fn unix_socket_echo(variant: Variant) {
    let path = socket_path(&format!("{variant:?}"));
    let server = TestServer::start(variant.config().with_addr(ListenAddr::Unix(path.clone())));
    let clients = if variant.serves_one_at_a_time() { 1 } else { 4 };
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let path = path.clone();
            thread::spawn(move || {
                let data = random_bytes(300_000, 50 + i);
                let stream = UnixStream::connect(&path).expect("connect to the unix socket");
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                assert_same_bytes(&echo_unix(stream, data.clone()), &data);
            })
        })
        .collect();
    threads.into_iter().for_each(|t| join_bounded(t, Duration::from_secs(60)));
    assert_eq!(server.stop().bytes_echoed, clients * 300_000);
    assert!(!path.exists(), "{} was not removed", path.display());
}
for_variants!(unix_socket_echo, needs: [UnixSocket]);

/// `--workers 2`: the kernel spreads connections over both loops (SO_REUSEPORT hashes the
/// 4-tuple, so 128 clients all landing on one worker has odds of 2^-127), and every client,
/// sequential or concurrent, gets an exact echo.
#[test]
fn workers_spread_connections_and_echo_exactly() {
    workers_spread_and_echo(Variant::Workers2.config());
}

/// The same with two io-uring workers, each its own ring and receive buffers.
#[test]
fn io_uring_workers_spread_connections_and_echo_exactly() {
    if let Some(reason) = crate::io_uring::kernel_refuses() {
        return eprintln!("skipped: {reason}");
    }
    workers_spread_and_echo(Variant::IoUring.config().with_workers(2));
}

fn workers_spread_and_echo(config: echoloop::ServerConfig) {
    let server = TestServer::start(config);
    let addr = server.tcp();
    for i in 0..64 {
        let data = random_bytes(1000 + i as usize, i);
        assert_same_bytes(&echo_chunked(connect(addr), data.clone(), i), &data);
    }
    let threads: Vec<_> = (64..128)
        .map(|i| {
            thread::spawn(move || {
                let data = random_bytes(20_000, i);
                assert_same_bytes(&echo_chunked(connect(addr), data.clone(), i), &data);
            })
        })
        .collect();
    threads.into_iter().for_each(|t| join_bounded(t, Duration::from_secs(60)));
    let summary = server.stop();
    assert_eq!(summary.connections, 128);
    assert_eq!(summary.per_worker.len(), 2);
    assert_eq!(summary.per_worker.iter().map(|w| w.connections).sum::<u64>(), 128);
    assert!(
        summary.per_worker.iter().all(|w| w.connections > 0),
        "one worker got nothing: {:?}",
        summary.per_worker
    );
    let expected: u64 = (0..64).map(|i| 1000 + i).sum::<u64>() + 64 * 20_000;
    assert_eq!(summary.bytes_echoed, expected);
}

/// Send `data`, read the same bytes back.
#[track_caller]
fn expect_echo(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).expect("send");
    let mut echo = vec![0; data.len()];
    stream.read_exact(&mut echo).expect("read echo");
    assert_same_bytes(&echo, data);
}

/// The byte stream `write_without_reading` sends: position `i` holds `i % 251`.
fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// On a thread, send `pattern` bytes and never read, until a write fails or the client's
/// write timeout passes; returns the byte counter and the thread (which yields the error).
fn write_without_reading(mut stream: TcpStream) -> (Arc<AtomicU64>, thread::JoinHandle<ErrorKind>) {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let chunk = pattern(251 * 64);
    let writer = thread::spawn(move || {
        // 251 * 64 bytes, so the chunk repeats seamlessly; `at` is where the next write starts.
        let mut at = 0;
        loop {
            match stream.write(&chunk[at..]) {
                Ok(n) => {
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                    at = (at + n) % chunk.len();
                }
                Err(e) => return e.kind(),
            }
        }
    });
    (sent, writer)
}

/// Wait until the byte counter has not moved for a while: the writer is blocked because
/// every buffer between it and the server's stuck `write` is full. (If the machine merely
/// stalled instead, the test still holds; it just exercises an earlier moment.)
fn wait_until_stalled(sent: &AtomicU64) {
    let start = Instant::now();
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        let now = sent.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if now > 0 && since.elapsed() >= Duration::from_millis(300) {
            return;
        }
        assert!(start.elapsed() < IO_TIMEOUT, "the writer never stalled ({now} bytes sent)");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Connect with 4 KiB socket buffers (set before connecting, so the TCP window honours
/// them), so a client that does not read fills every buffer after a few hundred KiB.
fn connect_small_buffers(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// A fresh socket path in the temp dir, unique to this process and `name`.
fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("echoloop-models-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// `echo_chunked` for a Unix stream: send everything and half-close from one thread, read
/// the echo until EOF on this one.
fn echo_unix(stream: UnixStream, data: Vec<u8>) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        for chunk in data.chunks(7_000) {
            writer.write_all(chunk).expect("send");
        }
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut received = Vec::new();
    (&stream).read_to_end(&mut received).expect("read echo");
    join_bounded(sender, IO_TIMEOUT);
    received
}
