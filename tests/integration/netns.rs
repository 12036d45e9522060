//! A real network between client and server: each test makes two network
//! namespaces joined by a veth pair, shapes the link (`tbf`: a low rate delays, a small
//! queue drops packets so TCP retransmits; MTU changes), runs the real server in one
//! namespace and its clients in the other, and checks exact echo (large transfers,
//! half-close, many clients) and that idle timeouts and the shutdown grace still behave.
//!
//! Every address is inside the namespaces the test made: each holds only its loopback and
//! its end of the veth, with a /30 between them, so no packet has a way out. Both
//! namespaces are deleted when the test ends (a guard's `Drop`). Making them needs root and
//! iproute2 (`ip`, `tc`): without them a test says so in one line and returns.
//!
//! Clients run either as `ip netns exec NS echoloop client ADDR`, or in this process on a
//! thread that has entered the client namespace with `setns(2)`: the network namespace is
//! per thread, and a socket belongs to the namespace of the thread that made it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;
use crate::variants::Variant;

/// How the link is shaped, the same in both directions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// tbf rate, as `tc` reads it (`40mbit`).
    pub(crate) rate: &'static str,
    /// tbf queue in bytes: packets beyond it are dropped.
    pub(crate) limit: u32,
    /// The MTU of the server's and of the client's end.
    pub(crate) mtu: (u32, u32),
}

/// Two namespaces joined by a shaped veth pair; deleted on drop. (The load generator's
/// tests in `bench_netns` use it too.)
pub(crate) struct Link {
    pub(crate) server_ns: String,
    pub(crate) client_ns: String,
    pub(crate) server_ip: Ipv4Addr,
    shape: Shape,
}

/// Numbers the links of this process, for unique names and subnets.
static LINKS: AtomicU32 = AtomicU32::new(0);

/// Run `program ARGS`; `Err` with its stderr if it fails.
pub(crate) fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{program} {}: {}", args.join(" "), stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Link {
    /// Make the namespaces and the shaped link, or say in one line why not (and `None`).
    pub(crate) fn new(test: &str, shape: Shape) -> Option<Link> {
        let n = LINKS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let link = Link {
            server_ns: format!("echoloop-{pid}-{n}-server"),
            client_ns: format!("echoloop-{pid}-{n}-client"),
            server_ip: Ipv4Addr::new(10, 231, (n % 250) as u8, 1),
            shape,
        };
        // `link` is complete before the first namespace exists, so its `Drop` deletes
        // whatever was made, even if a later step fails.
        match link.build() {
            Ok(()) => Some(link),
            Err(e) => {
                eprintln!("{test}: skipped, cannot make network namespaces here ({e})");
                None
            }
        }
    }

    fn build(&self) -> Result<(), String> {
        let (s, c) = (self.server_ns.as_str(), self.client_ns.as_str());
        let [a, b, n, _] = self.server_ip.octets();
        let (server_cidr, client_cidr) = (format!("{a}.{b}.{n}.1/30"), format!("{a}.{b}.{n}.2/30"));
        let (mtu_s, mtu_c) = (self.shape.mtu.0.to_string(), self.shape.mtu.1.to_string());
        let limit = self.shape.limit.to_string();
        sh("ip", &["netns", "add", s])?;
        sh("ip", &["netns", "add", c])?;
        // Both ends are made inside the namespaces: nothing appears in ours, even briefly.
        sh("ip", &["-n", s, "link", "add", "veth-s", "type", "veth", "peer", "name", "veth-c", "netns", c])?;
        sh("ip", &["-n", s, "addr", "add", &server_cidr, "dev", "veth-s"])?;
        sh("ip", &["-n", c, "addr", "add", &client_cidr, "dev", "veth-c"])?;
        sh("ip", &["-n", s, "link", "set", "veth-s", "mtu", &mtu_s, "up"])?;
        sh("ip", &["-n", c, "link", "set", "veth-c", "mtu", &mtu_c, "up"])?;
        for (ns, dev) in [(s, "veth-s"), (c, "veth-c")] {
            let tbf = ["root", "tbf", "rate", self.shape.rate, "burst", "16kb", "limit", &limit];
            sh("tc", &[&["-n", ns, "qdisc", "add", "dev", dev][..], &tbf[..]].concat())?;
        }
        Ok(())
    }

    /// Start `echoloop serve FLAGS SERVER_IP:0` inside the server namespace. (`ip netns
    /// exec` execs the program, so the PID is the server's own.)
    pub(crate) fn serve(&self, flags: &[&str]) -> Bin {
        let addr = format!("{}:0", self.server_ip);
        let mut args = vec!["netns", "exec", &self.server_ns, env!("CARGO_BIN_EXE_echoloop"), "serve"];
        args.extend_from_slice(flags);
        args.push(&addr);
        Bin::start(Path::new("ip"), &[], &args)
    }

    /// Run `f` on a thread inside the client namespace (sockets it makes belong there).
    fn in_client_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = File::open(format!("/var/run/netns/{}", self.client_ns)).expect("open the client namespace");
        let thread = thread::spawn(move || {
            // SAFETY: setns(2) with a descriptor we own; it changes only this thread's namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        });
        join_bounded(thread, Duration::from_secs(60))
    }

    /// TCP segments retransmitted in a namespace so far (`RetransSegs` of /proc/net/snmp).
    fn retransmits(ns: &str) -> u64 {
        let snmp = sh("ip", &["netns", "exec", ns, "cat", "/proc/net/snmp"]).expect("read /proc/net/snmp");
        let mut tcp = snmp.lines().filter(|line| line.starts_with("Tcp:"));
        let (names, values) = (tcp.next().unwrap_or(""), tcp.next().unwrap_or(""));
        let column = names.split_whitespace().position(|name| name == "RetransSegs").expect("RetransSegs");
        values.split_whitespace().nth(column).and_then(|v| v.parse().ok()).expect("a count")
    }

    /// Packets the tbf queue dropped on a device so far.
    fn tbf_drops(ns: &str, dev: &str) -> u64 {
        let stats = sh("tc", &["-s", "-n", ns, "qdisc", "show", "dev", dev]).expect("tc -s qdisc show");
        let after = stats.split("dropped ").nth(1).expect("a dropped count");
        after.split(|c: char| !c.is_ascii_digit()).next().and_then(|v| v.parse().ok()).expect("a number")
    }

    /// Retransmits (both sides) and tbf drops (both queues) so far.
    fn losses(&self) -> (u64, u64) {
        let retransmits = Link::retransmits(&self.server_ns) + Link::retransmits(&self.client_ns);
        let drops = Link::tbf_drops(&self.server_ns, "veth-s") + Link::tbf_drops(&self.client_ns, "veth-c");
        (retransmits, drops)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the other end.
        for ns in [&self.server_ns, &self.client_ns] {
            match sh("ip", &["netns", "delete", ns]) {
                Ok(_) => {}
                Err(e) if e.contains("No such file") => {} // never made: `build` stopped early
                Err(e) => eprintln!("could not delete network namespace {ns}: {e}"),
            }
        }
    }
}

