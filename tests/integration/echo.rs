//! The echo itself: byte-exact over TCP (v4 and v6) and Unix sockets, for one large
//! transfer and for hundreds of clients at once; and the Unix socket file's lifecycle.

use std::io::{ErrorKind, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use echoloop::{ListenAddr, Model, Server, ServerConfig};

use crate::util::*;

/// A config for the event loop on `addr`.
fn config_on(addr: &str) -> ServerConfig {
    config(Model::EventLoop).with_addr(addr.parse().unwrap())
}

/// 8 MiB of random bytes, sent in random chunks while being read back, return byte for byte.
#[test]
fn large_random_transfer_is_exact() {
    let server = TestServer::start(config(Model::EventLoop));
    let data = random_bytes(8 << 20, 1);
    let got = echo_chunked(server.connect(), data.clone(), 2);
    assert_same_bytes(&got, &data);
    assert_eq!(server.stop().bytes_echoed, data.len() as u64);
}

/// 300 clients open at once, each echoing random-sized chunks, all get exactly their own bytes.
#[test]
fn hundreds_of_concurrent_clients_with_random_chunking() {
    const CLIENTS: usize = 300;
    let server = TestServer::start(config(Model::EventLoop));
    let addr = server.tcp();
    // Each client counts itself here after its first echo, then waits for the others, so
    // every connection is open at once before any of them goes on.
    let ready = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let ready = Arc::clone(&ready);
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut stream = connect(addr);
                    let mut rng = fastrand::Rng::with_seed(i as u64);
                    let data = random_bytes(rng.usize(1..=96 * 1024), 1_000 + i as u64);
                    let mut rest = &data[..];
                    let mut first = true;
                    while !rest.is_empty() {
                        // At most 16 KiB in flight: kernel buffers always hold that, so a
                        // write then a read can never deadlock.
                        let (chunk, tail) = rest.split_at(rng.usize(1..=rest.len().min(16 * 1024)));
                        stream.write_all(chunk).expect("send");
                        let echoed = read_n(&stream, chunk.len());
                        assert_same_bytes(&echoed, chunk);
                        rest = tail;
                        if first {
                            first = false;
                            ready.fetch_add(1, Ordering::SeqCst);
                            let all = wait_until(IO_TIMEOUT, || ready.load(Ordering::SeqCst) == CLIENTS);
                            assert!(all, "not all clients got their first echo");
                        }
                    }
                    data.len() as u64
                })
                .expect("spawn client")
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| join_bounded(c, Duration::from_secs(60))).sum();
    let summary = server.stop();
    assert_eq!(summary.connections, CLIENTS as u64);
    assert_eq!(summary.peak_connections, CLIENTS as u64);
    assert_eq!(summary.bytes_echoed, total);
}

