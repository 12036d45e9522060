//! The server set-ups every per-model behaviour runs against, and what some of them lack.
//!
//! `for_variants!(body)` (in `main.rs`) makes one `#[test]` per [`Variant`], so a behaviour
//! written once runs on every model: `cargo test models::half_close` compares them all. A
//! behaviour that needs something a variant does not do says so, `for_variants!(body, needs:
//! [UnixSocket])`, and on that variant its test checks what the variant does instead (refuses
//! the flags with one line, or queues the client) rather than skipping in silence.
//! The one gap that is not the program's is the environment's: a kernel that refuses
//! io_uring, where the io-uring tests print why and return.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::time::Duration;

use echoloop::{Model, ServerConfig};

use super::util::{IO_TIMEOUT, SocketPath, TestServer, config, run_to_end};

/// A server set-up under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    EventLoop,
    /// The event loop with `--workers 2`: two loops sharing the port.
    Workers2,
    ThreadPerConn,
    Blocking,
    IoUring,
}

impl Variant {
    /// A config on 127.0.0.1:0 (short grace) for this variant.
    pub(crate) fn config(self) -> ServerConfig {
        match self {
            Variant::EventLoop => config(Model::EventLoop),
            Variant::Workers2 => config(Model::EventLoop).with_workers(2),
            Variant::ThreadPerConn => config(Model::ThreadPerConn),
            Variant::Blocking => config(Model::Blocking),
            Variant::IoUring => config(Model::IoUring),
        }
    }

    /// The `serve` flags that select this variant on the command line.
    pub(crate) fn args(self) -> &'static [&'static str] {
        match self {
            Variant::EventLoop => &["--model", "event-loop"],
            Variant::Workers2 => &["--model", "event-loop", "--workers", "2"],
            Variant::ThreadPerConn => &["--model", "thread-per-conn"],
            Variant::Blocking => &["--model", "blocking"],
            Variant::IoUring => &["--model", "io-uring"],
        }
    }

    /// `echoloop serve` with this variant's flags, then `args`.
    pub(crate) fn serve_args<'a>(self, args: &[&'a str]) -> Vec<&'a str> {
        [&["serve"][..], self.args(), args].concat()
    }

    /// Only the blocking model serves clients one after another.
    pub(crate) fn serves_one_at_a_time(self) -> bool {
        self == Variant::Blocking
    }

    /// Why this variant cannot run here, if it cannot: only a kernel that refuses io_uring.
    fn unavailable(self) -> Option<String> {
        match self {
            Variant::IoUring => super::io_uring::kernel_refuses(),
            _ => None,
        }
    }
}

/// What a behaviour needs beyond serving TCP clients, which some variants do not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// A `unix:` address.
    UnixSocket,
    /// A listening socket passed in by a service manager (socket activation).
    Activation,
    /// A `udp:` listener (datagrams).
    Datagrams,
    /// Several clients served at once.
    Concurrency,
    /// A lower RLIMIT_NOFILE honoured while the server runs (`prlimit` on a running server).
    LimitLoweredWhileRunning,
}

impl Need {
    /// If `variant` does not meet this need, check what it does instead and return true.
    /// The one table of what each variant lacks.
    fn check_instead(self, variant: Variant) -> bool {
        match (self, variant) {
            // SO_REUSEPORT, which the workers share a port through, is for TCP and UDP, not a Unix path.
            (Need::UnixSocket, Variant::Workers2) => {
                let path = SocketPath::new("workers2-unix");
                assert_refused(
                    &serve_once(variant, &[&path.addr()]),
                    "--workers 2 needs TCP or UDP addresses",
                );
                assert!(!path.0.exists(), "the refused server left {}", path.0.display());
            }
            // The same: workers share a port through sockets echoloop binds itself.
            (Need::Activation, Variant::Workers2) => {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind the socket to pass");
                assert_refused(
                    &super::activation::run_activated(listener.as_raw_fd(), &variant.serve_args(&[])),
                    "--workers 2 cannot share the socket the service manager passed",
                );
            }
            (Need::Concurrency, Variant::Blocking) => second_client_waits_for_the_first(variant),
            // A multishot accept keeps the limit it was armed with: io-uring's own test sets
            // the limit before the server starts, and checks the same back-off.
            (Need::LimitLoweredWhileRunning, Variant::IoUring) => {
                super::io_uring::out_of_descriptors_backs_off_then_serves_the_queue()
            }
            _ => return false,
        }
        eprintln!("{variant:?} lacks {self:?}: checked what it does instead");
        true
    }
}

/// Run `body` on `variant`, or, where the variant lacks one of `needs`, check what it does
/// instead. (What `for_variants!` calls.)
pub(crate) fn run(variant: Variant, needs: &[Need], body: impl FnOnce(Variant)) {
    if let Some(reason) = variant.unavailable() {
        return eprintln!("skipped: {reason}");
    }
    if !needs.iter().any(|need| need.check_instead(variant)) {
        body(variant);
    }
}

/// `echoloop serve` with `variant`'s flags and `args`, run to its end (bounded).
fn serve_once(variant: Variant, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_echoloop"));
    command.args(variant.serve_args(args));
    run_to_end(command)
}

/// A refusal: a usage error (exit 2), one line on stderr containing `says`, nothing on stdout.
#[track_caller]
fn assert_refused(out: &Output, says: &str) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "it started: {stdout}");
    assert!(stderr.contains(says) && stderr.lines().count() == 1, "one line with {says:?}: {stderr}");
}

/// The blocking model in one picture: while client A is connected, client B's bytes get no
/// echo (B waits in the kernel's accept queue); once A leaves, B is served.
fn second_client_waits_for_the_first(variant: Variant) {
    let server = TestServer::start(variant.config());
    let mut a = server.connect();
    round_trip(&mut a, b"A is being served");
    let mut b = server.connect(); // the handshake completes: the kernel queues B
    b.write_all(b"B waits").unwrap();
    b.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0; 7];
    let waiting = b.read(&mut buf);
    assert!(
        matches!(&waiting, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "B got {waiting:?} while A was connected"
    );
    round_trip(&mut a, b"A is still served");
    drop(a);
    b.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    b.read_exact(&mut buf).expect("B is served once A has left");
    assert_eq!(&buf, b"B waits");
    drop(b);
    let summary = server.stop();
    assert_eq!((summary.connections, summary.peak_connections), (2, 1));
}

/// Send `data` and read the same bytes back.
fn round_trip(stream: &mut impl super::util::Duplex, data: &[u8]) {
    stream.write_all(data).expect("send");
    let mut echo = vec![0; data.len()];
    stream.read_exact(&mut echo).expect("read echo");
    assert_eq!(echo, data);
}
