//! UDP echo (`echoloop serve udp:ADDR`): every size, batches from many senders, trains the
//! kernel keeps whole (GRO/GSO), reserved source ports, a full reply queue.
//!
//! The last two need what loopback cannot give: sockets bound to ports 0-19, and a send path
//! slow enough that the server's `send_to` says `WouldBlock` (on loopback a datagram is
//! handed to its receiver within the `send_to` call, so the sender's buffer never fills). So
//! they run the server in a network namespace of its own (`unshare -n`, as root), which
//! vanishes with the server; the test's sockets are created inside it by a thread that joins
//! it (`setns`), and `tc` shapes its loopback.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use echoloop::{ListenAddr, Model, ServerConfig};

use super::live_stats::field;
use super::util::{
    Bin, IO_TIMEOUT, TestServer, assert_same_bytes, join_bounded, random_bytes, run_bin, wait_until,
};

/// How long to wait for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A client socket on loopback with a receive timeout.
fn client(bind: &str) -> UdpSocket {
    let socket = UdpSocket::bind(bind).expect("bind a client socket");
    socket.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    socket
}

fn udp_addr(server: &TestServer) -> SocketAddr {
    match server.addr() {
        ListenAddr::Udp(addr) => *addr,
        other => panic!("not a UDP server: {other}"),
    }
}

/// Regression: the UDP echo kept its counts to itself, so `--stats-interval` logged no line
/// at all and SIGUSR1 logged zeros, however many datagrams had been echoed. Now the lines
/// come, and over all of them count every datagram answered and its bytes.
#[test]
fn live_statistics_count_datagrams() {
    let server = Bin::serve(&["udp:127.0.0.1:0", "--stats-interval", "0.1"]);
    let addr: SocketAddr = server.addr.strip_prefix("udp:").unwrap().parse().unwrap();
    let socket = client("127.0.0.1:0");
    let sizes = [0, 1, 100, 1472, 9000];
    let mut reply = vec![0; 10_000];
    for (i, size) in sizes.into_iter().enumerate() {
        let datagram = random_bytes(size, i as u64);
        socket.send_to(&datagram, addr).unwrap();
        let (n, _) = socket.recv_from(&mut reply).unwrap_or_else(|e| panic!("no reply to {size} bytes: {e}"));
        assert_same_bytes(&reply[..n], &datagram);
    }
    let lines = || -> Vec<String> {
        server.stderr().lines().filter(|line| line.contains("stats: open=")).map(str::to_string).collect()
    };
    let total = |key| lines().iter().map(|line| field(line, key)).sum::<u64>();
    let bytes = sizes.iter().sum::<usize>() as u64;
    assert!(
        wait_until(IO_TIMEOUT, || total("bytes") == bytes),
        "lines never counted every byte:\n{}",
        server.stderr()
    );
    assert_eq!(total("datagrams"), sizes.len() as u64, "{}", lines().join("\n"));
    let last = lines().pop().unwrap();
    assert_eq!(field(&last, "pending"), 0, "{last}");
}

/// The models that serve `udp:` addresses: every one but io-uring.
const UDP_MODELS: [Model; 3] = [Model::EventLoop, Model::ThreadPerConn, Model::Blocking];

/// Datagrams of every size class, 0 to 65,507 bytes (the IPv4 maximum), come back unchanged,
/// one reply each; the summary counts them and their bytes. Each UDP model.
#[test]
fn echoes_every_size_unchanged() {
    for model in UDP_MODELS {
        every_size_unchanged(model);
    }
}

fn every_size_unchanged(model: Model) {
    let server = TestServer::start(ServerConfig::new("udp:127.0.0.1:0".parse().unwrap()).with_model(model));
    let addr = udp_addr(&server);
    let socket = client("127.0.0.1:0");
    let mut sizes: Vec<usize> = (0..=65_507).step_by(997).collect();
    sizes.extend([1, 2, 1472, 1473, 8192, 65_506, 65_507]);
    let mut reply = vec![0; 70_000];
    for (i, &size) in sizes.iter().enumerate() {
        let datagram = random_bytes(size, i as u64);
        socket.send_to(&datagram, addr).unwrap();
        let (n, from) =
            socket.recv_from(&mut reply).unwrap_or_else(|e| panic!("no reply to {size} bytes: {e}"));
        assert_eq!(from, addr);
        assert_same_bytes(&reply[..n], &datagram);
    }
    let summary = server.stop();
    let datagrams = summary.datagrams.expect("a UDP server counts datagrams");
    assert_eq!(datagrams.echoed, sizes.len() as u64);
    assert_eq!(summary.bytes_echoed, sizes.iter().sum::<usize>() as u64);
    assert_eq!(datagrams.dropped(), 0);
}

