//! `echoloop client`: piped stdin goes through the server and comes back byte for byte.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use echoloop::{Framing, Model};

use crate::util::{SocketPath, TestServer, assert_same_bytes, config, random_bytes, run_bin_with};

const LIMIT: Duration = Duration::from_secs(60);

/// Every byte value, runs of zeros and newlines, and more than the server's pending cap:
/// `echoloop client ADDR < data` prints exactly `data` and exits 0.
#[test]
fn pipes_binary_data_through_the_server() {
    let server = TestServer::start(config(Model::EventLoop));
    let mut data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    data.extend(std::iter::repeat_n(0u8, 10_000));
    data.extend(random_bytes(3 << 20, 41));
    let run = run_bin_with(&["client", &server.addr().to_string()], data.clone(), LIMIT);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_same_bytes(&run.stdout, &data);
}

/// Empty stdin: connect, half-close at once, print nothing, exit 0.
#[test]
fn empty_input_echoes_nothing() {
    let server = TestServer::start(config(Model::EventLoop));
    let run = run_bin_with(&["client", &server.addr().to_string()], Vec::new(), LIMIT);
    assert_eq!((run.code, run.stdout.len()), (0, 0), "stderr: {}", run.stderr);
}

/// The same over a Unix domain socket (`unix:PATH`).
#[test]
fn pipes_over_a_unix_socket() {
    let path = SocketPath::new("client");
    let server = TestServer::start(path.config(Model::EventLoop));
    let data = random_bytes(512 << 10, 42);
    let run = run_bin_with(&["client", &server.addr().to_string()], data.clone(), LIMIT);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_same_bytes(&run.stdout, &data);
}

/// `echoloop client ADDR < big | head -c 10`: when stdout's reader goes away, the client
/// stops quietly with exit 0, as `cat` would.
#[test]
fn closed_stdout_is_not_an_error() {
    let server = TestServer::start(config(Model::EventLoop));
    let input = std::env::temp_dir().join(format!("echoloop-client-input-{}", std::process::id()));
    std::fs::write(&input, random_bytes(8 << 20, 43)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_echoloop"))
        .args(["client", &server.addr().to_string()])
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap(); // then drop: the pipe closes
    let status = wait_bounded(&mut child);
    let _ = std::fs::remove_file(&input);
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status, Some(0), "stderr: {stderr}");
}

/// Nothing listening: one line naming the address, exit 1.
#[test]
fn refused_connection_names_the_address() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port() // closed again when the listener drops
    };
    let addr = format!("127.0.0.1:{port}");
    let run = run_bin_with(&["client", &addr], b"hello".to_vec(), LIMIT);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains(&format!("cannot connect to {addr}")), "stderr: {}", run.stderr);
}

fn wait_bounded(child: &mut std::process::Child) -> Option<i32> {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client did not exit within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `--framing line` against a line server: the output is the input again, a last line
/// without `\n` included (the server echoes it at EOF).
#[test]
fn framed_lines_come_back_whole() {
    let server = TestServer::start(config(Model::EventLoop).with_framing(Framing::Line));
    let mut data = Vec::new();
    for (i, len) in [0, 1, 500, 60_000, 3].into_iter().enumerate() {
        let mut line = random_bytes(len, 50 + i as u64);
        line.retain(|&b| b != b'\n');
        data.extend(line);
        data.push(b'\n');
    }
    data.extend(b"no end");
    let run = run_bin_with(&["client", "--framing", "line", &server.addr().to_string()], data.clone(), LIMIT);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_same_bytes(&run.stdout, &data);
}

/// `--framing length --max-frame 1000`: stdin is cut into frames of at most 1000 bytes, and
/// the output is their payloads, so it is the input again; the server echoed every frame
/// whole (the payloads plus one 4-byte prefix per frame).
#[test]
fn framed_lengths_come_back_as_payloads() {
    let server =
        TestServer::start(config(Model::EventLoop).with_framing(Framing::Length).with_max_frame(1000));
    let data = random_bytes(2 << 20, 44);
    let args = ["client", "--framing", "length", "--max-frame", "1000", &server.addr().to_string()];
    let run = run_bin_with(&args, data.clone(), LIMIT);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_same_bytes(&run.stdout, &data);
    let prefix_bytes = server.stop().bytes_echoed - data.len() as u64;
    assert_eq!(prefix_bytes % 4, 0, "{prefix_bytes} bytes beyond the payloads");
    let frames = prefix_bytes / 4;
    assert!(frames >= data.len().div_ceil(1000) as u64, "{frames} frames for {} bytes", data.len());
}

/// `client udp:ADDR`: each line one datagram, each reply printed.
#[test]
fn udp_lines_are_datagrams() {
    let server = TestServer::start(echoloop::ServerConfig::new("udp:127.0.0.1:0".parse().unwrap()));
    let data = b"first\n\nthird line\nno newline".to_vec();
    let run = run_bin_with(&["client", &server.addr().to_string()], data.clone(), LIMIT);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, data);
    assert_eq!(server.stop().datagrams.map(|d| d.echoed), Some(4));
}

/// A UDP "server" that never answers: each datagram is reported lost after `--timeout`, and
/// the client exits 1 saying how many.
#[test]
fn udp_datagrams_without_reply_are_reported_lost() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap(); // receives, never replies
    silent.set_read_timeout(Some(LIMIT)).unwrap();
    let addr = format!("udp:{}", silent.local_addr().unwrap());
    let run = run_bin_with(&["client", "--timeout", "0.2", &addr], b"one\ntwo\n".to_vec(), LIMIT);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("to datagram 1 (4 bytes): lost"), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("2 of 2 datagrams got no reply (lost)"), "stderr: {}", run.stderr);
    let mut buf = [0; 8];
    assert_eq!(silent.recv(&mut buf).unwrap(), 4, "the datagrams were sent");
}
