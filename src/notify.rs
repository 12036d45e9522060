//! Readiness and liveness for the service manager (`sd_notify(3)`).
//!
//! A service of `Type=notify` tells systemd what it is doing by sending short datagrams
//! (`READY=1`, `STOPPING=1`, `STATUS=...`, `WATCHDOG=1`) to the Unix socket named in
//! `NOTIFY_SOCKET`. systemd then starts units that depend on us only once we serve
//! (`READY=1`), shows our live statistics line in `systemctl status` (`STATUS=`), and, with
//! `WatchdogSec=`, restarts a server whose loop has stopped turning: it expects `WATCHDOG=1`
//! within every `WATCHDOG_USEC` microseconds, so a [`WatchdogTimer`] owned by the serving
//! loop itself sends one every half interval. A thread of its own would keep pinging while
//! the loop hung, which is exactly what the watchdog is there to catch.
//!
//! The datagrams are sent with the `sd-notify` crate. Without `NOTIFY_SOCKET` (not started
//! by a service manager) nothing is sent and nothing fails; a notification that cannot be
//! sent is logged once, and serving goes on: the echo service matters more than its report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, warn};
use sd_notify::NotifyState;

/// The shortest watchdog ping interval: a `WATCHDOG_USEC` of 1 must not make a loop spin.
const MIN_PING_INTERVAL: Duration = Duration::from_millis(1);

/// Sends notifications to the service manager, if there is one. Cheap to clone: every
/// serving thread may hold one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` was set at start; if not, every method does nothing.
    active: bool,
    /// Half of `WATCHDOG_USEC`, if the watchdog is on for this process.
    ping_interval: Option<Duration>,
    /// A failed send has been logged as a warning (later ones only at debug level).
    warned: Arc<AtomicBool>,
}

impl Notifier {
    /// From the environment the service manager set: `NOTIFY_SOCKET`, and `WATCHDOG_USEC`
    /// unless `WATCHDOG_PID` names another process.
    pub fn from_env() -> Notifier {
        let active = std::env::var_os("NOTIFY_SOCKET").is_some_and(|socket| !socket.is_empty());
        let watchdog = sd_notify::watchdog_enabled().filter(|usec| active && !usec.is_zero());
        let ping_interval = watchdog.map(|usec| (usec / 2).max(MIN_PING_INTERVAL));
        if let Some(interval) = ping_interval {
            debug!("watchdog: WATCHDOG=1 every {interval:?}");
        }
        Notifier { active, ping_interval, warned: Arc::default() }
    }

    /// A notifier that sends nothing (a server started by a program, not a manager).
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// How often the serving loop must send `WATCHDOG=1` (half of `WATCHDOG_USEC`), if the
    /// service manager asked for it.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.ping_interval
    }

    /// `READY=1`: every listener is being served.
    pub fn ready(&self) {
        self.send(NotifyState::Ready);
    }

    /// `STOPPING=1`: a shutdown has begun.
    pub fn stopping(&self) {
        self.send(NotifyState::Stopping);
    }

    /// `STATUS=line`, shown by `systemctl status`. A status is one line: line breaks in
    /// `line` become spaces (a newline would start another assignment).
    pub fn status(&self, line: &str) {
        if !self.active {
            return;
        }
        if line.contains('\n') {
            self.send(NotifyState::Status(&line.replace('\n', " ")));
        } else {
            self.send(NotifyState::Status(line));
        }
    }

    /// `WATCHDOG=1`: the loop is still turning.
    pub fn watchdog(&self) {
        self.send(NotifyState::Watchdog);
    }

    fn send(&self, state: NotifyState<'_>) {
        if !self.active {
            return;
        }
        let Err(e) = notify(&state) else { return };
        if self.warned.swap(true, Ordering::Relaxed) {
            debug!("sd_notify {state}: {e}");
        } else {
            warn!("cannot notify the service manager ({state}): {e}; serving goes on");
        }
    }
}

/// Send `state` to `NOTIFY_SOCKET`. sd_notify(3) lets the name begin with `@` for a socket
/// in Linux's abstract namespace (as some service and container managers pass it); the
/// `sd-notify` crate connects to the name as a path, so such a name is sent to here, in
/// the crate's own format (`STATE\n`), and any other goes through the crate.
fn notify(state: &NotifyState<'_>) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if let Some(name) = std::env::var_os("NOTIFY_SOCKET").and_then(|socket| abstract_name(&socket)) {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.send_to_addr(format!("{state}\n").as_bytes(), &addr)?;
        return Ok(());
    }
    sd_notify::notify(std::slice::from_ref(state))
}