/// `UDP_SEGMENT` from `<linux/udp.h>`: a send that the kernel splits into datagrams.
const UDP_SEGMENT: libc::c_int = 103;

/// Send `data` from `socket` to `to` as one train: datagrams of `segment` bytes (the last
/// may be shorter), split by the kernel (GSO). On loopback the train stays whole up to a
/// receiver that asked for GRO, which then reads it in one call.
fn send_train(socket: &UdpSocket, to: SocketAddr, data: &[u8], segment: u16) {
    let to = socket2::SockAddr::from(to);
    let mut iov = libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() };
    let mut control = [0u64; 4]; // 8-byte aligned, more than CMSG_SPACE(2)
    // SAFETY: `msghdr` is plain data; all zeroes is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = to.as_ptr().cast_mut().cast();
    msg.msg_namelen = to.len();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
    // SAFETY: the control buffer is aligned and larger than CMSG_SPACE(2), so the first header
    // and its two data bytes lie inside it; `msg` points at `to`, `iov` and `data`, all alive
    // for the sendmsg, which only reads them.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
        libc::CMSG_DATA(cmsg).cast::<u16>().write_unaligned(segment);
        libc::sendmsg(socket.as_raw_fd(), &msg, 0)
    };
    assert_eq!(sent, data.len() as isize, "sendmsg with UDP_SEGMENT: {}", std::io::Error::last_os_error());
}

/// The server set-ups the batching tests run on: the event loop with its defaults (batches of
/// 64, GRO/GSO on), with no kernel help with trains, and with one datagram per system call;
/// and the threaded models' receive loop.
const UDP_SETUPS: [&[&str]; 5] = [
    &[],
    &["--udp-offload", "off"],
    &["--udp-batch", "1"],
    &["--model", "thread-per-conn"],
    &["--model", "blocking"],
];

/// A client's train of 20 × 1000 bytes and a last datagram of 300 comes back as 21
/// datagrams, each exactly as sent, in order, from the server's address; the summary counts
/// 21 reads and 21 echoes. With GRO on (the event loop's default) the server took the train
/// in one receive (its trace says so) and sent it back in one.
#[test]
fn a_train_comes_back_as_its_datagrams() {
    let sizes: Vec<usize> = [1000; 20].into_iter().chain([300]).collect();
    let want: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| random_bytes(n, i as u64)).collect();
    for setup in UDP_SETUPS {
        let server =
            Bin::serve_env(&[("RUST_LOG", "echoloop=trace")], &[&["udp:127.0.0.1:0"], setup].concat());
        let addr: SocketAddr = server.addr.strip_prefix("udp:").unwrap().parse().unwrap();
        let socket = client("127.0.0.1:0");
        send_train(&socket, addr, &want.concat(), 1000);
        let mut reply = vec![0; 2000];
        for (i, datagram) in want.iter().enumerate() {
            let (n, from) =
                socket.recv_from(&mut reply).unwrap_or_else(|e| panic!("{setup:?}: reply {i}: {e}"));
            assert_eq!(from, addr, "{setup:?}");
            assert_same_bytes(&reply[..n], datagram);
        }
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        assert!(socket.recv_from(&mut reply).is_err(), "{setup:?}: a reply too many");
        let whole = server.stderr().contains("udp recv n=20300 datagrams=21");
        let gro = !setup.contains(&"off") && !setup.contains(&"--model");
        assert_eq!(whole, gro, "{setup:?}: one receive for the train iff the event loop's GRO is on");
        let summary = summary_line(server);
        assert!(
            summary.contains("summary: echoed 21 datagrams (20300 bytes), dropped 0"),
            "{setup:?}: {summary}"
        );
    }
}

