//! `--metrics`: exact counters in every model, the health paths, readiness through a drain,
//! liveness of a stalled loop, and the endpoint's own errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::util::{Bin, IO_TIMEOUT, connect, random_bytes, run_bin, wait_until};
use super::variants::Variant;

/// One scrape of `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct Scrape(pub String);

impl Scrape {
    /// The value of the sample whose name and labels are exactly `series` (`name{a="b",...}`
    /// or a bare name), if there is one.
    pub(crate) fn sample(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    /// A per-listener counter or gauge, as a whole number (0 when absent is a failure).
    pub(crate) fn value(&self, name: &str, listener: &str) -> u64 {
        let series = format!("{name}{{listener=\"{listener}\"}}");
        self.sample(&series).unwrap_or_else(|| panic!("no {series} in:\n{}", self.0)) as u64
    }

    /// A per-listener, per-reason counter.
    pub(crate) fn labelled(&self, name: &str, listener: &str, reason: &str) -> u64 {
        let series = format!("{name}{{listener=\"{listener}\",reason=\"{reason}\"}}");
        self.sample(&series).unwrap_or_else(|| panic!("no {series} in:\n{}", self.0)) as u64
    }
}

/// `GET path` on a new connection: the status and the body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"))
}

/// Send a raw request; return the status and the body.
pub(crate) fn request(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut stream = connect(addr);
    stream.write_all(raw.as_bytes()).expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{response:?}"));
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

/// Scrape `server`'s `/metrics`.
pub(crate) fn scrape(server: &Bin) -> Scrape {
    let (status, body) = http_get(server.metrics(), "/metrics");
    assert_eq!(status, 200, "{body}");
    Scrape(body)
}

/// Scrape until `done` holds (bounded), and return that scrape.
pub(crate) fn scrape_until(server: &Bin, mut done: impl FnMut(&Scrape) -> bool) -> Scrape {
    let mut last = None;
    let ok = wait_until(IO_TIMEOUT, || {
        let now = scrape(server);
        let ok = done(&now);
        last = Some(now);
        ok
    });
    let last = last.expect("scraped at least once");
    assert!(ok, "the metrics never got there:\n{}", last.0);
    last
}

/// K clients that each echo B bytes: the counters say K and K x B exactly, in every model.
fn counters_are_exact(variant: Variant) {
    const CLIENTS: u64 = 5;
    const BYTES: usize = 3_000;
    let args = [variant.args(), &["127.0.0.1:0", "--metrics", "127.0.0.1:0"]].concat();
    let server = Bin::serve(&args);
    for i in 0..CLIENTS {
        let mut stream = connect(server.tcp());
        let data = random_bytes(BYTES, i);
        stream.write_all(&data).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut echo = Vec::new();
        stream.read_to_end(&mut echo).unwrap();
        assert!(echo == data, "client {i}: {} of {BYTES} bytes back", echo.len());
    }
    // The loops publish their counts once per turn: a scrape may land between a close and
    // the end of its turn. Every count comes right, and stays so.
    let listener = server.addr.clone();
    let bytes = CLIENTS * BYTES as u64;
    let m = scrape_until(&server, |m| {
        m.value("echoloop_connections_open", &listener) == 0
            && m.value("echoloop_sent_bytes_total", &listener) == bytes
    });
    assert_eq!(m.value("echoloop_connections_accepted_total", &listener), CLIENTS);
    assert_eq!(m.value("echoloop_received_bytes_total", &listener), bytes);
    assert_eq!(m.value("echoloop_pending_bytes", &listener), 0);
    assert_eq!(scrape(&server).value("echoloop_sent_bytes_total", &listener), bytes, "and stays so");
    assert!(m.value("echoloop_reads_total", &listener) >= CLIENTS);
    assert_eq!(m.labelled("echoloop_connections_rejected_total", &listener, "max_connections"), 0);
    let model = variant.args()[1];
    let build = format!("echoloop_build_info{{version=\"{}\",model=\"{model}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(m.sample(&build), Some(1.0), "{}", m.0);
    assert!(m.sample("process_open_fds").is_some_and(|n| n >= 3.0), "{}", m.0);
    assert!(m.sample("process_resident_memory_bytes").is_some_and(|n| n > 0.0), "{}", m.0);
}
for_variants!(counters_are_exact);

/// Several listeners: each has its own series, labelled with its address; a UDP listener
/// reports datagrams, a TCP one connections.
#[test]
fn each_listener_has_its_own_series() {
    let server = Bin::serve_listening(&["127.0.0.1:0", "udp:127.0.0.1:0", "--metrics", "127.0.0.1:0"], 2);
    let (tcp, udp) = (server.addrs[0].clone(), server.addrs[1].clone());
    for _ in 0..2 {
        let mut stream = connect(server.tcp());
        round_trip(&mut stream, b"over tcp");
    }
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let to: SocketAddr = udp.trim_start_matches("udp:").parse().unwrap();
    for _ in 0..3 {
        socket.send_to(b"over udp", to).unwrap();
        let mut back = [0u8; 16];
        assert_eq!(socket.recv(&mut back).unwrap(), 8);
    }
    let m = scrape_until(&server, |m| {
        m.sample(&format!("echoloop_datagrams_total{{listener=\"{udp}\"}}")) == Some(3.0)
            && m.value("echoloop_connections_open", &tcp) == 0
    });
    assert_eq!(m.value("echoloop_connections_accepted_total", &tcp), 2);
    assert_eq!(m.value("echoloop_sent_bytes_total", &tcp), 16);
    assert_eq!(m.value("echoloop_sent_bytes_total", &udp), 24);
    assert!(
        m.sample(&format!("echoloop_connections_accepted_total{{listener=\"{udp}\"}}")).is_none(),
        "{}",
        m.0
    );
    assert!(m.sample(&format!("echoloop_datagrams_total{{listener=\"{tcp}\"}}")).is_none(), "{}", m.0);
}

/// The metrics line follows the listening lines; the paths answer as documented.
#[test]
fn paths_statuses_and_the_metrics_line() {
    let server = Bin::serve(&["127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let addr = server.metrics();
    assert_eq!(server.stdout_lines()[1], format!("metrics on http://{addr}/metrics"));
    assert_eq!(http_get(addr, "/livez"), (200, "ok\n".into()));
    assert_eq!(http_get(addr, "/readyz"), (200, "ready\n".into()));
    assert_eq!(http_get(addr, "/nope").0, 404);
    assert_eq!(request(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0, 405);
    let (status, body) = request(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(request(addr, "GARBAGE\r\n\r\n").0, 400);
}

/// An unusable --metrics address: a usage error for a bad one, one line naming it for one in use.
#[test]
fn a_bad_metrics_address_is_refused() {
    let (code, _, stderr) = run_bin(&["serve", "127.0.0.1:0", "--metrics", "127.0.0.1:99999"]);
    assert_eq!(code, 2, "{stderr}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let (code, stdout, stderr) = run_bin(&["serve", "127.0.0.1:0", "--metrics", &taken_addr]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains(&taken_addr) && stderr.lines().count() == 1, "{stderr}");
    assert!(!stdout.contains("metrics on"), "{stdout}");
}

/// SIGTERM with --drain: /readyz answers 503 at once while everything else goes on (the open
/// connection is echoed, a new one is accepted); when the last connection closes, the drain
/// ends early and the server exits 0.
fn drain_keeps_serving_until_the_last_connection(variant: Variant) {
    let args = [variant.args(), &["127.0.0.1:0", "--metrics", "127.0.0.1:0", "--drain", "20"]].concat();
    let server = Bin::serve(&args);
    let metrics = server.metrics();
    let mut a = connect(server.tcp());
    round_trip(&mut a, b"before");
    server.signal(libc::SIGTERM);
    assert!(wait_until(IO_TIMEOUT, || http_get(metrics, "/readyz").0 == 503), "/readyz stayed 200");
    assert_eq!(http_get(metrics, "/livez").0, 200, "draining is alive");
    round_trip(&mut a, b"during the drain");
    if !variant.serves_one_at_a_time() {
        let mut b = connect(server.tcp());
        round_trip(&mut b, b"a new connection during the drain");
    }
    let started = Instant::now();
    drop(a);
    let (status, stderr) = server.wait(IO_TIMEOUT);
    assert!(status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "the drain did not end early: {stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
}
for_variants!(drain_keeps_serving_until_the_last_connection);

fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).unwrap();
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
}

/// A loop that stops turning (here: blocked writing its log to a full pipe nobody reads)
/// fails /livez, while /readyz and /metrics still answer; reading the pipe revives it.
#[test]
fn a_stalled_loop_fails_livez() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echoloop"))
        .args(["serve", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "echoloop::event_loop=trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = |prefix: &str| -> SocketAddr {
        let line = lines.next().expect("a line").unwrap();
        let rest = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?}"));
        rest.trim_end_matches("/metrics").parse().unwrap()
    };
    let (echo, metrics) = (addr("listening on "), addr("metrics on http://"));
    let stderr = child.stderr.take().unwrap(); // held, not read: the pipe fills up
    assert_eq!(http_get(metrics, "/livez").0, 200);
    // Trace lines for every read and write, until the log pipe is full and the loop blocks.
    let mut client = connect(echo);
    client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let stalled = wait_until(IO_TIMEOUT, || {
        let _ = client.write_all(b"x");
        let _ = client.read(&mut [0u8; 64]);
        http_get(metrics, "/livez").0 == 503
    });
    assert!(stalled, "/livez never noticed the stalled loop");
    assert_eq!(http_get(metrics, "/readyz").0, 200, "stalled is still ready: the balancer decides");
    assert_eq!(http_get(metrics, "/metrics").0, 200);
    let drain = thread::spawn(move || std::io::copy(&mut { stderr }, &mut std::io::sink()));
    assert!(wait_until(IO_TIMEOUT, || http_get(metrics, "/livez").0 == 200), "it never revived");
    let _ = child.kill();
    let _ = child.wait();
    let _ = drain.join();
}
