//! `--proxy-protocol`: every connection begins with a PROXY v1 or v2 header, in every model.
//! The header is consumed and never echoed, split at any byte; the client it names is the
//! one logged; a v2 LOCAL header (a balancer's health check) is served; a connection with
//! no valid header, or too slow a one, is closed with nothing echoed and counted.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::metrics::scrape;
use super::util::{Bin, IO_TIMEOUT, connect, random_bytes, run_bin};
use super::variants::Variant;

/// A v1 header naming `src` (to a made-up destination).
pub(crate) fn v1(src: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    let dst = if src.is_ipv4() { "192.0.2.1" } else { "2001:db8::1" };
    format!("PROXY {family} {} {dst} {} 7\r\n", src.ip(), src.port()).into_bytes()
}

/// A v2 header: `command` 0 (LOCAL) or 1 (PROXY) naming IPv4 `src`, with `tlv` after the
/// addresses.
pub(crate) fn v2(command: u8, src: std::net::SocketAddrV4, tlv: &[u8]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend([0x20 | command, 0x11]);
    header.extend(u16::try_from(12 + tlv.len()).unwrap().to_be_bytes());
    header.extend(src.ip().octets());
    header.extend([192, 0, 2, 1]);
    header.extend(src.port().to_be_bytes());
    header.extend(7u16.to_be_bytes());
    header.extend(tlv);
    header
}

/// A server for `variant` with `--proxy-protocol`, `--metrics` and debug logs.
fn serve(variant: Variant, extra: &[&str]) -> Bin {
    let args =
        [variant.args(), &["127.0.0.1:0", "--proxy-protocol", "--metrics", "127.0.0.1:0"], extra].concat();
    Bin::serve_env(&[("RUST_LOG", "echoloop=debug")], &args)
}

/// Write `bytes` one at a time, each its own segment, so the server reads them apart.
fn write_bytewise(stream: &mut TcpStream, bytes: &[u8]) {
    stream.set_nodelay(true).unwrap();
    for byte in bytes {
        stream.write_all(&[*byte]).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
}

/// Send `payload`, half-close, and return everything echoed until the server closes.
fn echo_rest(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echo = Vec::new();
    stream.read_to_end(&mut echo).unwrap();
    echo
}

/// Everything the server sends until it closes (a reset counts as the end).
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading until the server closes: {e}"),
    }
    got
}

/// v1 and v2 headers sent a byte at a time, then data: exactly the data comes back, and
/// the log names the client from the header, not the connection's peer.
fn headers_split_at_every_byte(variant: Variant) {
    let server = serve(variant, &[]);
    for (i, header) in [
        v1("203.0.113.7:40001".parse().unwrap()),
        v1("[2001:db8::7]:40002".parse().unwrap()),
        v2(1, "203.0.113.8:40003".parse().unwrap(), &[0x04, 0x00, 0x03, 1, 2, 3]), // a TLV, skipped
    ]
    .iter()
    .enumerate()
    {
        let mut stream = connect(server.tcp());
        write_bytewise(&mut stream, header);
        let payload = random_bytes(20_000, i as u64);
        let echo = echo_rest(&mut stream, &payload);
        assert!(echo == payload, "header {i}: {} bytes echoed for {} sent", echo.len(), payload.len());
    }
    for client in ["203.0.113.7:40001", "[2001:db8::7]:40002", "203.0.113.8:40003"] {
        assert!(server.wait_for_stderr(client, IO_TIMEOUT), "{client} not logged:\n{}", server.stderr());
    }
    let metrics = scrape(&server);
    assert_eq!(metrics.value("echoloop_connections_accepted_total", &server.addr), 3);
    assert_eq!(
        metrics.value("echoloop_received_bytes_total", &server.addr),
        60_000,
        "header bytes are not counted"
    );
}
for_variants!(headers_split_at_every_byte);