/// The abstract name in a `NOTIFY_SOCKET` of the form `@name`.
#[cfg(target_os = "linux")]
fn abstract_name(socket: &std::ffi::OsStr) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    socket.as_bytes().strip_prefix(b"@").map(<[u8]>::to_vec)
}

/// When the next `WATCHDOG=1` is due. The serving loop owns one: it adds
/// [`WatchdogTimer::deadline`] to its wake-up deadlines and calls [`WatchdogTimer::tick`]
/// each turn, so a ping proves that the loop itself still turns.
#[derive(Debug)]
pub struct WatchdogTimer {
    notifier: Notifier,
    interval: Duration,
    /// Due at `next` (a ping at `now == next` is on time, not late).
    next: Instant,
}

impl WatchdogTimer {
    /// A timer for `notifier`'s watchdog, first due one interval after `now`; `None` when
    /// the service manager asked for no watchdog.
    pub fn new(notifier: &Notifier, now: Instant) -> Option<WatchdogTimer> {
        let interval = notifier.ping_interval()?;
        Some(WatchdogTimer { notifier: notifier.clone(), interval, next: now + interval })
    }

    /// How often it pings.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the loop must wake up at the latest to ping in time.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// Ping if due at `now`, and schedule the next one an interval later. True if it pinged.
    pub fn tick(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.notifier.watchdog();
        self.next = now + self.interval;
        true
    }
}

#[cfg(test)]
mod tests {
    //! The notifier reads its socket from the environment, and a test must not change the
    //! environment of this multi-threaded test process. So each test that needs one runs
    //! itself again as a child process with the variables set (`in_child`), and the parent
    //! reads what the child sent from a Unix datagram socket it bound.

    use std::os::unix::net::UnixDatagram;
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    /// Set in the child process: the name of the test to act out.
    const CHILD: &str = "ECHOLOOP_NOTIFY_TEST_CHILD";

    /// True in the child process started by [`run_child`] for `test`.
    fn in_child(test: &str) -> bool {
        std::env::var(CHILD).is_ok_and(|name| name == test)
    }

