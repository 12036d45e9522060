//! The servers `--compare` starts: any program, given as a command line in which `{addr}`
//! stands for the address it must listen on (or `{host}` and `{port}`, for programs that
//! take them apart, as socat and ncat do).
//!
//! The bench knows nothing of the servers it compares. A [`ServerSpec`] is a name and an
//! argv; the bench picks a free loopback port, puts `127.0.0.1:PORT` where `{addr}` is,
//! starts the program, and waits until the port accepts a TCP connection (a UDP echo: until
//! it echoes a datagram, see [`crate::udp_probe`]), so a server need not print anything. A
//! server that serves both has a spec for each, under one name. Each run gets a fresh
//! process: its memory and CPU can then be read from `/proc` apart from the load
//! generator's, and nothing one scenario left behind
//! (a grown slab, an allocator's cache, a thousand exited threads) shows up in the next.
//!
//! A server may fork (socat `fork`, ncat `-k -e`): its work is then done by its children,
//! so its CPU and memory are those of its whole process tree ([`sys::tree_cpu_time`],
//! [`sys::tree_memory`]). It runs in a process group of its own, and is stopped by that
//! group: SIGTERM, then SIGKILL for whatever has not exited in time. Exiting because of
//! the SIGTERM it was sent (killed by it, or exit status 143 = 128 + 15, as socat does) is
//! a clean stop.
//!
//! [`preflight`] starts every server once before a comparison, so that a command that
//! cannot run fails in a second, not after minutes of other cells.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::target::Transport;
use crate::{sys, udp_probe};

/// The argument text replaced by the address a server must listen on (`127.0.0.1:PORT`).
pub const ADDR_PLACEHOLDER: &str = "{addr}";
/// The argument text replaced by the host part of that address (`127.0.0.1`).
pub const HOST_PLACEHOLDER: &str = "{host}";
/// The argument text replaced by the port part of that address.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// A server `--compare` can start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Its name in `--models`, the table and JSON.
    pub name: String,
    /// The program and its arguments; [`ADDR_PLACEHOLDER`] (anywhere in an argument) becomes
    /// `127.0.0.1:PORT`, [`HOST_PLACEHOLDER`] `127.0.0.1` and [`PORT_PLACEHOLDER`] `PORT`.
    pub argv: Vec<OsString>,
    /// The most connections it serves at once, when limited (a server that handles one
    /// connection at a time: 1). Scenarios that open more skip it.
    pub max_connections: Option<usize>,
    /// What the command line serves at `{addr}`: only scenarios of that transport run it.
    pub transport: Transport,
}

impl ServerSpec {
    /// A server serving any number of connections at once.
    pub fn new<A: Into<OsString>>(name: impl Into<String>, argv: impl IntoIterator<Item = A>) -> ServerSpec {
        ServerSpec {
            name: name.into(),
            argv: argv.into_iter().map(Into::into).collect(),
            max_connections: None,
            transport: Transport::Stream,
        }
    }

    /// A UDP echo service at `{addr}`, for the UDP scenarios.
    pub fn udp<A: Into<OsString>>(name: impl Into<String>, argv: impl IntoIterator<Item = A>) -> ServerSpec {
        ServerSpec { transport: Transport::Datagram, ..ServerSpec::new(name, argv) }
    }

    /// The same server, known to serve at most `connections` at once.
    pub fn serving_at_most(self, connections: usize) -> ServerSpec {
        ServerSpec { max_connections: Some(connections), ..self }
    }

    /// Whether a load of `connections` at once is one it can serve.
    pub fn can_serve(&self, connections: usize) -> bool {
        self.max_connections.is_none_or(|most| connections <= most)
    }