/// Sixteen sockets at once, each sending eight datagrams before reading its replies, so the
/// server's batches mix senders: each socket gets its own datagrams back, once each.
#[test]
fn many_senders_in_one_batch_each_get_their_own() {
    for setup in UDP_SETUPS {
        let server = Bin::serve(&[&["udp:127.0.0.1:0"], setup].concat());
        let addr: SocketAddr = server.addr.strip_prefix("udp:").unwrap().parse().unwrap();
        let clients: Vec<_> = (0..16u64)
            .map(|c| {
                thread::spawn(move || {
                    let socket = client("127.0.0.1:0");
                    let mut reply = vec![0; 2000];
                    for round in 0..20 {
                        let sent: Vec<Vec<u8>> = (0..8)
                            .map(|i| {
                                random_bytes(64 + (c * 37 + i) as usize % 1200, c * 10_000 + round * 8 + i)
                            })
                            .collect();
                        sent.iter().for_each(|d| assert_eq!(socket.send_to(d, addr).unwrap(), d.len()));
                        let mut got: Vec<Vec<u8>> = (0..8)
                            .map(|_| {
                                let (n, _) = socket.recv_from(&mut reply).expect("a reply");
                                reply[..n].to_vec()
                            })
                            .collect();
                        // UDP keeps no order between datagrams; compare as sets (all distinct).
                        let mut want = sent.clone();
                        got.sort();
                        want.sort();
                        assert_eq!(got, want, "client {c}, round {round}");
                    }
                })
            })
            .collect();
        for c in clients {
            join_bounded(c, Duration::from_secs(60));
        }
        let summary = summary_line(server);
        assert!(summary.contains("summary: echoed 2560 datagrams"), "{setup:?}: {summary}");
    }
}

/// `udp:[::1]:0` serves IPv6, and the address says so.
#[test]
fn echoes_over_ipv6() {
    let server = TestServer::start(ServerConfig::new("udp:[::1]:0".parse().unwrap()));
    assert!(server.addr().to_string().starts_with("udp:[::1]:"), "{}", server.addr());
    let socket = client("[::1]:0");
    socket.send_to(b"over v6", udp_addr(&server)).unwrap();
    let mut reply = [0; 16];
    let (n, _) = socket.recv_from(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"over v6");
}

/// io-uring serves streams only, and framing makes no sense for datagrams: exit 2, one line.
#[test]
fn udp_with_io_uring_or_framing_is_a_usage_error() {
    for (args, needle) in [
        (
            &["serve", "udp:0", "--model", "io-uring"][..],
            "udp:127.0.0.1:0: the io-uring model serves TCP and Unix",
        ),
        (&["serve", "udp:0", "--framing", "length"][..], "every datagram is already one message"),
    ] {
        let (code, _, stderr) = run_bin(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Why the namespace tests cannot run here (they need root, `unshare`, `ip` and `tc`), or
/// `None` when they can.
fn no_namespaces() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: cannot make a network namespace".into());
    }
    let missing = |tool: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
    };
    ["unshare", "ip", "tc"]
        .into_iter()
        .find(|tool| missing(tool))
        .map(|tool| format!("no `{tool}` on this machine"))
}

/// `echoloop serve ARGS` alone in a new network namespace, its loopback up.
fn serve_in_namespace(args: &[&str]) -> Bin {
    let exe = env!("CARGO_BIN_EXE_echoloop");
    let mut full = vec!["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\"", exe, "serve"];
    full.extend_from_slice(args);
    Bin::start(Path::new("unshare"), &[], &full)
}

/// Run `make` on a thread that has joined the network namespace of process `pid`: sockets
/// it creates live there (and keep working from any thread).
fn in_namespace_of<T: Send + 'static>(pid: u32, make: impl FnOnce() -> T + Send + 'static) -> T {
    let namespace = File::open(format!("/proc/{pid}/ns/net")).expect("open the server's network namespace");
    join_bounded(
        thread::spawn(move || {
            // SAFETY: setns takes an open namespace descriptor; it changes only this thread.
            let rc = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            make()
        }),
        Duration::from_secs(20),
    )
}

/// Run a command (`ip`, `tc`) inside the network namespace of process `pid`.
fn run_in_namespace_of(pid: u32, command: &str) {
    let net = format!("--net=/proc/{pid}/ns/net");
    let status = Command::new("nsenter")
        .arg(&net)
        .args(command.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("nsenter {command}: {e}"));
    assert!(status.success(), "{command}: {status}");
}