/// Two workers share one port (SO_REUSEPORT); every client is echoed exactly; summaries add up.
#[test]
fn two_workers_share_the_port() {
    let server = TestServer::start(config(Model::EventLoop).with_workers(2));
    let clients: Vec<_> = (0..40)
        .map(|i| {
            let stream = server.connect();
            thread::spawn(move || {
                let data = random_bytes(100_000 + i * 1000, 500 + i as u64);
                assert_same_bytes(&echo_chunked(stream, data.clone(), i as u64), &data);
                data.len() as u64
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| join_bounded(c, IO_TIMEOUT)).sum();
    let summary = server.stop();
    assert_eq!(summary.connections, 40);
    assert_eq!(summary.per_worker.len(), 2);
    assert_eq!(summary.per_worker.iter().map(|w| w.connections).sum::<u64>(), 40);
    assert_eq!(summary.bytes_echoed, total);
}

/// The server listens on the IPv6 loopback `[::1]:0` and echoes exactly there.
#[test]
fn ipv6_loopback_echo() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        eprintln!("note: skipping ipv6_loopback_echo: this host has no IPv6 loopback ({e})");
        return;
    }
    let server = TestServer::start(config_on("[::1]:0"));
    assert!(server.tcp().is_ipv6(), "bound {}", server.tcp());
    let data = random_bytes(1 << 20, 3);
    assert_same_bytes(&echo_chunked(server.connect(), data.clone(), 4), &data);
}

/// Echo over a Unix domain socket is exact, and the socket file is gone once the server stops.
#[test]
fn unix_socket_echo_and_file_removed_on_stop() {
    let path = SocketPath::new("echo");
    let server = TestServer::start(config_on(&path.addr()));
    assert_eq!(server.addr(), &ListenAddr::Unix(path.0.clone()));
    assert!(path.0.exists(), "socket file not created");
    let data = random_bytes(2 << 20, 5);
    assert_same_bytes(&echo_chunked(server.connect_unix(), data.clone(), 6), &data);
    server.stop();
    assert!(!path.0.exists(), "socket file left behind after stop");
}

/// A socket file left by a dead server (nobody listening) is replaced, not an error.
#[test]
fn stale_unix_socket_file_is_replaced() {
    let path = SocketPath::new("stale");
    drop(UnixListener::bind(&path.0).expect("make a socket file")); // std leaves the file
    assert!(path.0.exists());
    let server = TestServer::start(config_on(&path.addr()));
    let data = random_bytes(64 * 1024, 7);
    assert_same_bytes(&echo_chunked(server.connect_unix(), data.clone(), 8), &data);
    server.stop();
    assert!(!path.0.exists());
}

/// A live server's socket file is "address already in use" (naming it), and it keeps serving.
#[test]
fn live_unix_socket_is_address_in_use() {
    let path = SocketPath::new("live");
    let server = TestServer::start(config_on(&path.addr()));
    let err = match Server::bind(&config_on(&path.addr())) {
        Ok(_) => panic!("a second server bound a live socket"),
        Err(e) => e,
    };
    let echoloop::Error::Io(io_err) = &err else { panic!("not an I/O error: {err}") };
    assert_eq!(io_err.kind(), ErrorKind::AddrInUse, "{err}");
    let message = err.to_string();
    assert!(message.contains(&path.addr()), "{message}");
    assert!(message.to_lowercase().contains("address already in use"), "{message}");
    let data = random_bytes(10_000, 9);
    assert_same_bytes(&echo_chunked(server.connect_unix(), data.clone(), 10), &data);
    server.stop();
}

/// 5000 connections open at once on one event loop, each echoed exactly.
#[test]
fn five_thousand_concurrent_connections() {
    const CONNECTIONS: usize = 5000;
    // Both ends live in this process: two descriptors per connection, plus some slack.
    if let Err(e) = raise_descriptor_limit(2 * CONNECTIONS as u64 + 100) {
        eprintln!("note: skipping five_thousand_concurrent_connections: {e}");
        return;
    }
    let server = TestServer::start(config(Model::EventLoop));
    let mut clients: Vec<std::net::TcpStream> = (0..CONNECTIONS).map(|_| server.connect()).collect();
    // Every client sends before any reads: all 5000 are open and waiting at once.
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(format!("client {i:>5}").as_bytes()).unwrap();
    }
    for (i, client) in clients.iter().enumerate() {
        assert_eq!(read_n(client, 12), format!("client {i:>5}").as_bytes());
    }
    drop(clients);
    let summary = server.stop();
    assert_eq!(summary.peak_connections, CONNECTIONS as u64);
    assert_eq!(summary.bytes_echoed, 12 * CONNECTIONS as u64);
}

/// Raise this process's soft RLIMIT_NOFILE to at least `want` (within the hard limit).
fn raise_descriptor_limit(want: u64) -> Result<(), String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls with valid pointers to an initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
        }
        if limit.rlim_cur >= want as libc::rlim_t {
            return Ok(());
        }
        if limit.rlim_max < want as libc::rlim_t {
            return Err(format!("the hard limit on open files is {}, {want} needed", limit.rlim_max));
        }
        limit.rlim_cur = want as libc::rlim_t;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