    /// A spec the bench cannot use, said in one line.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains([',', ' ']) {
            return Err(format!("server name '{}' must be non-empty, without commas or spaces", self.name));
        }
        let names = |placeholder: &str| {
            self.argv.iter().any(|arg| arg.to_str().is_some_and(|a| a.contains(placeholder)))
        };
        if !names(ADDR_PLACEHOLDER) && !names(PORT_PLACEHOLDER) {
            return Err(format!(
                "server '{}': its command line has no {ADDR_PLACEHOLDER} (or {PORT_PLACEHOLDER}) to listen on",
                self.name
            ));
        }
        Ok(())
    }

    /// The command line with every placeholder replaced by its part of `addr`.
    fn command_line(&self, addr: SocketAddr) -> Vec<OsString> {
        let parts = [
            (ADDR_PLACEHOLDER, addr.to_string()),
            (HOST_PLACEHOLDER, addr.ip().to_string()),
            (PORT_PLACEHOLDER, addr.port().to_string()),
        ];
        let substitute = |arg: &OsString| match arg.to_str() {
            Some(text) => {
                parts.iter().fold(text.to_string(), |text, (from, to)| text.replace(from, to)).into()
            }
            None => arg.clone(), // not UTF-8, so it cannot hold a placeholder
        };
        self.argv.iter().map(substitute).collect()
    }

    /// The program to run: found as a path, or on `PATH`; `None` if it is neither.
    fn program(&self) -> Option<PathBuf> {
        let program = Path::new(self.argv.first()?);
        let runnable =
            |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if program.components().count() > 1 || program.is_absolute() {
            return runnable(program).then(|| program.to_path_buf());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| runnable(p))
    }
}

/// The servers `--compare` can start, as the calling program supplies them.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Every server, in table order; `--models` picks among them by name.
    pub servers: Vec<ServerSpec>,
    /// Two server names whose ratio gets a column of its own in the table (`A vs B`:
    /// msgs/s of A over B, and their memory), when both ran.
    pub ratio: Option<(String, String)>,
    /// The reference servers `--references` adds (built beside the calling binary).
    pub references: Vec<ServerSpec>,
}

/// The reference servers, if their programs are there; else what to do about it.
pub fn present(references: &[ServerSpec]) -> Result<Vec<ServerSpec>, Error> {
    let missing: Vec<String> = references
        .iter()
        .filter_map(|spec| spec.argv.first().map(Path::new))
        .filter(|program| !program.is_file())
        .map(|program| program.display().to_string())
        .collect();
    if references.is_empty() {
        return Err(Error::Usage("--references: this binary knows no reference servers".into()));
    }
    if !missing.is_empty() {
        return Err(Error::Run(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "--references: {} not found; build them with cargo build --release --workspace",
                missing.join(", ")
            ),
        )));
    }
    Ok(references.to_vec())
}

/// The servers `--models` names, in the order named, or all of `known` when it names none.
/// Errors say which name is unknown and what the known ones are.
pub fn select(known: &[ServerSpec], names: &[String]) -> Result<Vec<ServerSpec>, String> {
    known.iter().try_for_each(ServerSpec::check)?;
    let same = |a: &ServerSpec, b: &ServerSpec| a.name == b.name && a.transport == b.transport;
    if let Some(twice) = known.iter().enumerate().find(|(i, s)| known[..*i].iter().any(|k| same(k, s))) {
        return Err(format!("server name '{}' is taken; pick another for --server", twice.1.name));
    }
    if names.is_empty() {
        return Ok(known.to_vec());
    }
    let mut chosen: Vec<ServerSpec> = Vec::with_capacity(names.len());
    for name in names {
        if chosen.iter().any(|s| s.name == *name) {
            return Err(format!("--models: '{name}' is named twice"));
        }
        let before = chosen.len();
        chosen.extend(known.iter().filter(|s| s.name == *name).cloned()); // its stream and UDP specs
        if chosen.len() == before {
            let mut all: Vec<&str> = known.iter().map(|s| s.name.as_str()).collect();
            all.dedup();
            return Err(format!("--models: no server named '{name}' (known: {})", all.join(", ")));
        }
    }
    Ok(chosen)
}

/// How long a server may take to accept its first connection.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// How often the port is tried, and how often an exit is looked for, while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Lines of a server's stderr kept for problem reports.
const STDERR_LINES: usize = 20;

/// A server under test: a child process, stopped (or killed) when done.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// The last lines the server wrote to stderr, for problem reports.
    stderr: Arc<Mutex<VecDeque<String>>>,
    transport: Transport,
}

impl ServerProcess {
    /// Start `spec` on a free loopback port, on CPU 0 when `pin`, and wait until the port
    /// accepts connections.
    pub fn start(spec: &ServerSpec, pin: bool) -> io::Result<ServerProcess> {
        ServerProcess::start_within(spec, pin, START_LIMIT)
    }

