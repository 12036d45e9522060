//! The reference servers must pass what the project's own server passes: exact echoes under
//! concurrency, half-close, running out of descriptors, clean stops. One body per behaviour,
//! run against each peer as `<behaviour>::epoll` and `<behaviour>::tokio`. The UDP echo,
//! `peer-udp`, has its own module (`udp`).

mod udp;
mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use util::*;

/// One `#[test]` per peer for each behaviour function named.
macro_rules! for_each_peer {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            #[test]
            fn epoll() {
                super::$behaviour(crate::util::Kind::Epoll)
            }
            #[test]
            fn tokio() {
                super::$behaviour(crate::util::Kind::Tokio)
            }
        }
    )*};
}

for_each_peer!(
    concurrent_clients_get_exact_echoes,
    half_close_gets_everything_then_eof,
    message_and_fin_together_get_echo_then_eof,
    out_of_descriptors_pauses_without_spinning_then_serves,
    stop_signals_exit_zero,
    bad_argument_exits_2,
    listens_on_ipv6_loopback,
);

/// Several clients at once, each sending 4 MiB in random chunk sizes while it reads: every
/// client gets its own bytes back, exactly and in order.
fn concurrent_clients_get_exact_echoes(kind: Kind) {
    const CLIENTS: u64 = 6;
    let peer = Peer::start(kind);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            // Every other client is narrow (see `connect_narrow`): its echo backs up into the
            // server, which must then buffer, wait for EPOLLOUT and keep the order.
            let stream = if seed % 2 == 0 { peer.connect() } else { connect_narrow(peer.addr()) };
            thread::spawn(move || {
                let data = random_bytes(4 << 20, seed);
                assert_same_bytes(&echo_concurrently(&stream, &data, seed + 100), &data);
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed"); // bounded: its socket has timeouts
    }
}

/// 1 MiB, then a half-close, and only then does the client start reading: every byte comes
/// back, then a clean EOF. The client's narrow receive side makes the server likely to hold
/// unsent bytes when the FIN arrives (kernel buffer sizing decides, so several rounds); it
/// must finish echoing them before it closes.
fn half_close_gets_everything_then_eof(kind: Kind) {
    let peer = Peer::start(kind);
    for round in 0..4 {
        let stream = connect_narrow(peer.addr());
        let data = random_bytes(1 << 20, round);
        // Sent from a thread: 1 MiB may not fit the buffers both ways while nobody reads.
        let sender = send_in_chunks(&stream, &data, round + 100, true);
        thread::sleep(Duration::from_millis(100)); // let the FIN reach the server first, if it fits
        let mut got = Vec::new();
        (&stream).read_to_end(&mut got).expect("every byte, then EOF (not a reset)");
        sender.join().expect("sender panicked").expect("send and half-close");
        assert_same_bytes(&got, &data);
    }
}

/// Many clients each send a message and half-close at once, before anyone reads, so the
/// server often finds data with the FIN queued behind it: a read stops short of the FIN,
/// and no new edge will announce it. Every client still gets its message, then EOF.
fn message_and_fin_together_get_echo_then_eof(kind: Kind) {
    let peer = Peer::start(kind);
    let clients: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut client = peer.connect();
            client.write_all(format!("message {i:>3}").as_bytes()).expect("send");
            client.shutdown(Shutdown::Write).expect("half-close");
            client
        })
        .collect();
    for (i, mut client) in clients.into_iter().enumerate() {
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("the message, then EOF");
        assert_eq!(got, format!("message {i:>3}").as_bytes());
    }
}

/// peer-epoll: an urgent (MSG_OOB) byte between two writes comes back in its place
/// (SO_OOBINLINE), and the bytes behind it, which a read stops short of, are not left
/// waiting for an edge that never comes (EPOLLPRI). Not run against peer-tokio: tokio's
/// echo server drops the urgent byte and holds the rest until the client sends again.
#[test]
fn urgent_byte_is_echoed_in_place_epoll() {
    let peer = Peer::start(Kind::Epoll);
    let mut client = peer.connect();
    for round in 0..20 {
        client.write_all(b"before ").expect("send");
        send_urgent(&client, b'!');
        client.write_all(b" after").expect("send");
        let mut got = [0; 14];
        client.read_exact(&mut got).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(&got, b"before ! after", "round {round}");
    }
}

/// With only 32 descriptors, more clients than fit: the server keeps serving the ones it
/// has, does not spin on the failing accept (< 30% of a core over a second, while more
/// clients keep arriving), and once the clients leave it serves one that waited in the
/// queue and holds no descriptor more than before.
fn out_of_descriptors_pauses_without_spinning_then_serves(kind: Kind) {
    const LIMIT: usize = 32;
    let peer = Peer::start_with(kind, "127.0.0.1:0", Some(LIMIT as u64));
    let idle_descriptors = peer.open_descriptors();
    let mut clients: Vec<TcpStream> = (0..LIMIT + 8).map(|_| peer.connect()).collect();
    // Out of descriptors: every number below the limit is taken, so the next accept fails.
    wait_until(IO_TIMEOUT, "the server to use all its descriptors", || {
        peer.open_descriptors().iter().filter(|&&fd| fd < LIMIT).count() == LIMIT
    });
    assert_echoes(&mut clients[0], b"served before the limit");

    let cpu_before = peer.cpu_time();
    for _ in 0..5 {
        clients.push(peer.connect()); // new edges on the listener while accepting is failing
        thread::sleep(Duration::from_millis(200));
    }
    let cpu_used = peer.cpu_time() - cpu_before;
    assert!(cpu_used < Duration::from_millis(300), "spinning: {cpu_used:?} of CPU in about 1 s");
    assert_echoes(&mut clients[1], b"still served while out of descriptors");

    // Queued while accepting fails; once the others leave, no new connection arrives to
    // raise an edge on the listener: the server must retry by itself.
    let newcomer = peer.connect();
    drop(clients);
    let data = random_bytes(256 << 10, 9);
    assert_same_bytes(&echo_concurrently(&newcomer, &data, 10), &data);
    drop(newcomer);
    wait_until(IO_TIMEOUT, "every client's descriptor to be closed", || {
        peer.open_descriptors() == idle_descriptors
    });
}

/// SIGTERM and SIGINT each stop the server with exit status 0, even with a client connected.
fn stop_signals_exit_zero(kind: Kind) {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let peer = Peer::start(kind);
        let mut client = peer.connect();
        assert_echoes(&mut client, b"before the signal");
        let status = peer.stop_with(signal);
        assert!(status.success(), "signal {signal}: {status}");
    }
}

/// An address that does not parse: one line on stderr and exit status 2.
fn bad_argument_exits_2(kind: Kind) {
    let mut child = Command::new(kind.program())
        .arg("not-an-address")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_bounded(&mut child, IO_TIMEOUT);
    let mut stderr = String::new();
    child.stderr.take().expect("piped stderr").read_to_string(&mut stderr).expect("read stderr");
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains("not-an-address"), "names the argument: {stderr:?}");
}

/// `[::1]:0` binds the IPv6 loopback, the line shows it, and echoes work there.
fn listens_on_ipv6_loopback(kind: Kind) {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("note: no IPv6 loopback here; skipping");
        return;
    }
    let peer = Peer::start_with(kind, "[::1]:0", None);
    assert!(peer.addr().ip().is_loopback() && peer.addr().is_ipv6(), "{}", peer.addr());
    assert_echoes(&mut peer.connect(), b"over IPv6");
}
