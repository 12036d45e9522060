//! Several listeners in one process (`echoloop serve ADDR...`): TCP, Unix and UDP side by
//! side, every one echoing exactly; all bound before any is announced, none served if one
//! cannot be bound; the same address twice refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::util::{
    Bin, IO_TIMEOUT, SocketPath, assert_same_bytes, connect, echo_chunked, random_bytes, run_bin,
};
use super::variants::Variant;

/// 256 KiB through a stream listener (`HOST:PORT` or `unix:PATH`), compared byte for byte.
pub(crate) fn assert_stream_echoes(addr: &str, seed: u64) {
    let data = random_bytes(256 * 1024, seed);
    let echoed = match addr.strip_prefix("unix:") {
        Some(path) => {
            let stream = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            echo_chunked(stream, data.clone(), seed)
        }
        None => echo_chunked(connect(addr.parse().expect("a TCP address")), data.clone(), seed),
    };
    assert_same_bytes(&echoed, &data);
}

/// Datagrams of a few sizes through a `udp:` listener, each answered unchanged.
pub(crate) fn assert_datagrams_echo(addr: &str, seed: u64) {
    let to: SocketAddr = addr.strip_prefix("udp:").expect("a udp: address").parse().unwrap();
    let client = UdpSocket::bind(if to.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = vec![0; 70_000];
    for (i, size) in [0, 1, 1472, 9000, 65_000].into_iter().enumerate() {
        let datagram = random_bytes(size, seed + i as u64);
        client.send_to(&datagram, to).unwrap();
        let (n, from) =
            client.recv_from(&mut reply).unwrap_or_else(|e| panic!("{addr}: no reply to {size}: {e}"));
        assert_eq!(from, to, "the reply comes from the listener's address");
        assert_same_bytes(&reply[..n], &datagram);
    }
}

/// Exact echo on whatever kind of listener `addr` is.
pub(crate) fn assert_echoes(addr: &str, seed: u64) {
    if addr.starts_with("udp:") {
        assert_datagrams_echo(addr, seed)
    } else {
        assert_stream_echoes(addr, seed)
    }
}

/// Stop `server` with SIGTERM; it exits 0. Its log.
pub(crate) fn stop(server: Bin) -> String {
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    log
}

/// Five listeners of every kind in one process (TCP over IPv4 and IPv6, Unix, UDP over IPv4
/// and IPv6): one `listening on` line each, in the order given, with the real address; each
/// echoes exactly; the summary counts each apart; the Unix socket file goes with the server.
fn several_listeners_of_every_kind(variant: Variant) {
    let unix = SocketPath::new(&format!("listeners-{variant:?}"));
    let unix_addr = unix.addr();
    let given = ["127.0.0.1:0", unix_addr.as_str(), "udp:127.0.0.1:0", "[::1]:0", "udp:[::1]:0"];
    let server = Bin::serve_listening(&variant.serve_args(&given)[1..], given.len());
    for (addr, asked) in server.addrs.iter().zip(given) {
        let (kind, _) = asked.rsplit_once(':').unwrap_or((asked, ""));
        assert!(addr.starts_with(kind) && !addr.ends_with(":0"), "{asked} announced as {addr}");
    }
    assert_eq!(server.addrs[1], unix_addr);
    for (i, addr) in server.addrs.iter().enumerate() {
        assert_echoes(addr, 100 + i as u64);
    }
    let log = stop(server);
    let summary = log.lines().find(|l| l.contains("summary: ")).expect("a summary line");
    assert!(summary.contains("; per listener: "), "{summary}");
    assert!(summary.contains(&format!("{unix_addr} 1 connections, {} bytes", 256 * 1024)), "{summary}");
    assert!(!unix.0.exists(), "the socket file was left behind");
}
for_variants!(several_listeners_of_every_kind, needs: [UnixSocket, Datagrams]);

/// TCP and Unix listeners side by side, for the variants that serve no UDP or no Unix.
fn several_stream_listeners(variant: Variant) {
    let given = ["127.0.0.1:0", "[::1]:0", "127.0.0.1:0"];
    let server = Bin::serve_listening(&variant.serve_args(&given)[1..], given.len());
    assert_ne!(server.addrs[0], server.addrs[2], "port 0 twice is two ports");
    for (i, addr) in server.addrs.iter().enumerate() {
        assert_echoes(addr, 200 + i as u64);
    }
    stop(server);
}
for_variants!(several_stream_listeners);

/// If the third address cannot be bound, nothing is served: one line naming it, exit 1, no
/// `listening on` line, and the Unix socket file bound for the second is gone again.
#[test]
fn a_bind_failure_on_the_third_address_leaves_nothing_behind() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let unix = SocketPath::new("bind-failure");
    let unix_addr = unix.addr();
    let (code, stdout, stderr) = run_bin(&["serve", "udp:127.0.0.1:0", &unix_addr, &taken_addr]);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(stdout.is_empty(), "announced before every address was bound: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {taken_addr}")), "{stderr}");
    assert!(!unix.0.exists(), "the socket file of the second address was left behind");
}

