//! sd_notify: what a `Type=notify` service manager hears. The test plays the manager: it
//! binds a Unix datagram socket, starts the server with `NOTIFY_SOCKET` naming it, and reads
//! the notifications (`READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1`), one per datagram.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::listeners::assert_echoes;
use super::util::{IO_TIMEOUT, temp_socket_path, wait_child};
use super::variants::Variant;

/// The service manager's end: a bound datagram socket and everything received on it.
struct Manager {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    /// Every notification so far, in arrival order, with its arrival time.
    received: Vec<(Instant, String)>,
}

impl Manager {
    fn new(name: &str) -> Manager {
        let path = temp_socket_path(&format!("notify-{name}"));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager { socket, path, received: Vec::new() }
    }

    /// Receive until a notification equal to `line` (e.g. `READY=1`) arrives, within `limit`;
    /// true if it did.
    fn wait_for(&mut self, line: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.received.iter().any(|(_, got)| got == line) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.receive_one(left) {
                return false;
            }
        }
    }

    /// Like [`Manager::wait_for`], for a notification starting with `prefix`.
    fn wait_for_prefix(&mut self, prefix: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.received.iter().any(|(_, got)| got.starts_with(prefix)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.receive_one(left) {
                return false;
            }
        }
    }

    /// Receive whatever arrives for `period`.
    fn listen_for(&mut self, period: Duration) {
        let end = Instant::now() + period;
        while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            self.receive_one(left);
        }
    }

    /// One datagram within `limit`, split into its lines; false on timeout.
    fn receive_one(&mut self, limit: Duration) -> bool {
        self.socket.set_read_timeout(Some(limit.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0; 4096];
        let n = loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => break n,
                // A recv with a timeout is not restarted after an interruption, and io_uring
                // task work (the io-uring variant's probe ring, made on this thread) is one.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        };
        let now = Instant::now();
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            self.received.push((now, line.to_string()));
        }
        true
    }

    /// The notifications so far, without times.
    fn lines(&self) -> Vec<&str> {
        self.received.iter().map(|(_, line)| line.as_str()).collect()
    }

    /// Arrival times of every `WATCHDOG=1`.
    fn pings(&self) -> Vec<Instant> {
        self.received.iter().filter(|(_, line)| line == "WATCHDOG=1").map(|(at, _)| *at).collect()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A server whose stdout the test reads only when it chooses to (so it can tell what had
/// been printed by the time a notification arrived). Killed on drop.
struct Server {
    child: Child,
    stdout: ChildStdout,
}

impl Server {
    /// `echoloop serve ARGS...` with `env` (stderr is discarded: these tests read stdout and
    /// the notifications).
    fn start(env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_echoloop"));
        command.env_remove("WATCHDOG_USEC").env_remove("WATCHDOG_PID").env_remove("NOTIFY_SOCKET");
        command.arg("serve").args(args).envs(env.iter().copied());
        Server::spawn(command)
    }

    fn spawn(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echoloop");
        let stdout = child.stdout.take().unwrap();
        Server { child, stdout }
    }

    /// What the server has printed so far, without waiting for more.
    fn printed_so_far(&mut self) -> String {
        // SAFETY: F_GETFL / F_SETFL on our own open pipe descriptor.
        unsafe {
            let fd = self.stdout.as_raw_fd();
            libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
        }
        let mut out = Vec::new();
        let _ = self.stdout.read_to_end(&mut out); // ends with WouldBlock: nothing more yet
        String::from_utf8_lossy(&out).into_owned()
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn stop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
        let status = wait_child(&mut self.child, IO_TIMEOUT);
        assert!(status.success(), "{status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses of the `listening on` lines in `printed`.
fn listening(printed: &str) -> Vec<String> {
    printed.lines().filter_map(|line| line.strip_prefix("listening on ")).map(str::to_string).collect()
}

/// `READY=1` comes only once every listener is bound and announced (the `listening on`
/// lines are already in the pipe when it arrives), and every announced listener then
/// echoes; a statistics line is also the status; SIGTERM sends `STOPPING=1` before exit.
fn ready_after_the_listening_lines(variant: Variant) {
    let mut manager = Manager::new(&format!("ready-{variant:?}"));
    let mut args = variant.args().to_vec();
    args.extend(["127.0.0.1:0", "[::1]:0", "127.0.0.1:0", "--stats-interval", "0.1"]);
    let notify_socket = manager.path.to_str().unwrap().to_string();
    let mut server = Server::start(&[("NOTIFY_SOCKET", &notify_socket)], &args);
    assert!(manager.wait_for("READY=1", IO_TIMEOUT), "no READY=1; got {:?}", manager.lines());
    let announced = listening(&server.printed_so_far());
    assert_eq!(announced.len(), 3, "READY=1 before every listening line: {announced:?}");
    for (i, addr) in announced.iter().enumerate() {
        assert_echoes(addr, i as u64);
    }
    assert!(
        manager.wait_for_prefix("STATUS=stats: ", IO_TIMEOUT),
        "no statistics line as STATUS=; got {:?}",
        manager.lines()
    );
    server.stop();
    assert!(manager.wait_for("STOPPING=1", Duration::from_secs(1)), "no STOPPING=1: {:?}", manager.lines());
    let lines = manager.lines();
    let ready = lines.iter().position(|l| *l == "READY=1").unwrap();
    let stopping = lines.iter().position(|l| *l == "STOPPING=1").unwrap();
    assert!(ready < stopping, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| **l == "READY=1").count(), 1, "{lines:?}");
    assert!(!lines.contains(&"WATCHDOG=1"), "pings nobody asked for: {lines:?}");
}

for_variants!(ready_after_the_listening_lines);

/// With `WATCHDOG_USEC` (for this process), the serving loop pings every half interval,
/// also while nothing happens; not more often (no spinning).
fn watchdog_pings_at_half_the_interval(variant: Variant) {
    let mut manager = Manager::new(&format!("watchdog-{variant:?}"));
    let mut command = Command::new("/bin/sh");
    // WATCHDOG_PID must be the server's pid: the shell's `$$`, kept by `exec`.
    command.arg("-c").arg(r#"export WATCHDOG_PID=$$; exec "$0" "$@""#).arg(env!("CARGO_BIN_EXE_echoloop"));
    command.args(variant.serve_args(&["127.0.0.1:0", "[::1]:0"]));
    command.env("NOTIFY_SOCKET", &manager.path).env("WATCHDOG_USEC", "200000"); // pings every 100 ms
    let mut server = Server::spawn(command);
    assert!(manager.wait_for("READY=1", IO_TIMEOUT), "no READY=1; got {:?}", manager.lines());
    let window = Duration::from_millis(1500);
    let start = Instant::now();
    manager.listen_for(window);
    let pings = manager.pings().into_iter().filter(|at| *at >= start).count();
    // 15 expected; a loaded machine may delay a few, a spinning loop would send thousands.
    assert!((5..=40).contains(&pings), "{pings} pings in {window:?} at a 100 ms interval");
    let announced = listening(&server.printed_so_far());
    assert_echoes(&announced[0], 7);
    server.stop();
}
for_variants!(watchdog_pings_at_half_the_interval);

/// No `WATCHDOG=1` when the manager asked for none (no `WATCHDOG_USEC`) or asked another
/// process (`WATCHDOG_PID`); without `NOTIFY_SOCKET` nothing at all is sent.
fn no_pings_unless_asked(variant: Variant) {
    let mut manager = Manager::new(&format!("none-{variant:?}"));
    let notify_socket = manager.path.to_str().unwrap().to_string();
    let mut args = variant.args().to_vec();
    args.push("127.0.0.1:0");
    let env = [("NOTIFY_SOCKET", notify_socket.as_str()), ("WATCHDOG_USEC", "100000"), ("WATCHDOG_PID", "1")];
    for env in [&env[..1], &env[..]] {
        let mut server = Server::start(env, &args);
        assert!(manager.wait_for("READY=1", IO_TIMEOUT), "no READY=1; got {:?}", manager.lines());
        manager.listen_for(Duration::from_millis(400));
        assert!(manager.pings().is_empty(), "pings with {env:?}: {:?}", manager.lines());
        server.stop();
        assert!(manager.wait_for("STOPPING=1", IO_TIMEOUT), "no STOPPING=1: {:?}", manager.lines());
        manager.received.clear();
    }
    let mut server = Server::start(&[], &args);
    let announced = listening(&{
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut printed = String::new();
        while printed.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            printed = server.printed_so_far();
        }
        printed
    });
    assert_echoes(&announced[0], 9);
    manager.listen_for(Duration::from_millis(200));
    assert!(manager.received.is_empty(), "sent without NOTIFY_SOCKET: {:?}", manager.lines());
    server.stop();
}
for_variants!(no_pings_unless_asked);
