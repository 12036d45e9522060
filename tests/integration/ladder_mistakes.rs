//! The classic mistakes (examples/ladder/mistakes.rs), each made on purpose: every test shows
//! the failure happening, then the correct rungs (or, where no rung has the situation, the
//! same loop with `--fixed`) not failing. The failures are outcomes, not timings: bytes
//! lost, bytes that never came within seconds where a correct server takes microseconds, a
//! reset, memory grown by tens of MiB. Every wait is bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use super::{RUNGS, read_until_quiet, start};
use crate::util::*;

/// The rungs that must not make the mistakes 1 to 3: the event loops.
const CORRECT: [&str; 3] = [RUNGS[2], RUNGS[3], RUNGS[4]];
/// How long "nothing came" must last to count as a stall; a correct server answers in
/// microseconds on loopback, so this is generous even on a loaded machine.
const STALL: Duration = Duration::from_secs(2);

/// `ladder-mistakes MISTAKE` (with `--fixed`: the same loop done right), if it can run.
fn mistake(name: &str, fixed: bool) -> Option<Bin> {
    let args = [name, "--fixed"];
    start("ladder-mistakes", if fixed { &args } else { &args[..1] })
}

/// Send 64 KiB in one write and read the echo: how much came before nothing came for `quiet`.
fn one_big_write(bin: &Bin, data: &[u8], quiet: Duration) -> (TcpStream, Vec<u8>) {
    let mut client = connect(bin.tcp());
    client.write_all(data).unwrap();
    let got = read_until_quiet(&client, data.len(), quiet);
    (client, got)
}

/// Edge-triggered readiness, one read per event: the 64 KiB arrive as one or two events, the
/// loop reads 4 KiB for each, and the rest waits for an event that never comes. One more
/// byte from the client is a new event, and one more read: the bytes were there all along.
#[test]
fn edge_triggered_without_draining_stalls() {
    let data = random_bytes(64 * 1024, 1);
    let Some(broken) = mistake("edge-no-drain", false) else { return };
    let (mut client, got) = one_big_write(&broken, &data, STALL);
    assert!(got.len() < data.len(), "the broken loop echoed everything: nothing stalled");
    assert_same_bytes(&got, &data[..got.len()]);
    client.write_all(b"!").unwrap(); // a new edge
    let more = read_until_quiet(&client, 1, IO_TIMEOUT);
    assert!(!more.is_empty(), "a new event should have read more of what was waiting");
    assert_same_bytes(&more, &data[got.len()..got.len() + more.len()]);

    for name in CORRECT {
        let Some(correct) = start(name, &[]) else { continue };
        assert_same_bytes(&one_big_write(&correct, &data, IO_TIMEOUT).1, &data);
    }
}

/// Send `data` from one thread while reading the echo slowly (4 KiB a millisecond) on this
/// one: what came back before EOF, and the error that ended the reading, if one did.
fn slow_reader(addr: std::net::SocketAddr, data: &[u8]) -> (Vec<u8>, Option<std::io::Error>) {
    let client = connect_with_buffers(addr, None, Some(64 * 1024));
    let mut writer = client.try_clone().unwrap();
    let sent = data.to_vec();
    let sender = thread::spawn(move || {
        let _ = writer.write_all(&sent).and_then(|()| writer.shutdown(std::net::Shutdown::Write));
    });
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    let end = loop {
        match (&client).read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break Some(e),
        }
        thread::sleep(Duration::from_millis(1));
    };
    join_bounded(sender, IO_TIMEOUT);
    (got, end)
}

/// A partial write treated as complete: with a 4 KiB send buffer and a client that reads
/// slower than it sends, `write` takes part of each echo and the rest is dropped; the
/// connection ends normally, short of most of its bytes.
#[test]
fn partial_write_treated_as_complete_loses_bytes() {
    let data = random_bytes(1 << 20, 2);
    let Some(broken) = mistake("partial-write", false) else { return };
    let (got, end) = slow_reader(broken.tcp(), &data);
    assert!(end.is_none(), "the broken loop closes normally: {end:?}");
    assert!(got.len() < data.len(), "nothing was lost: the mistake did not show");
    eprintln!("partial-write: {} of {} bytes came back", got.len(), data.len());

    for name in CORRECT {
        let Some(correct) = start(name, &[]) else { continue };
        let (got, end) = slow_reader(correct.tcp(), &data);
        assert!(end.is_none(), "{name}: {end:?}");
        assert_same_bytes(&got, &data);
    }
}

