//! A real HAProxy (the distribution's package) in front of two echoloop instances, run with
//! `contrib/haproxy/echoloop.cfg` (its ports replaced): 40 verified clients through it, then
//! a rolling restart of one instance with `--drain`. No byte lost, no new connection failed
//! once HAProxy marked the instance down, and the instances log the clients' own addresses.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::metrics::{http_get, scrape};
use super::util::{Bin, IO_TIMEOUT, installed, random_bytes, wait_until};

/// How long one client of the first wave keeps its connection: long enough to outlive the
/// instance's SIGTERM and HAProxy's marking it down.
const LONG_CLIENT: Duration = Duration::from_secs(5);

/// A port free now (bound, then released): HAProxy's configuration needs numbers.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An echoloop instance as the configuration expects it.
fn instance(echo: &str, metrics: &str) -> Bin {
    Bin::serve_env(
        &[("RUST_LOG", "echoloop=debug")],
        &[echo, "--proxy-protocol", "--metrics", metrics, "--drain", "15", "--shutdown-grace", "2"],
    )
}

/// HAProxy, killed on drop; its configuration in a temporary directory.
struct Haproxy {
    child: Child,
    dir: PathBuf,
    stats: SocketAddr,
}

impl Haproxy {
    /// Start HAProxy on `contrib/haproxy/echoloop.cfg` with each `(from, to)` replaced.
    fn start(program: &str, replace: &[(&str, String)], stats: SocketAddr) -> Haproxy {
        let mut config =
            fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/haproxy/echoloop.cfg"))
                .expect("read contrib/haproxy/echoloop.cfg");
        // The directives only (its comments show the same addresses, as examples).
        let is_directive = |line: &&str| !line.trim_start().starts_with('#');
        for (from, to) in replace {
            let uses = config.lines().filter(is_directive).filter(|l| l.contains(from)).count();
            assert_eq!(uses, 1, "{from} is not in exactly one directive of echoloop.cfg");
            config = config
                .lines()
                .map(|l| if is_directive(&l) { l.replace(from, to) } else { l.to_string() } + "\n")
                .collect();
        }
        let dir = std::env::temp_dir().join(format!("echoloop-haproxy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("echoloop.cfg");
        fs::write(&path, config).unwrap();
        let log = fs::File::create(dir.join("haproxy.log")).expect("create haproxy.log");
        let child = Command::new(program)
            .args(["-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        Haproxy { child, dir, stats }
    }

    /// Each server's status (`UP`, `DOWN`, `UP 1/2`...) from HAProxy's stats page.
    fn status(&self, server: &str) -> Option<String> {
        let Ok(mut stream) = TcpStream::connect(self.stats) else { return None };
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
        stream.write_all(b"GET /stats;csv HTTP/1.0\r\n\r\n").ok()?;
        let mut csv = String::new();
        stream.read_to_string(&mut csv).ok()?;
        let (head, body) = csv.split_once("\r\n\r\n")?;
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)?
        } else {
            body.to_string()
        };
        let mut lines = body.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let column = header.iter().position(|h| *h == "status")?;
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f[0] == "echoloop" && f[1] == server)
            .map(|f| f[column].to_string())
    }

    fn wait_status(&self, server: &str, wanted: &str) {
        let limit = Duration::from_secs(30);
        let ok = wait_until(limit, || self.status(server).as_deref() == Some(wanted));
        let log = fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default();
        assert!(ok, "HAProxy never saw {server} {wanted} (now {:?}); its log:\n{log}", self.status(server));
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The body of a chunked HTTP response (what HAProxy's stats page sends).
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// One client through HAProxy: `rounds` messages of 1 KiB, each echo checked, `pause`
/// between them. Returns its own address (what the instance should log) or the failure.
fn client(front: SocketAddr, seed: u64, rounds: usize, pause: Duration) -> Result<SocketAddr, String> {
    let mut stream = TcpStream::connect(front).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let me = stream.local_addr().unwrap();
    for round in 0..rounds {
        let data = random_bytes(1024, seed * 1000 + round as u64);
        stream.write_all(&data).map_err(|e| format!("{me} round {round}: write: {e}"))?;
        let mut echo = vec![0; data.len()];
        stream.read_exact(&mut echo).map_err(|e| format!("{me} round {round}: read: {e}"))?;
        if echo != data {
            return Err(format!("{me} round {round}: the echo differs"));
        }
        thread::sleep(pause);
    }
    Ok(me)
}

/// `count` clients at once; every result.
fn wave(
    front: SocketAddr,
    first_seed: u64,
    count: u64,
    rounds: usize,
    pause: Duration,
) -> Vec<Result<SocketAddr, String>> {
    let clients: Vec<_> =
        (0..count).map(|i| thread::spawn(move || client(front, first_seed + i, rounds, pause))).collect();
    clients.into_iter().map(|c| c.join().expect("client thread")).collect()
}

#[test]
fn rolling_restart_behind_haproxy() {
    let Some(haproxy) = installed("haproxy") else {
        return println!("skipped: haproxy is not installed (.ci/run installs the distribution's package)");
    };
    let (echo1, echo2) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let (metrics1, metrics2) = (free_port(), free_port());
    let mut one = instance(&echo1, &format!("127.0.0.1:{metrics1}"));
    let two = instance(&echo2, &format!("127.0.0.1:{metrics2}"));
    let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Haproxy::start(
        &haproxy,
        &[
            ("127.0.0.1:7800", front.to_string()),
            ("127.0.0.1:7801", echo1.clone()),
            ("127.0.0.1:7802", echo2.clone()),
            ("port 9101", format!("port {metrics1}")),
            ("port 9102", format!("port {metrics2}")),
            ("127.0.0.1:8404", stats.to_string()),
        ],
        stats,
    );
    proxy.wait_status("echo1", "UP");
    proxy.wait_status("echo2", "UP");

    // First wave: 40 clients that outlive the restart's beginning.
    let rounds = 25;
    let pause = LONG_CLIENT / rounds as u32;
    let first = thread::spawn(move || wave(front, 0, 40, rounds, pause));
    assert!(
        wait_until(IO_TIMEOUT, || {
            let open = |b: &Bin| scrape(b).value("echoloop_connections_open", &b.addr);
            open(&one) + open(&two) == 40
        }),
        "the 40 clients never were all connected"
    );
    let on_one = scrape(&one).value("echoloop_connections_open", &one.addr);
    assert!(on_one > 0, "HAProxy sent instance 1 nothing");

    // SIGTERM instance 1: /readyz turns 503 and HAProxy marks it down; its clients go on.
    one.signal(libc::SIGTERM);
    assert!(wait_until(IO_TIMEOUT, || http_get(one.metrics(), "/readyz").0 == 503), "/readyz stayed 200");
    proxy.wait_status("echo1", "DOWN");
    let accepted_by_one = scrape(&one).value("echoloop_connections_accepted_total", &one.addr);

    // Second wave, after the mark-down: every new connection succeeds, on instance 2.
    let second = wave(front, 100, 40, 3, Duration::from_millis(10));
    let failed: Vec<&String> = second.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "new connections failed after instance 1 was marked down: {failed:?}");
    assert_eq!(
        scrape(&one).value("echoloop_connections_accepted_total", &one.addr),
        accepted_by_one,
        "instance 1 took new connections after it was marked down"
    );

    // The first wave ends with every byte; instance 1 then ends its drain early and exits.
    let first = first.join().expect("first wave");
    let failed: Vec<&String> = first.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "clients of the first wave lost bytes: {failed:?}");
    let (status, log_one) = one.wait(Duration::from_secs(30));
    assert!(status.success(), "instance 1 after its drain: {status}\n{log_one}");

    // The instances logged the clients' own addresses (from the PROXY header), not HAProxy's.
    let log_two = two.stderr();
    for me in first.iter().chain(&second).map(|r| r.as_ref().unwrap().to_string()) {
        assert!(log_one.contains(&me) || log_two.contains(&me), "{me} is in neither log");
    }

    // Instance 1 starts again and, once HAProxy sees it up, takes traffic again.
    one = instance(&echo1, &format!("127.0.0.1:{metrics1}"));
    proxy.wait_status("echo1", "UP");
    let third = wave(front, 200, 20, 20, Duration::from_millis(20));
    assert!(third.iter().all(Result::is_ok), "{third:?}");
    assert!(
        scrape(&one).value("echoloop_connections_accepted_total", &one.addr) > 0,
        "restarted, never used"
    );
}