/// Stop the server with SIGTERM and return its summary line.
fn summary_line(server: Bin) -> String {
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{stderr}");
    stderr
        .lines()
        .find(|line| line.contains("summary: "))
        .unwrap_or_else(|| panic!("no summary:\n{stderr}"))
        .to_string()
}

/// A UDP datagram with source port 0, which no ordinary socket can send: a raw socket
/// writes the UDP header itself (checksum 0: none, legal over IPv4).
fn send_from_port_zero(to: SocketAddr, payload: &[u8]) -> socket2::Socket {
    let raw = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::UDP))
        .expect("a raw socket (needs root)");
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&0u16.to_be_bytes()); // source port 0
    datagram.extend_from_slice(&to.port().to_be_bytes());
    datagram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(&0u16.to_be_bytes());
    datagram.extend_from_slice(payload);
    raw.send_to(&datagram, &to.into()).expect("send from port 0");
    raw
}

/// Datagrams from source port 0 and from the small services' ports (7 echo, 13 daytime,
/// 17 qotd, 19 chargen) get no reply and are counted, each datagram of a train too; an
/// ordinary client, served after them, is answered.
#[test]
fn reserved_source_ports_are_never_answered() {
    if let Some(why) = no_namespaces() {
        return eprintln!("reserved_source_ports_are_never_answered: skipped: {why}");
    }
    let json_path = std::env::temp_dir().join(format!("echoloop-udp-reserved-{}.json", std::process::id()));
    let server =
        serve_in_namespace(&["udp:127.0.0.1:0", "-v", "--summary-json", json_path.to_str().unwrap()]);
    let addr: SocketAddr = server.addr.strip_prefix("udp:").unwrap().parse().unwrap();
    let (reserved, ordinary, _raw) = in_namespace_of(server.pid(), move || {
        let reserved: Vec<UdpSocket> =
            [7, 13, 17, 19].iter().map(|port| client(&format!("127.0.0.1:{port}"))).collect();
        for socket in &reserved {
            socket.send_to(b"loop?", addr).unwrap();
        }
        // A train of three from port 17: one receive (GRO), three drops, none answered.
        send_train(&reserved[2], addr, &[7; 30], 10);
        let raw = send_from_port_zero(addr, b"loop?");
        (reserved, client("127.0.0.1:0"), raw)
    });
    ordinary.send_to(b"hello", addr).unwrap();
    let mut reply = [0; 16];
    let (n, _) = ordinary.recv_from(&mut reply).expect("the ordinary client is answered");
    assert_eq!(&reply[..n], b"hello");
    // The datagrams from the reserved ports arrived first, so their replies would be here.
    for socket in &reserved {
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let port = socket.local_addr().unwrap().port();
        assert!(socket.recv_from(&mut reply).is_err(), "port {port} was answered");
    }
    for port in [0, 7, 13, 17, 19] {
        let needle =
            format!("dropped a datagram from 127.0.0.1:{port}: source port {port} is never answered");
        assert!(server.wait_for_stderr(&needle, REPLY_TIMEOUT), "no '{needle}' in:\n{}", server.stderr());
    }
    let train = "dropped 3 datagrams from 127.0.0.1:17: source port 17 is never answered";
    assert!(server.wait_for_stderr(train, REPLY_TIMEOUT), "no '{train}' in:\n{}", server.stderr());
    let summary = summary_line(server);
    assert!(
        summary.ends_with(
            "summary: echoed 1 datagrams (5 bytes), dropped 8: 8 sent from a reserved source port \
             (0, 7, 13, 17, 19), 0 pushed out of the full reply queue, 0 failed to send"
        ),
        "{summary}"
    );
    // The drops reach the JSON summary too, by cause.
    let text = std::fs::read_to_string(&json_path).expect("the JSON summary");
    std::fs::remove_file(&json_path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let datagrams = &json["datagrams"];
    assert_eq!(
        (datagrams["echoed"].as_u64(), datagrams["dropped_reserved_port"].as_u64()),
        (Some(1), Some(8))
    );
    assert_eq!(datagrams["dropped_queue_full"], 0, "{json}");
    assert_eq!(json["reads"], 9, "every datagram received is a read, each of a train too: {json}");
}

/// When the kernel refuses replies for a while (`send_to` says `WouldBlock`), they queue up
/// to the bound (1024), and beyond it the oldest are dropped and counted: the newest
/// datagrams are answered (once each), the dropped ones are older, and the summary counts
/// every reply that arrived and the drops.
///
/// (The kernel itself may drop a few requests when the server's receive buffer overflows,
/// if the server is starved of CPU; the server never sees those, so the checks allow them.)
///
/// The server's replies (and only those) go through a slow class (htb) on the namespace's
/// loopback, so its socket's send buffer fills while requests keep arriving at full speed.
#[test]
fn a_full_reply_queue_drops_the_oldest() {
    const SENT: u32 = 3000;
    if let Some(why) = no_namespaces() {
        return eprintln!("a_full_reply_queue_drops_the_oldest: skipped: {why}");
    }
    let server = serve_in_namespace(&["udp:127.0.0.1:0"]);
    let addr: SocketAddr = server.addr.strip_prefix("udp:").unwrap().parse().unwrap();
    let pid = server.pid();
    // Everything through a fast class, but the server's replies (source port) through 8 Mbit/s.
    run_in_namespace_of(pid, "tc qdisc add dev lo root handle 1: htb default 10");
    run_in_namespace_of(pid, "tc class add dev lo parent 1: classid 1:10 htb rate 10gbit quantum 65536");
    run_in_namespace_of(
        pid,
        "tc class add dev lo parent 1: classid 1:30 htb rate 8mbit ceil 8mbit burst 8kb",
    );
    let filter = format!(
        "tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport {} 0xffff flowid 1:30",
        addr.port()
    );
    run_in_namespace_of(pid, &filter);
    let socket = in_namespace_of(pid, || client("127.0.0.1:0"));
    let receiver = {
        let socket = socket.try_clone().unwrap();
        thread::spawn(move || {
            // Until the replies stop: the queue drains at 8 Mbit/s, about 1 s for 1024.
            socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut seen = Vec::new();
            let mut reply = [0; 2048];
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match socket.recv_from(&mut reply) {
                    Ok((1000, _)) => seen.push(u32::from_be_bytes(reply[..4].try_into().unwrap())),
                    Ok((n, _)) => panic!("a reply of {n} bytes"),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break, // quiet: done
                    Err(e) => panic!("waiting for replies after {} of them: {e}", seen.len()),
                }
            }
            seen
        })
    };
    for seq in 0..SENT {
        let mut datagram = vec![(seq % 251) as u8; 1000];
        datagram[..4].copy_from_slice(&seq.to_be_bytes());
        socket.send_to(&datagram, addr).unwrap();
        if seq % 16 == 15 {
            thread::sleep(Duration::from_millis(1)); // no faster than the server reads
        }
    }
    // Sorted: the kernel may reorder shaped packets (the qdisc's timer dequeues on any CPU,
    // and loopback delivers through that CPU's backlog); UDP promises no order anyway.
    let mut seen = join_bounded(receiver, Duration::from_secs(60));
    let received = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), received, "a datagram was answered twice");
    let answered = |range: std::ops::Range<u32>| range.filter(|seq| seen.binary_search(seq).is_ok()).count();
    // The queue holds the newest 1024: (nearly) all of the last 1000 sent come back ...
    let newest = answered(SENT - 1000..SENT);
    assert!(newest >= 950, "only {newest} of the newest 1000 answered");
    // ... while most of those before them, pushed out of the queue, do not.
    let older = answered(200..SENT - 1200);
    assert!(older < (SENT - 1400) as usize / 2, "{older} of the older ones answered: nothing was dropped");
    let summary = summary_line(server);
    let counts = format!("echoed {} datagrams ({} bytes), dropped ", seen.len(), seen.len() * 1000);
    assert!(summary.contains(&counts), "{summary}\nexpected: {counts}");
    let queue_full: usize = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" pushed out of the full reply queue"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no queue count in {summary}"));
    let missing = SENT as usize - seen.len();
    assert!(queue_full > 0 && queue_full <= missing, "{queue_full} dropped by the queue, {missing} missing");
    assert!(summary.ends_with(", 0 failed to send"), "{summary}");
}
