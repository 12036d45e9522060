//! `peer-udp`, the naive UDP echo: what echoloop's UDP echo is measured against must itself
//! echo exactly: every datagram back whole, once, to the socket that sent it.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

use crate::util::*;

/// How long a test waits for a reply that must not come.
const SILENCE: Duration = Duration::from_millis(300);

/// A socket on the loopback of `server`'s family, with timeouts.
fn client_for(server: SocketAddr) -> UdpSocket {
    let local: SocketAddr = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }.parse().unwrap();
    let socket = UdpSocket::bind(local).expect("bind a client socket");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

/// Send `data`, take the one reply: it comes from the server's address, byte for byte the same.
fn assert_datagram_echoes(socket: &UdpSocket, server: SocketAddr, data: &[u8]) {
    socket.send_to(data, server).expect("send");
    let mut buf = vec![0; 64 * 1024];
    let (n, from) = socket.recv_from(&mut buf).expect("a reply");
    assert_eq!(from, server, "the reply comes from the address the datagram went to");
    assert_same_bytes(&buf[..n], data);
}

/// Nothing more arrives on `socket` for a while.
fn assert_silent(socket: &UdpSocket) {
    socket.set_read_timeout(Some(SILENCE)).unwrap();
    let mut buf = [0; 64];
    let extra = socket.recv_from(&mut buf);
    assert!(extra.is_err(), "an unexpected datagram: {extra:?}");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// Every size from empty to the largest IPv4 datagram comes back whole and exactly once.
#[test]
fn every_size_comes_back_whole_and_once() {
    let peer = Peer::start(Kind::Udp);
    let socket = client_for(peer.addr());
    for (seed, size) in [0, 1, 8, 128, 1200, 1472, 9000, 65_507].into_iter().enumerate() {
        assert_datagram_echoes(&socket, peer.addr(), &random_bytes(size, seed as u64));
    }
    assert_silent(&socket);
}

/// Several sockets at once, each a run of request and reply: each gets its own bytes back.
#[test]
fn concurrent_sockets_each_get_their_own_datagrams() {
    let peer = Peer::start(Kind::Udp);
    let clients: Vec<_> = (0..8u64)
        .map(|seed| {
            let (server, socket) = (peer.addr(), client_for(peer.addr()));
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                for i in 0..200 {
                    let data = random_bytes(rng.usize(0..4000), seed * 1000 + i);
                    assert_datagram_echoes(&socket, server, &data);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed"); // bounded: its socket has timeouts
    }
}

/// A datagram from the echo port (7) is not answered: two echoes cannot be set answering
/// each other. Binding port 7 needs root and a free port; without either, the test says so.
#[test]
fn a_datagram_from_the_echo_port_is_not_answered() {
    let peer = Peer::start(Kind::Udp);
    let Ok(from_echo_port) = UdpSocket::bind("127.0.0.1:7") else {
        eprintln!("note: cannot bind 127.0.0.1:7 (not root, or taken); skipping");
        return;
    };
    from_echo_port.send_to(b"from port 7", peer.addr()).expect("send");
    assert_silent(&from_echo_port);
    assert_datagram_echoes(&client_for(peer.addr()), peer.addr(), b"from any other port");
}

/// SIGTERM and SIGINT stop it with exit status 0, whether or not datagrams are flowing.
#[test]
fn stop_signals_exit_zero() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let peer = Peer::start(Kind::Udp);
        assert_datagram_echoes(&client_for(peer.addr()), peer.addr(), b"before the signal");
        let status = peer.stop_with(signal);
        assert!(status.success(), "signal {signal}: {status}");
    }
}

/// An address that does not parse: one line on stderr and exit status 2.
#[test]
fn bad_argument_exits_2() {
    super::bad_argument_exits_2(Kind::Udp);
}

/// `[::1]:0` binds the IPv6 loopback and echoes there.
#[test]
fn listens_on_ipv6_loopback() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("note: no IPv6 loopback here; skipping");
        return;
    }
    let peer = Peer::start_with(Kind::Udp, "[::1]:0", None);
    assert!(peer.addr().is_ipv6(), "{}", peer.addr());
    assert_datagram_echoes(&client_for(peer.addr()), peer.addr(), b"over IPv6");
}