/// A blocking call inside the loop: client A sends and does not read, the loop blocks in
/// `write_all` to A, and client B's five bytes get no echo while A does nothing; when A
/// reads, B is answered. The correct rungs answer B while A still does not read.
#[test]
fn blocking_call_inside_the_loop_makes_every_client_wait() {
    let data = random_bytes(16 << 20, 3);
    let Some(broken) = mistake("blocking-write", false) else { return };
    let hog = connect(broken.tcp());
    let sent = write_until_blocked(&hog, &data);
    let mut other = connect(broken.tcp());
    other.write_all(b"hello").unwrap();
    let got = read_until_quiet(&other, 5, STALL);
    assert!(got.is_empty(), "the other client was answered while the loop was blocked");
    assert_same_bytes(&read_n(&hog, sent), &data[..sent]); // A reads: the loop goes on
    assert_eq!(read_n(&other, 5), b"hello");

    for name in CORRECT {
        let Some(correct) = start(name, &[]) else { continue };
        let hog = connect(correct.tcp());
        write_until_blocked(&hog, &data);
        let mut other = connect(correct.tcp());
        other.write_all(b"hello").unwrap();
        assert_eq!(read_n(&other, 5), b"hello", "{name}");
    }
}

/// A client sends `data` and never reads. A server that holds `all` of it takes every byte
/// (the write completes, within the write timeout); a bounded one stops reading at its cap
/// (the writes stall). Returns how far the server's resident memory grew.
fn growth_from_a_client_that_never_reads(bin: &Bin, data: &[u8], all: bool) -> u64 {
    let before = proc_status_kib(bin.pid(), "VmRSS");
    let mut client = connect(bin.tcp());
    if all {
        client.write_all(data).expect("an unbounded server takes every byte");
        // It may still be reading the last of it out of its socket buffer.
        let half = before + (data.len() as u64 >> 11);
        wait_until(IO_TIMEOUT, || proc_status_kib(bin.pid(), "VmRSS") >= half);
    } else {
        let sent = write_until_blocked(&client, data);
        assert!(sent < data.len(), "a bounded server cannot take all {} bytes", data.len());
    }
    proc_status_kib(bin.pid(), "VmRSS").saturating_sub(before) * 1024
}

/// An unbounded per-connection buffer: the server holds all 32 MiB for a client that never
/// reads (its RSS grows by more than half of that), and so does rung 3, which lacks the cap
/// too; rung 4, with its 64 KiB cap, stops reading and grows by less than 4 MiB.
#[test]
fn unbounded_buffer_grows_with_a_client_that_never_reads() {
    const MIB: u64 = 1 << 20;
    let data = random_bytes(32 << 20, 4);
    for (name, args) in [("ladder-mistakes", &["unbounded"][..]), (RUNGS[2], &[])] {
        let Some(unbounded) = start(name, args) else { return };
        let growth = growth_from_a_client_that_never_reads(&unbounded, &data, true);
        assert!(growth > 16 * MIB, "{name}: grew by {} KiB only", growth / 1024);
    }
    for (name, args) in [(RUNGS[3], &[][..]), ("ladder-mistakes", &["unbounded", "--fixed"])] {
        let Some(bounded) = start(name, args) else { return };
        let growth = growth_from_a_client_that_never_reads(&bounded, &data, false);
        assert!(growth < 4 * MIB, "{name}: grew by {} KiB", growth / 1024);
    }
}

/// Send `data` 16 times over (64 MiB) unless the connection fails first, half-close, and
/// only then read: the echo that came, and the error that ended the connection, if one did
/// (a reset shows on the first call after it: here a write, or the read). 64 MiB is more than
/// the socket buffers hold, so a client of a server that stops reading cannot get past the
/// writes before that server closes, and reads only what was delivered before the close.
fn send_past_the_quota(bin: &Bin, data: &[u8]) -> (Vec<u8>, Option<std::io::Error>) {
    // A small receive buffer: most of the echo must wait in the server's send queue.
    let mut client = connect_with_buffers(bin.tcp(), None, Some(16 * 1024));
    let sent = (0..16).try_for_each(|_| client.write_all(data));
    let sent = sent.and_then(|()| client.shutdown(std::net::Shutdown::Write));
    let mut got = Vec::new();
    let read = client.read_to_end(&mut got);
    (got, sent.err().or(read.err()))
}

