//! Chaos, kept in the suite: for a few seconds, well-behaved clients (random data,
//! checked byte for byte) and hostile ones (resets mid-stream, half-close then read,
//! connect-and-close, slowloris, writers that never read, senders that close without
//! reading) hit the real binary of each model at once. Not one byte of a well-behaved client
//! may be lost or changed, and afterwards the server's descriptors (`/proc/PID/fd`) and
//! threads (`/proc/PID/task`) come back to where they were before the first client.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;
use crate::variants::Variant;

/// One kind of client, with how often it is picked (out of 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Random data in random chunks while reading, half-close, read to EOF: exact echo.
    Verified,
    /// Send everything, half-close, then read it all back: exact echo.
    HalfCloseThenRead,
    /// One byte every 100 ms, each echo checked.
    Slowloris,
    /// Send, read a little, then reset (SO_LINGER 0) with echoes still on their way.
    ResetMidStream,
    /// Connect and close at once.
    ConnectAndClose,
    /// Write until the server stops taking bytes (backpressure), never read, then close.
    WriteNeverRead,
    /// Send a little and close without reading the echo.
    SendAndClose,
}

const KINDS: [(Kind, u32); 7] = [
    (Kind::Verified, 35),
    (Kind::HalfCloseThenRead, 15),
    (Kind::Slowloris, 5),
    (Kind::ResetMidStream, 15),
    (Kind::ConnectAndClose, 10),
    (Kind::WriteNeverRead, 10),
    (Kind::SendAndClose, 10),
];

impl Kind {
    fn pick(rng: &mut fastrand::Rng) -> Kind {
        let mut roll = rng.u32(0..KINDS.iter().map(|(_, weight)| weight).sum::<u32>());
        for (kind, weight) in KINDS {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        unreachable!("the roll is below the sum of the weights")
    }
}

/// What the clients did, added up over all client threads.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Well-behaved clients whose echo was checked, and their bytes.
    verified_clients: u64,
    verified_bytes: u64,
    /// Hostile clients run.
    hostile_clients: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.verified_clients += other.verified_clients;
        self.verified_bytes += other.verified_bytes;
        self.hostile_clients += other.hostile_clients;
    }
}

/// Run one client of `kind`; the bytes it verified, or `None` for a hostile client. A
/// mismatch or an error on a well-behaved client panics (with the client's kind and seed).
fn run_client(kind: Kind, addr: SocketAddr, rng: &mut fastrand::Rng) -> Option<u64> {
    let seed = rng.u64(..);
    match kind {
        Kind::Verified => {
            let data = random_bytes(rng.usize(1..=256 << 10), seed);
            assert_same_bytes(&echo_chunked(connect(addr), data.clone(), seed), &data);
            Some(data.len() as u64)
        }
        Kind::HalfCloseThenRead => {
            // Small enough to fit in the kernel buffers and `--max-pending` without reading.
            let data = random_bytes(rng.usize(1..=32 << 10), seed);
            let mut stream = connect(addr);
            stream.write_all(&data).expect("send");
            stream.shutdown(Shutdown::Write).expect("half-close");
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).expect("read the echo after half-closing");
            assert_same_bytes(&echoed, &data);
            Some(data.len() as u64)
        }
        Kind::Slowloris => {
            let mut stream = connect(addr);
            let data = random_bytes(10, seed);
            for byte in &data {
                stream.write_all(std::slice::from_ref(byte)).expect("send one byte");
                assert_eq!(read_n(&stream, 1), [*byte], "slowloris echo");
                thread::sleep(Duration::from_millis(100));
            }
            Some(data.len() as u64)
        }
        Kind::ResetMidStream => {
            let stream = connect(addr);
            push_for(&stream, &random_bytes(rng.usize(1..=512 << 10), seed), Duration::from_millis(50));
            let _ = (&stream).read(&mut [0; 1024]);
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            None // dropped with linger 0: RST
        }
        Kind::ConnectAndClose => {
            drop(connect(addr));
            None
        }
        Kind::WriteNeverRead => {
            let stream = connect(addr);
            push_for(&stream, &random_bytes(4 << 20, seed), Duration::from_millis(300));
            None // closed with the echo unread: RST
        }
        Kind::SendAndClose => {
            let mut stream = connect(addr);
            let _ = stream.write_all(&random_bytes(rng.usize(1..=16 << 10), seed));
            None
        }
    }
}

