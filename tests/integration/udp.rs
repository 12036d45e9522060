//! UDP echo (`echoloop serve udp:ADDR`): every size, batches from many senders, trains the
//! kernel keeps whole (GRO/GSO), reserved source ports, a full reply queue; and io-uring's
//! own bounds: a multishot recvmsg that runs out of buffers, replies held in flight.
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

/// `--model io-uring`, unless this kernel refuses io_uring (then the io-uring runs are
/// skipped, and say so).
const IO_URING: &[&str] = &["--model", "io-uring"];

/// `setups` without the io-uring ones where the kernel refuses io_uring.
fn runnable<'a>(setups: &[&'a [&'a str]]) -> Vec<&'a [&'a str]> {
    let refused = super::io_uring::kernel_refuses();
    if let Some(reason) = &refused {
        eprintln!("io-uring setups skipped: {reason}");
    }
    let uring = |setup: &[&str]| setup.windows(2).any(|w| w == IO_URING);
    setups.iter().copied().filter(|setup| refused.is_none() || !uring(setup)).collect()
}

/// Regression: the UDP echo kept its counts to itself, so `--stats-interval` logged no line
/// at all and SIGUSR1 logged zeros, however many datagrams had been echoed. Now the lines
/// come, and over all of them count every datagram answered and its bytes. The event loop
/// and io-uring.
#[test]
fn live_statistics_count_datagrams() {
    for setup in runnable(&[&[], IO_URING]) {
        live_statistics_count_datagrams_with(setup);
    }
}

fn live_statistics_count_datagrams_with(setup: &[&str]) {
    let server = Bin::serve(&[&["udp:127.0.0.1:0", "--stats-interval", "0.1"], setup].concat());
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

/// Every model serves `udp:` addresses.
const UDP_MODELS: [Model; 4] = [Model::EventLoop, Model::ThreadPerConn, Model::Blocking, Model::IoUring];

/// Datagrams of every size class, 0 to 65,507 bytes (the IPv4 maximum), come back unchanged,
/// one reply each; the summary counts them and their bytes. Each model.
#[test]
fn echoes_every_size_unchanged() {
    for model in UDP_MODELS {
        if model == Model::IoUring && super::io_uring::kernel_refuses().is_some() {
            continue; // said by `runnable` in the other tests
        }
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
pub(crate) fn send_train(socket: &UdpSocket, to: SocketAddr, data: &[u8], segment: u16) {
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

/// Receive `want`'s datagrams on `socket`, in order, each exactly as sent and from `server`
/// (`what` names the set-up in a failure).
pub(crate) fn receive_each(socket: &UdpSocket, server: SocketAddr, want: &[Vec<u8>], what: &str) {
    let mut reply = vec![0; 65536];
    for (i, datagram) in want.iter().enumerate() {
        let (n, from) = socket.recv_from(&mut reply).unwrap_or_else(|e| panic!("{what}: reply {i}: {e}"));
        assert_eq!(from, server, "{what}");
        assert_same_bytes(&reply[..n], datagram);
    }
}

/// The server set-ups the batching tests run on: the event loop with its defaults (batches of
/// 64, GRO/GSO on), with no kernel help with trains, and with one datagram per system call;
/// the threaded models' receive loop; io-uring with GRO/GSO and without.
const UDP_SETUPS: [&[&str]; 7] = [
    &[],
    &["--udp-offload", "off"],
    &["--udp-batch", "1"],
    &["--model", "thread-per-conn"],
    &["--model", "blocking"],
    IO_URING,
    &["--model", "io-uring", "--udp-offload", "off"],
];

/// The set-ups where the kernel's GRO hands a train over whole: the event loop's and
/// io-uring's with `--udp-offload` on (the default).
fn gro_on(setup: &[&str]) -> bool {
    let model = setup.windows(2).find(|w| w[0] == "--model").map_or("event-loop", |w| w[1]);
    matches!(model, "event-loop" | "io-uring") && !setup.contains(&"off")
}

/// A client's train of 20 × 1000 bytes and a last datagram of 300 comes back as 21
/// datagrams, each exactly as sent, in order, from the server's address; the summary counts
/// 21 reads and 21 echoes. With GRO on (the event loop's and io-uring's default) the server
/// took the train in one receive (its trace says so) and sent it back in one.
#[test]
fn a_train_comes_back_as_its_datagrams() {
    let sizes: Vec<usize> = [1000; 20].into_iter().chain([300]).collect();
    let want: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| random_bytes(n, i as u64)).collect();
    for setup in runnable(&UDP_SETUPS) {
        let server =
            Bin::serve_env(&[("RUST_LOG", "echoloop=trace")], &[&["udp:127.0.0.1:0"], setup].concat());
        let addr: SocketAddr = server.addr.strip_prefix("udp:").unwrap().parse().unwrap();
        let socket = client("127.0.0.1:0");
        send_train(&socket, addr, &want.concat(), 1000);
        receive_each(&socket, addr, &want, &format!("{setup:?}"));
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        assert!(socket.recv_from(&mut [0; 2000]).is_err(), "{setup:?}: a reply too many");
        let whole = server.stderr().contains("udp recv n=20300 datagrams=21");
        assert_eq!(whole, gro_on(setup), "{setup:?}: one receive for the train iff GRO is on");
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
    for setup in runnable(&UDP_SETUPS) {
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

/// Framing makes no sense for datagrams: exit 2, one line, in every model.
#[test]
fn udp_with_framing_is_a_usage_error() {
    for model in ["event-loop", "io-uring"] {
        let (code, _, stderr) = run_bin(&["serve", "udp:0", "--framing", "length", "--model", model]);
        assert_eq!(code, 2, "{model}: {stderr}");
        assert!(stderr.contains("every datagram is already one message"), "{model}: {stderr}");
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
    serve_in_namespace_env(&[], args)
}

/// [`serve_in_namespace`], with `env` in its environment.
fn serve_in_namespace_env(env: &[(&str, &str)], args: &[&str]) -> Bin {
    let exe = env!("CARGO_BIN_EXE_echoloop");
    let mut full = vec!["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\"", exe, "serve"];
    full.extend_from_slice(args);
    Bin::start(Path::new("unshare"), env, &full)
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
/// ordinary client, served after them, is answered. The event loop and io-uring.
#[test]
fn reserved_source_ports_are_never_answered() {
    in_namespaces_of_both(
        "reserved_source_ports_are_never_answered",
        reserved_source_ports_are_never_answered_by,
    );
}

/// Run `body` with the event loop's set-up and io-uring's, each starting its server in a
/// network namespace of its own; or say why `test` cannot run here.
fn in_namespaces_of_both(test: &str, body: fn(&[&str])) {
    if let Some(why) = no_namespaces() {
        return eprintln!("{test}: skipped: {why}");
    }
    runnable(&[&[], IO_URING]).into_iter().for_each(body);
}

fn reserved_source_ports_are_never_answered_by(setup: &[&str]) {
    let json_path = std::env::temp_dir().join(format!("echoloop-udp-reserved-{}.json", std::process::id()));
    let json_arg = json_path.to_str().unwrap();
    let server =
        serve_in_namespace(&[&["udp:127.0.0.1:0", "-v", "--summary-json", json_arg], setup].concat());
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

/// In the network namespace of process `pid`, send what leaves from source port `port`
/// through a class of 8 Mbit/s (htb on the namespace's loopback), everything else through a
/// fast one.
fn slow_replies_from(pid: u32, port: u16) {
    run_in_namespace_of(pid, "tc qdisc add dev lo root handle 1: htb default 10");
    run_in_namespace_of(pid, "tc class add dev lo parent 1: classid 1:10 htb rate 10gbit quantum 65536");
    run_in_namespace_of(
        pid,
        "tc class add dev lo parent 1: classid 1:30 htb rate 8mbit ceil 8mbit burst 8kb",
    );
    let filter = format!(
        "tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport {port} 0xffff flowid 1:30"
    );
    run_in_namespace_of(pid, &filter);
}

/// From a client in `server`'s namespace, send `sent` numbered datagrams of 1000 bytes to
/// its UDP address, about 16 a millisecond, while the server's replies (and only those: by
/// source port) go through a class of 8 Mbit/s (htb on the namespace's loopback), everything
/// else through a fast one. The server's address, and the numbers of the replies that came
/// back (each checked byte for byte, none twice, sorted: the kernel may reorder shaped
/// packets, as the qdisc's timer dequeues on any CPU, and UDP promises no order anyway).
/// `after_sending` runs once the last datagram is sent, while replies still come.
fn flood_with_slow_replies(server: &Bin, sent: u32, after_sending: impl FnOnce()) -> (SocketAddr, Vec<u32>) {
    let addr: SocketAddr = server.addr.strip_prefix("udp:").unwrap().parse().unwrap();
    let pid = server.pid();
    slow_replies_from(pid, addr.port());
    let socket = in_namespace_of(pid, || client("127.0.0.1:0"));
    let receiver = {
        let socket = socket.try_clone().unwrap();
        // Until the replies stop: a queue of 1024 drains at 8 Mbit/s in about 1 s.
        thread::spawn(move || numbered_replies(socket, Duration::from_secs(2), |_| 1000))
    };
    for seq in 0..sent {
        socket.send_to(&numbered(seq, 1000), addr).unwrap();
        if seq % 16 == 15 {
            thread::sleep(Duration::from_millis(1)); // no faster than the server reads
        }
    }
    after_sending();
    (addr, join_bounded(receiver, Duration::from_secs(60)))
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
    let (_, seen) = flood_with_slow_replies(&server, SENT, || ());
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

/// Datagrams the kernel dropped because the receive buffer of the UDP socket bound to
/// `port` was full: the `drops` column of its line in `/proc/PID/net/udp` (the table of
/// process `pid`'s network namespace).
fn kernel_drops(pid: u32, port: u16) -> u64 {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).expect("read the UDP socket table");
    let local = format!(":{port:04X}");
    let line = table
        .lines()
        .find(|line| line.split_whitespace().nth(1).is_some_and(|addr| addr.ends_with(&local)))
        .unwrap_or_else(|| panic!("no socket on port {port} in:\n{table}"));
    line.split_whitespace().last().and_then(|drops| drops.parse().ok()).expect("a drops column")
}

/// The datagram numbered `seq` of the io-uring tests: its number, then bytes of its own.
fn numbered(seq: u32, len: usize) -> Vec<u8> {
    let mut datagram = random_bytes(len, u64::from(seq));
    datagram[..4].copy_from_slice(&seq.to_be_bytes());
    datagram
}

/// Receive numbered replies on `socket` until it stays quiet for `quiet`: each checked
/// byte for byte against what was sent, and their numbers, sorted, none twice.
fn numbered_replies(socket: UdpSocket, quiet: Duration, len: impl Fn(u32) -> usize) -> Vec<u32> {
    socket.set_read_timeout(Some(quiet)).unwrap();
    let (mut seen, mut reply) = (Vec::new(), vec![0; 2048]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match socket.recv_from(&mut reply) {
            Ok((n, _)) => {
                let seq = u32::from_be_bytes(reply[..4].try_into().unwrap());
                assert_same_bytes(&reply[..n], &numbered(seq, len(seq)));
                seen.push(seq);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break, // quiet: done
            Err(e) => panic!("waiting for replies after {} of them: {e}", seen.len()),
        }
    }
    let received = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), received, "a datagram was answered twice");
    seen
}

/// A `--summary-json` path of this test's own, and what the server wrote there once it
/// ended: (reads, datagrams echoed, datagrams dropped).
struct JsonSummary(std::path::PathBuf);

impl JsonSummary {
    fn new(test: &str) -> JsonSummary {
        JsonSummary(std::env::temp_dir().join(format!("echoloop-{test}-{}.json", std::process::id())))
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn counts(self) -> (u64, u64, u64) {
        let text = std::fs::read_to_string(&self.0).expect("the JSON summary");
        std::fs::remove_file(&self.0).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let d = &json["datagrams"];
        let dropped = ["dropped_reserved_port", "dropped_queue_full", "dropped_send_failed"];
        let dropped = dropped.iter().map(|key| d[key].as_u64().unwrap()).sum();
        (json["reads"].as_u64().unwrap(), d["echoed"].as_u64().unwrap(), dropped)
    }
}

/// io-uring with two datagram buffers, sent 2000 datagrams at once: its multishot recvmsg
/// runs out of buffers again and again (`ENOBUFS` ends it, the trace says so) and is armed
/// again each time a reply gives a buffer back. Every datagram is accounted for: answered
/// once, byte for byte, or dropped by a kernel receive buffer (the server's, or the
/// client's, as the kernel counts them in its socket table), none lost in between.
#[test]
fn io_uring_arms_its_recvmsg_again_when_the_buffers_run_out() {
    const SENT: u32 = 2000;
    let Some(&setup) = runnable(&[IO_URING]).first() else { return };
    let env = [("RUST_LOG", "info,echoloop::io_uring::udp=trace")];
    let json = JsonSummary::new("uring-rearm");
    let args = ["udp:127.0.0.1:0", "--uring-buffers", "2", "--summary-json", json.arg()];
    let server = Bin::serve_env(&env, &[setup, &args].concat());
    let addr: SocketAddr = server.addr.strip_prefix("udp:").unwrap().parse().unwrap();
    let socket = client("127.0.0.1:0");
    let len = |seq: u32| 64 + (seq as usize * 37) % 1100;
    let receiver = {
        let socket = socket.try_clone().unwrap();
        thread::spawn(move || numbered_replies(socket, Duration::from_secs(2), len))
    };
    for seq in 0..SENT {
        socket.send_to(&numbered(seq, len(seq)), addr).unwrap();
    }
    let seen = join_bounded(receiver, Duration::from_secs(60));
    let client_drops = kernel_drops(std::process::id(), socket.local_addr().unwrap().port());
    let server_drops = kernel_drops(server.pid(), addr.port());
    let log = server.stderr();
    let tail = || log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
    assert!(log.contains(": every buffer is out"), "the recvmsg never ran out of buffers:\n{}", tail());
    let summary = summary_line(server);
    let (reads, echoed, dropped) = json.counts();
    assert_eq!((reads, dropped), (echoed, 0), "every datagram taken was answered: {summary}");
    assert_eq!(
        echoed + server_drops,
        u64::from(SENT),
        "{summary}; the server's socket dropped {server_drops}"
    );
    assert_eq!(
        seen.len() as u64 + client_drops,
        echoed,
        "{summary}; the client's socket dropped {client_drops}"
    );
    assert!(echoed > 100, "the recvmsg was armed again: {summary}");
    eprintln!(
        "{SENT} sent: {echoed} echoed, {server_drops} dropped by the server's socket, {client_drops} by the client's"
    );
}

/// io-uring bounds its replies by its buffers, not by a queue: with the server's replies
/// (and only those) slowed to 8 Mbit/s, it holds at most `--uring-buffers` replies in
/// flight and stops receiving meanwhile; datagrams wait in its socket's receive buffer and,
/// when that is full, the kernel drops the newest. So the oldest datagrams are the ones
/// answered (the event loop answers the newest: `a_full_reply_queue_drops_the_oldest`),
/// no reply it took is dropped (`dropped 0`), and the datagrams it never took are exactly
/// the kernel's drops.
#[test]
fn io_uring_holds_its_replies_in_its_buffers_and_the_kernel_drops_the_newest() {
    const SENT: u32 = 3000;
    if let Some(why) = no_namespaces() {
        return eprintln!("io_uring_holds_its_replies_in_its_buffers: skipped: {why}");
    }
    let Some(&setup) = runnable(&[IO_URING]).first() else { return };
    let json = JsonSummary::new("uring-bound");
    let args = ["udp:127.0.0.1:0", "--uring-buffers", "8", "--summary-json", json.arg()];
    let server = serve_in_namespace(&[setup, &args].concat());
    let (addr, seen) = flood_with_slow_replies(&server, SENT, || ());
    let server_drops = kernel_drops(server.pid(), addr.port());
    let answered = |range: std::ops::Range<u32>| range.filter(|seq| seen.binary_search(seq).is_ok()).count();
    assert_eq!(answered(0..50), 50, "the first datagrams are answered: {seen:?}");
    let newest = answered(SENT - 500..SENT);
    assert!(newest < 250, "{newest} of the newest 500 answered: the replies were not held back");
    assert!(server_drops > 0, "the receive buffer never overflowed");
    let summary = summary_line(server);
    let counts = format!("echoed {} datagrams ({} bytes), dropped 0", seen.len(), seen.len() * 1000);
    assert!(summary.contains(&counts), "{summary}\nexpected: {counts}");
    let (reads, echoed, _) = json.counts();
    assert_eq!(reads, echoed, "no reply taken was dropped: {summary}");
    assert_eq!(reads + server_drops, u64::from(SENT), "{summary}; the kernel dropped {server_drops}");
    eprintln!(
        "{SENT} sent: {echoed} echoed ({newest} of the newest 500), {server_drops} dropped by the kernel"
    );
}

/// Stopped while replies are still owed (the server's replies slowed to 8 Mbit/s, SIGTERM
/// right after the last datagram, `--shutdown-grace 0.1`): the replies not sent when the
/// grace period ends are given up, said in one warning, and count as never echoed; every
/// reply the summary counts reached the client, byte for byte. The event loop (its queue)
/// and io-uring (its replies in flight) alike.
#[test]
fn replies_still_owed_when_the_grace_period_ends_are_not_sent() {
    let test = "replies_still_owed_when_the_grace_period_ends_are_not_sent";
    in_namespaces_of_both(test, replies_still_owed_at_the_end_are_not_sent_by);
}

fn replies_still_owed_at_the_end_are_not_sent_by(setup: &[&str]) {
    let json = JsonSummary::new("udp-grace");
    let args = ["udp:127.0.0.1:0", "--shutdown-grace", "0.1", "--summary-json", json.arg()];
    let server = serve_in_namespace(&[setup, &args].concat());
    let (_, seen) = flood_with_slow_replies(&server, 1500, || server.signal(libc::SIGTERM));
    let (status, log) = server.wait(Duration::from_secs(20));
    assert!(status.success(), "{setup:?}: {status}\n{log}");
    let given_up: u64 = log
        .lines()
        .find_map(|line| line.split("grace period over: ").nth(1))
        .and_then(|rest| rest.strip_suffix(" queued replies not sent"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{setup:?}: no 'grace period over' warning in:\n{log}"));
    let (reads, echoed, dropped) = json.counts();
    assert_eq!(seen.len() as u64, echoed, "{setup:?}: every reply counted reached the client");
    let unsent = reads - echoed - dropped;
    // io-uring: a reply whose cancel came too late was sent after all, and counted echoed.
    assert!(unsent > 0 && unsent <= given_up, "{setup:?}: {unsent} not sent, {given_up} given up");
    eprintln!("{setup:?}: {reads} taken, {echoed} echoed, {dropped} dropped, {given_up} given up at the end");
}

/// Regression: a buffer given back out of order waits for the entry at the ring's tail
/// (`src/io_uring/buffers.rs`), but the recvmsg was armed again whenever fewer buffers than
/// the group's were out, counting the waiting ones as in the group: while a slow reply held
/// the tail's buffer, the recvmsg ended with `ENOBUFS` at once, was armed again, ended
/// again, a busy loop of `io_uring_enter`s for as long as the reply waited. Here the replies
/// are slowed to 8 Mbit/s and datagrams from port 19 (dropped, their buffers given back at
/// once, out of order) come between the others: the recvmsg may run out of buffers at most
/// about once per datagram it took, not thousands of times.
#[test]
fn io_uring_does_not_spin_on_buffers_given_back_out_of_order() {
    const SENT: u32 = 1000;
    if let Some(why) = no_namespaces() {
        return eprintln!("io_uring_does_not_spin_on_buffers_given_back_out_of_order: skipped: {why}");
    }
    let Some(&setup) = runnable(&[IO_URING]).first() else { return };
    let env = [("RUST_LOG", "info,echoloop::io_uring::udp=trace")];
    let server =
        serve_in_namespace_env(&env, &[setup, &["udp:127.0.0.1:0", "--uring-buffers", "4"]].concat());
    let addr: SocketAddr = server.addr.strip_prefix("udp:").unwrap().parse().unwrap();
    slow_replies_from(server.pid(), addr.port());
    let (socket, reserved) =
        in_namespace_of(server.pid(), || (client("127.0.0.1:0"), client("127.0.0.1:19")));
    let receiver = {
        let socket = socket.try_clone().unwrap();
        thread::spawn(move || numbered_replies(socket, Duration::from_secs(2), |_| 1000))
    };
    for seq in 0..SENT {
        socket.send_to(&numbered(seq, 1000), addr).unwrap();
        reserved.send_to(b"loop?", addr).unwrap(); // never answered: its buffer back at once
        if seq % 16 == 15 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let seen = join_bounded(receiver, Duration::from_secs(60));
    assert!(!seen.is_empty(), "no reply came back");
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let dry = log.matches(": every buffer is out").count();
    eprintln!("{} sent, {} answered; the recvmsg ran out of buffers {dry} times", 2 * SENT, seen.len());
    assert!(dry > 0, "the recvmsg never ran out of buffers: the test proves nothing");
    assert!(dry <= 2 * SENT as usize, "{dry} times out of buffers for {} datagrams: a busy loop", 2 * SENT);
}