/// Closing with unread input: the server echoes its quota (256 KiB; the kernel takes all of
/// it), then closes while the client's later bytes are unread. Linux answers with a reset
/// and drops the echo still in the send queue: the client gets what fit in its receive
/// buffer, then ECONNRESET. Lingering (`--fixed`: FIN after the echo, read until the
/// client's EOF, then close) delivers all of it, then EOF.
#[test]
fn closing_with_unread_input_resets_and_destroys_the_echo() {
    const QUOTA: usize = 256 * 1024;
    let data = random_bytes(4 << 20, 5);
    let Some(broken) = mistake("close-unread", false) else { return };
    let (got, end) = send_past_the_quota(&broken, &data);
    let kind = end.as_ref().map(|e| e.kind());
    assert_eq!(kind, Some(ErrorKind::ConnectionReset), "expected a reset, got {end:?}");
    assert!(got.len() < QUOTA, "all {QUOTA} bytes arrived despite the reset");
    assert_same_bytes(&got, &data[..got.len()]);
    eprintln!("close-unread: {} of {QUOTA} bytes of echo arrived before the reset", got.len());

    let Some(fixed) = mistake("close-unread", true) else { return };
    let (got, end) = send_past_the_quota(&fixed, &data);
    assert!(end.is_none(), "lingering ends with EOF, not {end:?}");
    assert_same_bytes(&got, &data[..QUOTA]);
}

/// Stops the server (SIGSTOP) while it lives, so that events pile up in one batch; resumes
/// it (SIGCONT) when dropped, whatever happens.
struct Paused(u32);

impl Paused {
    /// Stop `pid` and wait (bounded) until it is stopped: `kill` only queues the signal.
    fn new(pid: u32) -> Paused {
        // SAFETY: signalling a child process of ours.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        let paused = Paused(pid);
        let stopped = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "PID (COMM) STATE ...": the state follows the last ')'.
            stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T'))
        };
        assert!(wait_until(IO_TIMEOUT, stopped), "the server did not stop");
        paused
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// Make one batch of events hold, in this order: the listener (a newcomer), then a stale
/// event for the slot the newcomer is about to take. Client X is served in slot 0; the
/// server is paused; Y connects and sends "hello"; X hangs up; the server resumes. Accepting
/// Y evicts X (one connection at a time) and gives Y slot 0; then X's hang-up event comes,
/// with slot 0's token. Returns Y's echo: empty if the stale event closed Y.
fn stale_event_meets_newcomer(bin: &Bin) -> Vec<u8> {
    let mut x = connect(bin.tcp());
    x.write_all(b"x").unwrap();
    assert_eq!(read_n(&x, 1), b"x");
    thread::sleep(Duration::from_millis(100)); // the loop is back in epoll_wait, nothing pending
    let paused = Paused::new(bin.pid());
    let mut y = connect(bin.tcp()); // the kernel completes the handshake: the listener is ready
    y.write_all(b"hello").unwrap(); // no EOF: Y itself gives no reason to be closed
    thread::sleep(Duration::from_millis(100)); // only for order: the listener's event first
    x.shutdown(std::net::Shutdown::Write).unwrap(); // then X's: readable, read-closed
    thread::sleep(Duration::from_millis(100));
    drop(paused);
    read_until_quiet(&y, 5, IO_TIMEOUT) // the echo, or (closed) EOF or a reset at once
}

/// Events are hints: a loop that believes an event's flags closes the newcomer Y for its
/// predecessor's hang-up; a loop that reads to learn finds Y's "hello" and echoes it.
#[test]
fn trusting_a_stale_event_closes_a_reused_slots_new_connection() {
    let Some(broken) = mistake("trust-events", false) else { return };
    let got = stale_event_meets_newcomer(&broken);
    assert!(got.is_empty(), "the newcomer was not closed: got {got:?}");

    let Some(fixed) = mistake("trust-events", true) else { return };
    assert_eq!(stale_event_meets_newcomer(&fixed), b"hello");
}