/// A lossy link: 40 Mbit/s with a 32 kB queue (about 25 full-size packets), MTU 1280.
/// (A 12 kB queue drops so much that 8 MiB took two minutes: too slow for the suite.)
const LOSSY: Shape = Shape { rate: "40mbit", limit: 32_000, mtu: (1280, 1280) };

/// 8 MiB through `echoloop client` over a lossy 40 Mbit/s link (tbf drops, TCP retransmits)
/// comes back exact: the client sends it all, half-closes, and reads the echo to the end.
#[test]
fn large_transfer_over_a_lossy_link_is_exact() {
    let Some(link) = Link::new("large_transfer_over_a_lossy_link_is_exact", LOSSY) else { return };
    let server = link.serve(&[]);
    let data = random_bytes(8 << 20, 1301);
    let start = Instant::now();
    let mut client = Command::new("ip");
    client.args(["netns", "exec", &link.client_ns, env!("CARGO_BIN_EXE_echoloop"), "client", &server.addr]);
    let finished = run_with_stdin(client, data.clone(), Duration::from_secs(60));
    let took = start.elapsed();
    assert_eq!(finished.code, 0, "client failed: {}", finished.stderr);
    assert_same_bytes(&finished.stdout, &data);
    let (retransmits, drops) = link.losses();
    eprintln!(
        "netns: 8 MiB echoed exactly in {took:.2?} over {LOSSY:?}; {drops} packets dropped, {retransmits} retransmitted"
    );
    assert!(drops > 0 && retransmits > 0, "the link lost nothing: not the test it claims to be");
}

/// 40 clients at once over a 100 Mbit/s link whose ends disagree on the MTU (9000 at the
/// server, 1400 at the client): each sends random data in random chunks, half-closes, and
/// gets exactly its bytes back; a few send everything before reading anything.
fn many_clients_and_half_close_over_mismatched_mtus(variant: Variant) {
    let shape = Shape { rate: "100mbit", limit: 64_000, mtu: (9000, 1400) };
    let Some(link) = Link::new("many_clients_and_half_close_over_mismatched_mtus", shape) else { return };
    let server = link.serve(variant.args());
    let addr = server.tcp();
    let start = Instant::now();
    let verified = link.in_client_ns(move || {
        let clients: Vec<_> = (0..40u64).map(|i| thread::spawn(move || one_client(addr, i))).collect();
        clients.into_iter().map(|c| join_bounded(c, Duration::from_secs(60))).sum::<usize>()
    });
    eprintln!(
        "netns {variant:?}: 40 clients, {verified} bytes echoed exactly in {:.2?} over {shape:?}",
        start.elapsed()
    );
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(IO_TIMEOUT);
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(summary_echoed_bytes(&log), verified as u64, "{log}");
}
for_variants!(many_clients_and_half_close_over_mismatched_mtus, needs: [Concurrency]);