/// Write `data` without blocking for at most `limit` (or until all is written), ignoring
/// errors: a hostile client does not care whether the server kept its bytes.
fn push_for(stream: &TcpStream, data: &[u8], limit: Duration) {
    let _ = stream.set_nonblocking(true);
    let start = Instant::now();
    let mut written = 0;
    while written < data.len() && start.elapsed() < limit {
        match (&*stream).write(&data[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Clients from `threads` threads at once, each picking kinds at random, for `run_for`.
fn unleash(addr: SocketAddr, threads: usize, run_for: Duration, seed: u64) -> Tally {
    let deadline = Instant::now() + run_for;
    let workers: Vec<_> = (0..threads as u64)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ (t << 32));
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    match run_client(Kind::pick(&mut rng), addr, &mut rng) {
                        Some(bytes) => {
                            tally.verified_clients += 1;
                            tally.verified_bytes += bytes;
                        }
                        None => tally.hostile_clients += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        total += join_bounded(worker, run_for + IO_TIMEOUT);
    }
    total
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).expect("list /proc/PID/task").count()
}

/// Chaos against `args` (the `serve` flags of one model) from `threads` client threads.
fn chaos(args: &[&str], threads: usize, run_for: Duration) {
    let mut full = args.to_vec();
    full.extend(["--max-pending", "64K", "--shutdown-grace", "2", "127.0.0.1:0"]);
    let bin = Bin::serve(&full);
    // The baseline once the server runs: `listening on` comes before `run` starts the worker
    // threads, and a client is served only after that. The smallest counts seen over the
    // next 300 ms, so the warm-up client's own thread (thread-per-conn) has ended.
    let warm_up = random_bytes(64 << 10, 6);
    assert_same_bytes(&echo_chunked(connect(bin.tcp()), warm_up.clone(), 6), &warm_up);
    let (mut fds_before, mut threads_before) = (usize::MAX, usize::MAX);
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(300) {
        fds_before = fds_before.min(open_fds(bin.pid()).len());
        threads_before = threads_before.min(thread_count(bin.pid()));
        thread::sleep(Duration::from_millis(10));
    }

    let start = Instant::now();
    let tally = unleash(bin.tcp(), threads, run_for, 0xC4A05 ^ u64::from(bin.pid()));
    let took = start.elapsed();
    assert!(tally.verified_clients > 0 && tally.hostile_clients > 0, "{tally:?}");

    // Every client is gone: the server must let go of every descriptor and thread.
    let back = wait_until(Duration::from_secs(10), || {
        open_fds(bin.pid()).len() == fds_before && thread_count(bin.pid()) == threads_before
    });
    let (fds_after, threads_after) = (open_fds(bin.pid()).len(), thread_count(bin.pid()));
    assert!(back, "fds {fds_before} -> {fds_after}, threads {threads_before} -> {threads_after}");

    // And it still serves, then stops gracefully, having echoed at least what we checked.
    let data = random_bytes(1 << 20, 7);
    assert_same_bytes(&echo_chunked(connect(bin.tcp()), data.clone(), 8), &data);
    bin.signal(libc::SIGTERM);
    let (status, log) = bin.wait(IO_TIMEOUT);
    assert!(status.success(), "{status:?}\n{log}");
    let echoed = summary_echoed_bytes(&log);
    let checked = tally.verified_bytes + (warm_up.len() + data.len()) as u64;
    assert!(echoed >= checked, "summary echoed {echoed}, we checked {checked}: {tally:?}");
    eprintln!(
        "chaos {args:?}: {} verified clients, {} bytes verified, {} hostile clients in {took:.1?}; \
         server echoed {echoed} bytes; fds {fds_before} -> {fds_after}, threads {threads_before} -> {threads_after}",
        tally.verified_clients, tally.verified_bytes, tally.hostile_clients
    );
}

/// Chaos against `variant`: 12 client threads for 6 s; the blocking model serves one client
/// at a time, so its clients come one after another (concurrent ones would only wait in the
/// accept queue), for 4 s.
fn chaos_on(variant: Variant) {
    let (threads, run_for) = match variant.serves_one_at_a_time() {
        true => (1, Duration::from_secs(4)),
        false => (12, Duration::from_secs(6)),
    };
    chaos(variant.args(), threads, run_for);
}
for_variants!(chaos_on);
