//! Half-close: a client that shuts down its sending side still gets every byte back, and
//! only then sees EOF, even when the server holds unsent bytes at that moment.

use std::io::{Read, Write};
use std::net::Shutdown;

use echoloop::Model;

use crate::util::*;

/// Send everything, half-close, then read: every byte comes back, then a clean EOF.
#[test]
fn send_all_then_half_close_then_read_everything() {
    let server = TestServer::start(config(Model::EventLoop));
    let mut stream = server.connect();
    // Small enough to sit in kernel buffers and the pending buffer without our reading.
    let data = random_bytes(48 * 1024, 21);
    let mut rng = fastrand::Rng::with_seed(22);
    let mut rest = &data[..];
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rng.usize(1..=rest.len().min(5000)));
        stream.write_all(chunk).unwrap();
        rest = tail;
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("EOF after the echo, not an error");
    assert_same_bytes(&got, &data);
    assert_eq!(server.stop().bytes_echoed, data.len() as u64);
}

/// A half-close that arrives while the server holds pending bytes does not cut the echo short.
#[test]
fn half_close_while_server_has_pending_bytes() {
    // Tiny server send buffer and client receive buffer, and the client does not read until
    // after its half-close: the trace must show the EOF read with bytes still pending.
    let bin = Bin::serve_env(&[("RUST_LOG", "echoloop=trace")], &["--send-buffer", "4096", "127.0.0.1:0"]);
    let stream = connect_with_buffers(bin.tcp(), None, Some(4096));
    // More than the way back (server send buffer + client receive buffer) holds, so the
    // rest waits in the server's pending buffer; less than the whole round trip holds, so
    // writing all of it without reading cannot block for good.
    let data = random_bytes(80 * 1024, 23);
    assert_same_bytes(&send_all_then_read_echo(stream, &data), &data);

    bin.signal(libc::SIGTERM);
    let (status, log) = bin.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    let eof = log.lines().find(|l| l.contains("read EOF")).unwrap_or_else(|| panic!("no EOF trace:\n{log}"));
    let pending: usize = eof.rsplit("pending=").next().unwrap().trim().parse().expect("pending=N");
    assert!(pending > 0, "the server had nothing pending at the half-close: {eof}");
    assert_eq!(summary_echoed_bytes(&log), data.len() as u64);
}

/// Over a Unix socket too: send more than the pending cap, half-close, read it all, then EOF.
#[test]
fn unix_socket_half_close_after_more_than_the_cap() {
    let path = SocketPath::new("half-close");
    let server = TestServer::start(path.config(Model::EventLoop));
    // Over the 64 KiB cap, but within what the Unix socket buffers hold both ways.
    let data = random_bytes(160 * 1024, 24);
    assert_same_bytes(&send_all_then_read_echo(server.connect_unix(), &data), &data);
    assert_eq!(server.stop().bytes_echoed, data.len() as u64);
}

/// A client that sends nothing and half-closes gets a clean EOF at once, and nothing else.
#[test]
fn empty_half_close_gets_eof() {
    let server = TestServer::start(config(Model::EventLoop));
    let mut stream = server.connect();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(stream.read(&mut [0; 16]).expect("EOF"), 0);
    let summary = server.stop();
    assert_eq!((summary.connections, summary.bytes_echoed), (1, 0));
}