/// Client `i`: random data with a half-close, checked byte for byte; the bytes echoed.
fn one_client(addr: SocketAddr, i: u64) -> usize {
    let data = random_bytes((64 << 10) + (i as usize % 4) * (64 << 10), 1400 + i);
    if i.is_multiple_of(8) {
        // Everything first, then read: small enough to sit in buffers and --max-pending.
        let mut stream = connect(addr);
        let data = &data[..32 << 10];
        stream.write_all(data).expect("send");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).expect("read the echo");
        assert_same_bytes(&echoed, data);
        return data.len();
    }
    assert_same_bytes(&echo_chunked(connect(addr), data.clone(), i), &data);
    data.len()
}

/// Over a slow (8 Mbit/s) link: a silent client is closed after `--idle-timeout 1` while a
/// client sending a byte every 200 ms is not. Then (another server, no idle timeout) SIGTERM
/// with a client that never reads and one mid-transfer: the server exits 0 once
/// `--shutdown-grace 1` is over, and the client mid-transfer got an exact prefix of its data.
#[test]
fn idle_timeout_and_shutdown_grace_over_a_slow_link() {
    let shape = Shape { rate: "8mbit", limit: 32_000, mtu: (1500, 1500) };
    let Some(link) = Link::new("idle_timeout_and_shutdown_grace_over_a_slow_link", shape) else { return };
    let server = link.serve(&["--idle-timeout", "1"]);
    let addr = server.tcp();

    let (idle_closed_after, busy_trips) = link.in_client_ns(move || {
        let busy = thread::spawn(move || {
            let mut stream = connect(addr);
            for i in 0..12u8 {
                stream.write_all(&[i]).expect("busy client send");
                assert_eq!(read_n(&stream, 1), [i], "busy client echo");
                thread::sleep(Duration::from_millis(200)); // 2.4 s in all: idle for 0.2 s at most
            }
            12
        });
        let mut idle = connect(addr);
        idle.write_all(b"once").unwrap();
        assert_eq!(read_n(&idle, 4), b"once");
        let start = Instant::now();
        let mut buf = [0; 8];
        let n = idle.read(&mut buf).expect("the server closes the idle client (EOF)");
        assert_eq!(n, 0, "data on an idle connection");
        (start.elapsed(), join_bounded(busy, IO_TIMEOUT))
    });
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&idle_closed_after),
        "idle client closed after {idle_closed_after:?}, not about 1 s"
    );
    assert_eq!(busy_trips, 12);
    drop(server);

    // Without an idle timeout, which would close the non-reader before the grace is over.
    let server = link.serve(&["--shutdown-grace", "1"]);
    let addr = server.tcp();
    let data = random_bytes(4 << 20, 1402);
    let sent = data.clone();
    let (mid_transfer, _non_reader) = link.in_client_ns(move || {
        let non_reader = connect(addr);
        (&non_reader).write_all(&[5; 256 << 10]).ok(); // fills the server's pending buffer
        let stream = connect(addr);
        let mut writer = stream.try_clone().unwrap();
        thread::spawn(move || {
            let _ = writer.write_all(&sent); // cut short when the server stops: that is expected
        });
        (stream, non_reader)
    });
    thread::sleep(Duration::from_millis(500)); // the transfer is under way
    let stopped = Instant::now();
    server.signal(libc::SIGTERM);
    let received = read_until_closed(&mid_transfer);
    let (status, log) = server.wait(IO_TIMEOUT);
    let took = stopped.elapsed();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(took < Duration::from_secs(4), "shutdown took {took:?} with a 1 s grace:\n{log}");
    assert!(log.contains("grace period over"), "the non-reader should have outlasted the grace:\n{log}");
    assert!(!received.is_empty(), "nothing echoed before the stop");
    assert_same_bytes(&received, &data[..received.len()]);
    eprintln!(
        "netns: idle client closed after {idle_closed_after:.2?}; shutdown with a 1 s grace took {took:.2?}, \
         {} of {} bytes echoed exactly before it",
        received.len(),
        data.len()
    );
}

/// Everything the server sends until it closes the connection (EOF, or a reset once the
/// grace period is over).
fn read_until_closed(mut stream: &TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(e) => panic!("reading the echo: {e}"),
        }
    }
}