    /// A Unix datagram socket to play the service manager, at a fresh path.
    fn manager_socket(test: &str) -> (UnixDatagram, PathBuf) {
        let path = std::env::temp_dir().join(format!("echoloop-notify-{test}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        (socket, path)
    }

    /// Run this test binary's `test` alone in a child process with `env`; panic if the
    /// child's own assertions failed.
    fn run_child(test: &str, env: &[(&str, &str)]) {
        run_child_with(test, None, env)
    }

    /// [`run_child`], with the variable `own_pid` (if any) set to the child's own pid: a
    /// shell exports its `$$` and execs the test binary, which keeps that pid.
    fn run_child_with(test: &str, own_pid: Option<&str>, env: &[(&str, &str)]) {
        let exe = std::env::current_exe().expect("the test binary");
        let mut command = match own_pid {
            Some(var) => {
                let mut sh = Command::new("/bin/sh");
                sh.arg("-c").arg(format!(r#"export {var}=$$; exec "$0" "$@""#)).arg(exe);
                sh
            }
            None => Command::new(exe),
        };
        let out = command
            .args([&format!("notify::tests::{test}"), "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD, test)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .output()
            .expect("run the child test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");
    }

    /// Every message the child sent, in order, until none comes for a while.
    fn received(socket: &UnixDatagram) -> Vec<String> {
        let mut messages = Vec::new();
        let mut buf = [0; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        messages
    }

    /// READY, STATUS, STOPPING and WATCHDOG arrive as sd_notify(3) spells them, one
    /// datagram each; a status with a line break stays one assignment.
    #[test]
    fn each_notification_is_one_datagram() {
        const TEST: &str = "each_notification_is_one_datagram";
        if in_child(TEST) {
            let notifier = Notifier::from_env();
            notifier.ready();
            notifier.status("stats: open=1 accepted=2");
            notifier.status("two\nlines");
            notifier.watchdog();
            notifier.stopping();
            return;
        }
        let (socket, path) = manager_socket("each");
        run_child(TEST, &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
        let want = [
            "READY=1\n",
            "STATUS=stats: open=1 accepted=2\n",
            "STATUS=two lines\n",
            "WATCHDOG=1\n",
            "STOPPING=1\n",
        ];
        assert_eq!(received(&socket), want);
        std::fs::remove_file(&path).unwrap();
    }

    /// Regression: a NOTIFY_SOCKET in the abstract namespace (`@name`, which sd_notify(3)
    /// allows) was taken for a path: "cannot notify the service manager (READY=1): No such
    /// file or directory", and no notification ever arrived.
    #[test]
    fn an_abstract_notify_socket_gets_the_notifications() {
        const TEST: &str = "an_abstract_notify_socket_gets_the_notifications";
        if in_child(TEST) {
            let notifier = Notifier::from_env();
            notifier.ready();
            notifier.stopping();
            return;
        }
        use std::os::linux::net::SocketAddrExt;
        let name = format!("echoloop-notify-abstract-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        run_child(TEST, &[("NOTIFY_SOCKET", &format!("@{name}"))]);
        assert_eq!(received(&socket), ["READY=1\n", "STOPPING=1\n"]);
    }

    /// WATCHDOG_USEC asks for a ping every half interval, only when the watchdog is for
    /// this process (WATCHDOG_PID, if set, is ours) and a socket to send it to exists.
    #[test]
    fn the_watchdog_interval_is_half_of_watchdog_usec() {
        const TEST: &str = "the_watchdog_interval_is_half_of_watchdog_usec";
        if in_child(TEST) {
            let expected = std::env::var("EXPECTED_MS").unwrap();
            let got = Notifier::from_env().ping_interval().map(|d| d.as_millis().to_string());
            assert_eq!(got.as_deref().unwrap_or("none"), expected);
            return;
        }
        let socket = ("NOTIFY_SOCKET", "/nonexistent/notify.sock");
        run_child(TEST, &[socket, ("WATCHDOG_USEC", "3000000"), ("EXPECTED_MS", "1500")]);
        let own_pid = Some("WATCHDOG_PID");
        run_child_with(TEST, own_pid, &[socket, ("WATCHDOG_USEC", "3000000"), ("EXPECTED_MS", "1500")]);
        run_child(
            TEST,
            &[socket, ("WATCHDOG_USEC", "3000000"), ("WATCHDOG_PID", "1"), ("EXPECTED_MS", "none")],
        );
        run_child(TEST, &[socket, ("WATCHDOG_USEC", "0"), ("EXPECTED_MS", "none")]);
        run_child(TEST, &[socket, ("WATCHDOG_USEC", "often"), ("EXPECTED_MS", "none")]);
        run_child(TEST, &[socket, ("WATCHDOG_USEC", "1"), ("EXPECTED_MS", "1")]);
        run_child(TEST, &[("WATCHDOG_USEC", "3000000"), ("EXPECTED_MS", "none")]);
    }

    /// Without NOTIFY_SOCKET nothing is sent and nothing fails; with a socket nobody
    /// listens on, serving goes on (a warning, no error).
    #[test]
    fn without_a_manager_nothing_is_sent_and_nothing_fails() {
        const TEST: &str = "without_a_manager_nothing_is_sent_and_nothing_fails";
        if in_child(TEST) {
            let notifier = Notifier::from_env();
            notifier.ready();
            notifier.status("stats");
            notifier.watchdog();
            notifier.stopping();
            return;
        }
        let (socket, path) = manager_socket("none");
        run_child(TEST, &[]);
        assert_eq!(received(&socket), Vec::<String>::new(), "sent without NOTIFY_SOCKET");
        run_child(TEST, &[("NOTIFY_SOCKET", "/nonexistent/notify.sock")]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_timer_pings_once_per_interval_from_the_last_ping() {
        let notifier = Notifier { ping_interval: Some(Duration::from_millis(100)), ..Notifier::disabled() };
        let start = Instant::now();
        let mut timer = WatchdogTimer::new(&notifier, start).unwrap();
        assert_eq!(timer.deadline(), start + Duration::from_millis(100));
        assert!(!timer.tick(start + Duration::from_millis(99)));
        assert!(timer.tick(start + Duration::from_millis(100)), "due at the deadline");
        assert!(!timer.tick(start + Duration::from_millis(150)));
        // A late turn pings at once, and the next ping is an interval after this one.
        assert!(timer.tick(start + Duration::from_millis(350)));
        assert_eq!(timer.deadline(), start + Duration::from_millis(450));
        assert!(WatchdogTimer::new(&Notifier::disabled(), start).is_none());
    }
}