/// The same address twice is a usage error (exit 2), before anything is bound; port 0
/// twice is not (two ports), nor TCP and UDP on one port (two services).
#[test]
fn the_same_address_twice_is_a_usage_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let (code, stdout, stderr) =
        run_bin(&["serve", &port, &format!("udp:{port}"), &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(&format!("127.0.0.1:{port} is given twice")), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `--workers 2` gives every worker every listener: TCP and UDP on shared ports, both
/// served; the JSON summary has a share per listener, named by its address. The event
/// loop's workers and io-uring's.
#[test]
fn workers_share_every_listener_and_the_json_counts_each() {
    workers_share_every_listener("event-loop");
    match super::io_uring::kernel_refuses() {
        None => workers_share_every_listener("io-uring"),
        Some(reason) => eprintln!("io-uring skipped: {reason}"),
    }
}

fn workers_share_every_listener(model: &str) {
    let json = std::env::temp_dir().join(format!("echoloop-listeners-{model}-{}.json", std::process::id()));
    let path = json.to_str().unwrap();
    let server = Bin::serve_listening(
        &["--model", model, "--workers", "2", "127.0.0.1:0", "udp:127.0.0.1:0", "--summary-json", path],
        2,
    );
    for round in 0..3 {
        assert_stream_echoes(&server.addrs[0], 300 + round);
        assert_datagrams_echo(&server.addrs[1], 310 + round * 10);
    }
    stop(server);
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let listeners = value["listeners"].as_array().expect("a listeners array");
    assert_eq!(listeners.len(), 2, "{value}");
    assert!(listeners[1]["addr"].as_str().unwrap().starts_with("udp:127.0.0.1:"), "{value}");
    assert_eq!(listeners[0]["connections"], 3, "{value}");
    assert_eq!(listeners[0]["bytes_echoed"], 3 * 256 * 1024, "{value}");
    assert_eq!(listeners[1]["datagrams"]["echoed"], 15, "{value}");
    assert_eq!(value["per_worker"].as_array().map(Vec::len), Some(2), "{value}");
}

/// `--max-connections` counts every listener's connections together: one open on the TCP
/// listener fills a cap of 1, and the Unix listener's next client is refused.
fn the_connection_limit_is_the_whole_servers(variant: Variant) {
    let unix = SocketPath::new(&format!("limit-{variant:?}"));
    let unix_addr = unix.addr();
    let server = Bin::serve_listening(
        &variant.serve_args(&["--max-connections", "1", "127.0.0.1:0", &unix_addr])[1..],
        2,
    );
    let mut first = connect(server.addrs[0].parse().unwrap());
    first.write_all(b"held").unwrap();
    let mut echo = [0; 4];
    first.read_exact(&mut echo).unwrap();
    let mut second = UnixStream::connect(&unix.0).unwrap();
    second.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    let _ = second.read_to_end(&mut rest); // closed at once: EOF (or a reset)
    assert!(rest.is_empty());
    assert!(server.wait_for_stderr("max-connections 1 reached", IO_TIMEOUT), "{}", server.stderr());
    drop(first);
    stop(server);
}
for_variants!(the_connection_limit_is_the_whole_servers, needs: [UnixSocket, Concurrency]);