/// A v2 LOCAL header (HAProxy's health check with send-proxy-v2) is served as the real peer.
fn local_header_is_served(variant: Variant) {
    let server = serve(variant, &[]);
    let mut stream = connect(server.tcp());
    let peer = stream.local_addr().unwrap();
    stream.write_all(&v2(0, "198.51.100.1:9".parse().unwrap(), &[])).unwrap();
    assert_eq!(echo_rest(&mut stream, b"health"), b"health");
    assert!(server.wait_for_stderr(&peer.to_string(), IO_TIMEOUT), "{peer} not logged:\n{}", server.stderr());
    assert!(!server.stderr().contains("198.51.100.1"), "a LOCAL header's addresses are ignored");
}
for_variants!(local_header_is_served);

/// No header, a malformed one, and one still incomplete after --proxy-timeout: each
/// connection is closed, nothing it sent is echoed, and each is counted and logged at debug.
fn bad_headers_are_refused_and_counted(variant: Variant) {
    let server = serve(variant, &["--proxy-timeout", "0.5"]);
    let refuse = |first: &[u8]| {
        let mut stream = connect(server.tcp());
        stream.write_all(first).unwrap();
        let started = Instant::now();
        let got = read_until_closed(&mut stream);
        assert!(got.is_empty(), "{:?} got an echo: {:?}", String::from_utf8_lossy(first), got);
        started.elapsed()
    };
    refuse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    refuse(b"PROXY TCP4 not-an-address 192.0.2.1 1 2\r\nhello");
    let waited = refuse(b"PROXY TCP4 203.0.113.9 ");
    assert!(waited >= Duration::from_millis(400), "closed after {waited:?}, before --proxy-timeout");
    let metrics = scrape(&server);
    let rejected = metrics.labelled("echoloop_connections_rejected_total", &server.addr, "proxy_header");
    assert_eq!(rejected, 3, "{}", metrics.0);
    assert_eq!(metrics.value("echoloop_connections_accepted_total", &server.addr), 0);
    let stderr = server.stderr();
    let refusals = stderr.lines().filter(|l| l.contains("DEBUG") && l.contains("no valid PROXY header"));
    assert_eq!(refusals.count(), 3, "{stderr}");
    // A good client after them is served.
    let mut stream = connect(server.tcp());
    stream.write_all(&v1("203.0.113.10:1".parse().unwrap())).unwrap();
    assert_eq!(echo_rest(&mut stream, b"after"), b"after");
}
for_variants!(bad_headers_are_refused_and_counted);

/// `echoloop bench --proxy-protocol v1|v2` drives such a server (echo and churn), and a
/// server without --proxy-protocol echoes the header back, which the bench reports.
#[test]
fn bench_sends_headers_a_proxy_server_accepts() {
    let server = serve(Variant::EventLoop, &[]);
    for (version, mode) in [("v1", "echo"), ("v2", "echo"), ("v2", "churn")] {
        let (code, stdout, stderr) = run_bin(&[
            "bench",
            &server.addr,
            "--proxy-protocol",
            version,
            "--mode",
            mode,
            "--connections",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0",
        ]);
        assert_eq!(code, 0, "bench --proxy-protocol {version} --mode {mode}:\n{stdout}\n{stderr}");
    }
    let metrics = scrape(&server);
    assert_eq!(metrics.labelled("echoloop_connections_rejected_total", &server.addr, "proxy_header"), 0);
    // UDP carries no PROXY header.
    let (code, _, stderr) = run_bin(&["bench", "udp:127.0.0.1:9", "--proxy-protocol", "v1"]);
    assert_eq!(code, 2, "{stderr}");
}

/// The options are for stream listeners: a UDP-only server refuses them with one line.
#[test]
fn proxy_protocol_needs_a_stream_listener() {
    let (code, stdout, stderr) = run_bin(&["serve", "udp:127.0.0.1:0", "--proxy-protocol"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let (code, _, stderr) = run_bin(&["serve", "127.0.0.1:0", "--proxy-timeout", "1"]);
    assert_eq!(code, 2, "--proxy-timeout without --proxy-protocol: {stderr}");
}