    fn start_within(spec: &ServerSpec, pin: bool, limit: Duration) -> io::Result<ServerProcess> {
        let addr = match spec.transport {
            Transport::Stream => free_port()?,
            Transport::Datagram => udp_probe::free_port()?,
        };
        let argv = spec.command_line(addr);
        let (program, args) = argv.split_first().ok_or_else(|| io::Error::other("empty command line"))?;
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // A group of its own: stopping it stops whatever it forked, and nothing else.
        command.process_group(0);
        if pin {
            // SAFETY: runs in the child between fork and exec; sched_setaffinity is a
            // plain system call and allocates nothing.
            unsafe { command.pre_exec(|| sys::pin_current_thread(0)) };
        }
        let mut child = command.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {}: {e}", program.to_string_lossy()))
        })?;
        let stderr = collect_stderr(&mut child);
        let mut server = ServerProcess { child, addr, stderr, transport: spec.transport };
        server.wait_until_accepting(limit)?; // on error, drop kills the child
        Ok(server)
    }

    /// Whether it serves yet: a TCP connection accepted, or a datagram echoed.
    fn probe(&self) -> io::Result<()> {
        match self.transport {
            Transport::Stream => TcpStream::connect_timeout(&self.addr, POLL_INTERVAL).map(drop),
            Transport::Datagram => udp_probe::echoes(self.addr, POLL_INTERVAL),
        }
    }

    /// Try the port until it accepts; fail at once if the server exits, or after `limit`.
    fn wait_until_accepting(&mut self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let msg = format!(
                    "exited ({status}) before accepting on {}; stderr: {}",
                    self.addr,
                    self.stderr_tail()
                );
                return Err(io::Error::other(msg));
            }
            match self.probe() {
                Ok(()) => return Ok(()), // a probe connection closes at once
                // Refused (not listening yet) or slow: try again until the deadline.
                Err(_) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                Err(e) => {
                    let secs = limit.as_secs_f64();
                    let what = match self.transport {
                        Transport::Stream => "accept connections",
                        Transport::Datagram => "echo a datagram",
                    };
                    let msg = format!(
                        "did not {what} on {} within {secs}s ({e}); stderr: {}",
                        self.addr,
                        self.stderr_tail()
                    );
                    return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
                }
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident memory of it and its children, now and at its peak; `None` once it has
    /// exited.
    pub fn memory(&self) -> Option<sys::Memory> {
        sys::tree_memory(self.pid())
    }

    /// SIGTERM to its process group, wait, kill the group if it hangs. `Err` describes
    /// anything abnormal: it had already exited, it needed killing, or it exited with a
    /// failure of its own.
    pub fn stop(self) -> Result<(), String> {
        self.stop_within(STOP_LIMIT)
    }

    fn stop_within(mut self, limit: Duration) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("server exited during the run ({status}); stderr: {}", self.stderr_tail()));
        }
        sys::terminate_group(self.pid()).map_err(|e| format!("cannot stop the server: {e}"))?;
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if stopped_cleanly(status) => {
                    self.reap_group(deadline);
                    return Ok(());
                }
                Ok(Some(status)) => {
                    self.reap_group(deadline);
                    return Err(format!("server exited with {status}; stderr: {}", self.stderr_tail()));
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                Ok(None) => {
                    self.kill();
                    return Err(format!(
                        "server ignored SIGTERM for {}s and was killed",
                        limit.as_secs_f64()
                    ));
                }
                Err(e) => return Err(format!("waiting for the server: {e}")),
            }
        }
    }

    /// SIGKILL to the group and reap, best effort: it is the end of these processes either way.
    fn kill(&mut self) {
        let _ = sys::kill_group(self.pid());
        let _ = self.child.wait();
    }

    /// The server has exited; give the rest of its group (children it forked, which got
    /// the SIGTERM too) until `deadline`, then SIGKILL what is left.
    fn reap_group(&self, deadline: Instant) {
        while sys::group_is_running(self.pid()) && Instant::now() < deadline {
            thread::sleep(POLL_INTERVAL);
        }
        let _ = sys::kill_group(self.pid()); // best effort: usually no one is left (ESRCH)
    }

    /// The last few lines of the server's stderr, on one line.
    fn stderr_tail(&self) -> String {
        thread::sleep(Duration::from_millis(50)); // let the reader thread catch up
        let lines: Vec<String> = match self.stderr.lock() {
            Ok(lines) => lines.iter().rev().take(3).rev().cloned().collect(),
            Err(_) => Vec::new(), // the reader panicked; there is nothing to show
        };
        if lines.is_empty() { "(empty)".into() } else { lines.join(" | ") }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only reached with the child still running if a run was cut short.
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Exit 0, death by the SIGTERM we sent (the default for a program that does not handle
/// it), or exit status 128 + SIGTERM (what a program that handles it by saying so
/// returns, as socat does, and as a shell reports death by it): in every case the server
/// stopped because it was asked to.
fn stopped_cleanly(status: ExitStatus) -> bool {
    status.success() || status.signal() == Some(libc::SIGTERM) || status.code() == Some(128 + libc::SIGTERM)
}

/// Start each server once, as a comparison will, and stop it: a program that is not
/// there, or does not listen, or does not stop cleanly, is found before the first cell
/// runs. A missing program is a usage error; the rest are failed runs. `progress` gets one
/// line per server.
pub fn preflight(servers: &[ServerSpec], pin: bool, say: impl Fn(&str)) -> Result<(), Error> {
    let missing: Vec<String> = servers
        .iter()
        .filter(|spec| spec.program().is_none())
        .map(|spec| {
            let program = spec.argv.first().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            format!("server '{}': program '{program}' not found (not a file, or not on PATH)", spec.name)
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::Usage(missing.join("; ")));
    }
    let mut failures = Vec::new();
    for spec in servers {
        let started = Instant::now();
        let outcome =
            ServerProcess::start(spec, pin).map_err(|e| e.to_string()).and_then(ServerProcess::stop);
        match outcome {
            Ok(()) => say(&format!(
                "checked {}: listens, and stops on SIGTERM ({:.1}s)",
                spec.name,
                started.elapsed().as_secs_f64()
            )),
            Err(e) => failures.push(format!("server '{}': {e}", spec.name)),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Run(io::Error::other(format!("before the comparison: {}", failures.join("; ")))))
    }
}

/// A loopback address whose port is free right now. Another program could take the port
/// before the server binds it; then the server fails to start, or exits during the run,
/// and either is reported as a problem of that run.
fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Read the child's stderr on a thread, keeping its last [`STDERR_LINES`] lines.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<VecDeque<String>>> {
    let lines = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_LINES)));
    if let Some(stderr) = child.stderr.take() {
        let sink = Arc::clone(&lines);
        // Ends when the child closes its stderr, which at the latest is when it exits.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(mut lines) = sink.lock() else { return };
                if lines.len() == STDERR_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn spec(name: &str, argv: &[&str]) -> ServerSpec {
        ServerSpec::new(name, argv.iter().copied())
    }

    #[test]
    fn addr_is_substituted_wherever_it_appears() {
        let server = spec("x", &["srv", "{addr}", "--listen={addr}", "--port", "7"]);
        let addr: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        let want = ["srv", "127.0.0.1:4567", "--listen=127.0.0.1:4567", "--port", "7"];
        assert_eq!(server.command_line(addr), want.map(OsString::from));
        // An argument that is not UTF-8 is passed through untouched.
        let raw = OsString::from_vec(vec![0xFF, b'{']);
        let server = ServerSpec::new("y", [OsString::from("{addr}"), raw.clone()]);
        assert_eq!(server.command_line(addr)[1], raw);
    }

    #[test]
    fn specs_without_an_address_or_a_usable_name_are_refused() {
        let error = spec("x", &["srv", "--port", "7"]).check().unwrap_err();
        assert!(error.contains("no {addr}"), "{error}");
        assert!(spec("a,b", &["{addr}"]).check().unwrap_err().contains("without commas"));
        assert!(spec("", &["{addr}"]).check().is_err());
        assert!(ServerSpec::new("x", Vec::<OsString>::new()).check().is_err());
        assert_eq!(spec("x", &["srv", "{addr}"]).check(), Ok(()));
    }

    #[test]
    fn models_are_chosen_by_name_in_the_order_named() {
        let known = [spec("a", &["{addr}"]), spec("b", &["{addr}"]), spec("c", &["{addr}"])];
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let chosen =
            |list: &[&str]| select(&known, &names(list)).map(|v| v.into_iter().map(|s| s.name).collect());
        assert_eq!(chosen(&[]), Ok(names(&["a", "b", "c"])));
        assert_eq!(chosen(&["c", "a"]), Ok(names(&["c", "a"])));
        assert_eq!(chosen(&["a", "d"]), Err("--models: no server named 'd' (known: a, b, c)".to_string()));
        assert_eq!(chosen(&["b", "b"]), Err("--models: 'b' is named twice".to_string()));
    }

    #[test]
    fn a_name_may_serve_streams_and_datagrams() {
        let known =
            [spec("a", &["{addr}"]), ServerSpec::udp("a", ["udp:{addr}"]), ServerSpec::udp("u", ["{addr}"])];
        let chosen = select(&known, &["a".to_string()]).unwrap();
        assert_eq!(
            chosen.iter().map(|s| s.transport).collect::<Vec<_>>(),
            [Transport::Stream, Transport::Datagram]
        );
        let all = select(&known, &["x".to_string()]).unwrap_err();
        assert_eq!(all, "--models: no server named 'x' (known: a, u)");
        let twice = [ServerSpec::udp("u", ["{addr}"]), ServerSpec::udp("u", ["{addr}"])];
        assert!(select(&twice, &[]).unwrap_err().contains("is taken"));
    }

    #[test]
    fn a_udp_server_that_never_echoes_times_out() {
        let silent = ServerSpec::udp("s", ["sh", "-c", "exec sleep 30", "{addr}"]);
        let error = ServerProcess::start_within(&silent, false, Duration::from_millis(300)).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(error.to_string().contains("did not echo a datagram"), "{error}");
    }

    #[test]
    fn a_limited_server_skips_bigger_loads() {
        let one = spec("one", &["{addr}"]).serving_at_most(1);
        assert!(one.can_serve(1) && !one.can_serve(2));
        assert!(spec("any", &["{addr}"]).can_serve(10_000));
    }

    #[test]
    fn a_server_that_exits_early_is_reported_with_its_stderr() {
        let failing = spec("f", &["sh", "-c", "echo cannot bind {addr} >&2; exit 3"]);
        let error = ServerProcess::start_within(&failing, false, Duration::from_secs(10)).err().unwrap();
        let message = error.to_string();
        assert!(message.contains("exited (exit status: 3)"), "{message}");
        assert!(message.contains("cannot bind 127.0.0.1:"), "{message}");
    }

    #[test]
    fn a_server_that_never_listens_times_out() {
        let silent = spec("s", &["sh", "-c", "exec sleep 30", "{addr}"]);
        let started = Instant::now();
        let error = ServerProcess::start_within(&silent, false, Duration::from_millis(300)).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(error.to_string().contains("did not accept connections"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5)); // and its child was killed on drop
    }

    /// A running child wrapped as a server, without waiting for a port.
    fn running(script: &str) -> ServerProcess {
        let mut child =
            Command::new("sh").args(["-c", script]).stderr(Stdio::piped()).process_group(0).spawn().unwrap();
        let stderr = collect_stderr(&mut child);
        thread::sleep(Duration::from_millis(100)); // let the shell set its traps
        ServerProcess { child, addr: free_port().unwrap(), stderr, transport: Transport::Stream }
    }

    #[test]
    fn sigterm_stops_a_server_and_a_deaf_one_is_killed() {
        assert_eq!(running("exec sleep 30").stop_within(Duration::from_secs(5)), Ok(()));
        let deaf = running("trap '' TERM; while :; do sleep 0.05; done");
        let error = deaf.stop_within(Duration::from_millis(300)).unwrap_err();
        assert!(error.contains("ignored SIGTERM"), "{error}");
        let failing = running("trap 'exit 4' TERM; while :; do sleep 0.05; done");
        let error = failing.stop_within(Duration::from_secs(5)).unwrap_err();
        assert!(error.contains("exited with exit status: 4"), "{error}");
    }
}
