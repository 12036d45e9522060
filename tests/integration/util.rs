//! Test helpers: `TestServer` (in process, port 0, stopped through its handle and joined on
//! drop), `Bin` (the real binary as a child process, killed on drop), and byte helpers.
#![allow(dead_code)] // not every test module uses every helper

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use echoloop::{ListenAddr, Model, Server, ServerConfig, ShutdownHandle, Summary};

/// Upper bound for any single socket operation in a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A config on 127.0.0.1:0 for `model`, with a short shutdown grace.
pub fn config(model: Model) -> ServerConfig {
    ServerConfig::new("127.0.0.1:0".parse().unwrap())
        .with_model(model)
        .with_shutdown_grace(Duration::from_secs(2))
}

/// A server running in this process on its own thread.
pub struct TestServer {
    addr: ListenAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<Summary>>>,
}

impl TestServer {
    /// Bind `config` and run it on a background thread.
    pub fn start(config: ServerConfig) -> TestServer {
        let server = Server::bind(&config).expect("bind test server");
        let addr = server.local_addr().clone();
        let handle = server.shutdown_handle();
        let thread = thread::spawn(move || server.run());
        TestServer { addr, handle, thread: Some(thread) }
    }

    /// The bound address.
    pub fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// The bound TCP address (panics for Unix servers).
    pub fn tcp(&self) -> SocketAddr {
        match &self.addr {
            ListenAddr::Tcp(a) => *a,
            other => panic!("not a TCP server: {other}"),
        }
    }

    /// A connected client with timeouts.
    pub fn connect(&self) -> TcpStream {
        connect(self.tcp())
    }

    /// A connected Unix socket client with timeouts (panics for TCP servers).
    pub fn connect_unix(&self) -> UnixStream {
        let ListenAddr::Unix(path) = &self.addr else { panic!("not a Unix server: {}", self.addr) };
        let stream = UnixStream::connect(path).expect("connect unix");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// Ask it to stop, wait (bounded) and return its summary.
    pub fn stop(mut self) -> Summary {
        self.handle.shutdown();
        let thread = self.thread.take().unwrap();
        join_bounded(thread, Duration::from_secs(20)).expect("server run failed")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = join_bounded(thread, Duration::from_secs(20));
        }
    }
}

/// Join a thread, panicking if it takes longer than `limit`.
pub fn join_bounded<T>(thread: JoinHandle<T>, limit: Duration) -> T {
    let start = Instant::now();
    while !thread.is_finished() {
        assert!(start.elapsed() < limit, "thread did not finish within {limit:?}");
        thread::sleep(Duration::from_millis(5));
    }
    thread.join().expect("thread panicked")
}

/// Connect with read and write timeouts so no test can hang.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0; len];
    rng.fill(&mut data);
    data
}

/// A connected stream (TCP or Unix) that the echo helpers can split into a reading and a
/// writing handle.
pub trait Duplex: Read + Write + Send + Sized + 'static {
    /// A second handle to the same socket.
    fn clone_handle(&self) -> io::Result<Self>;
    /// Half-close: send EOF, keep reading.
    fn shutdown_write(&self) -> io::Result<()>;
    /// Switch non-blocking mode on or off.
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()>;
}

impl Duplex for TcpStream {
    fn clone_handle(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        TcpStream::set_nonblocking(self, nonblocking)
    }
}

impl Duplex for UnixStream {
    fn clone_handle(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        UnixStream::set_nonblocking(self, nonblocking)
    }
}

/// Send `data` in random-sized chunks from one thread while reading the echo on this one;
/// half-close after the last byte and return everything read until the server closes.
pub fn echo_chunked<S: Duplex>(mut stream: S, data: Vec<u8>, seed: u64) -> Vec<u8> {
    let mut writer = stream.clone_handle().unwrap();
    let sender = thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = rng.usize(1..=rest.len().min(70_000));
            writer.write_all(&rest[..n]).expect("send");
            rest = &rest[n..];
        }
        writer.shutdown_write().expect("half-close");
    });
    let mut received = Vec::new();
    stream.read_to_end(&mut received).expect("read echo");
    join_bounded(sender, IO_TIMEOUT);
    received
}

/// Assert equality of byte strings without dumping megabytes on failure.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8]) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!("echo differs: got {} bytes, want {}, first difference at {first}", got.len(), want.len());
    }
}

/// The real `echoloop` binary as a child process; killed on drop.
pub struct Bin {
    child: Child,
    /// The address from its (first) `listening on` line.
    pub addr: String,
    /// The addresses of every `listening on` line waited for, in order.
    pub addrs: Vec<String>,
    /// Every line it has written to stdout so far.
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    /// Copies the child's stderr into `stderr`; finishes when the child's stderr closes.
    stderr_reader: Option<JoinHandle<()>>,
}

impl Bin {
    /// Run `echoloop serve ARGS...` and wait (bounded) for its `listening on` line.
    pub fn serve(args: &[&str]) -> Bin {
        Bin::serve_env(&[], args)
    }

    /// Like [`Bin::serve`], with extra environment variables (`RUST_LOG`, say).
    pub fn serve_env(env: &[(&str, &str)], args: &[&str]) -> Bin {
        let mut full = vec!["serve"];
        full.extend_from_slice(args);
        Bin::start(Path::new(env!("CARGO_BIN_EXE_echoloop")), env, &full)
    }

    /// Run any server `program` that prints `listening on ADDR` first (an example, say).
    pub fn start(program: &Path, env: &[(&str, &str)], args: &[&str]) -> Bin {
        let mut command = Command::new(program);
        command.args(args).envs(env.iter().copied());
        Bin::spawn(command)
    }

    /// Run a prepared `command` (its stdio is set here) and wait (bounded) for its
    /// `listening on` line.
    pub fn spawn(command: Command) -> Bin {
        Bin::spawn_listening(command, 1)
    }

    /// `echoloop serve ARGS...` with `count` listeners: wait (bounded) for all their lines.
    pub fn serve_listening(args: &[&str], count: usize) -> Bin {
        let mut command = Command::new(env!("CARGO_BIN_EXE_echoloop"));
        command.arg("serve").args(args);
        Bin::spawn_listening(command, count)
    }

    /// [`Bin::spawn`], waiting for `count` `listening on` lines (one per listener).
    pub fn spawn_listening(mut command: Command, count: usize) -> Bin {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let stderr_reader = thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stdout);
        thread::spawn(move || {
            // Every line is kept (which keeps the pipe drained); the first `count` are sent on.
            for line in out.lines().map_while(Result::ok) {
                let mut lines = lines.lock().unwrap();
                if lines.len() < count {
                    let _ = tx.send(line.clone());
                }
                lines.push(line);
            }
        });
        let mut bin = Bin {
            child,
            addr: String::new(),
            addrs: Vec::new(),
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..count {
            let line =
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_default();
            match line.trim_end().strip_prefix("listening on ") {
                Some(addr) => bin.addrs.push(addr.to_string()),
                None => panic!("no 'listening on' line (got {line:?}); stderr:\n{}", bin.stderr()),
            }
        }
        bin.addr = bin.addrs[0].clone();
        bin
    }

    /// The TCP address it listens on.
    pub fn tcp(&self) -> SocketAddr {
        self.addr.parse().expect("a TCP address")
    }

    /// Everything it has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The lines it has written to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The address of its `metrics on http://ADDR/metrics` line (`--metrics`), waited for.
    pub fn metrics(&self) -> SocketAddr {
        let find = |lines: &[String]| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix("metrics on http://")?.strip_suffix("/metrics")?.parse().ok())
        };
        assert!(
            wait_until(IO_TIMEOUT, || find(&self.stdout_lines()).is_some()),
            "no metrics line: {:?}",
            self.stdout_lines()
        );
        find(&self.stdout_lines()).expect("a metrics address")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait (bounded by `limit`) until its stderr contains `needle`; false if it never did.
    pub fn wait_for_stderr(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.stderr.lock().unwrap().contains(needle))
    }

    /// Send it a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) takes no pointer; the pid is our own child's, not yet reaped (the
        // `Child` is still held), so it cannot name another process.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Wait for it to exit within `limit`; return its status and all its stderr.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The pipe closed with the process: the reader ends after the last line.
                if let Some(reader) = self.stderr_reader.take() {
                    join_bounded(reader, IO_TIMEOUT);
                }
                return (status, self.stderr());
            }
            assert!(
                start.elapsed() < limit,
                "echoloop did not exit within {limit:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `echoloop ARGS...` to completion (bounded) and return (exit code, stdout, stderr).
pub fn run_bin(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_echoloop"));
    command.args(args);
    let out = run_to_end(command);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run a prepared `command` (stdin empty, output captured) until it exits, within 20 s.
pub fn run_to_end(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{command:?} did not exit");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Poll `condition` every few milliseconds until it holds (true) or `limit` passes (false).
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`: resident now, `VmHWM`: the peak so far).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.trim().trim_end_matches("kB").trim().parse().expect("a number of kB")
}

/// The `echoed N bytes` figure of the summary line in a server's log.
pub fn summary_echoed_bytes(log: &str) -> u64 {
    let line =
        log.lines().find(|l| l.contains("summary: ")).unwrap_or_else(|| panic!("no summary line in:\n{log}"));
    let after = line.split("echoed ").nth(1).expect("'echoed N bytes' in the summary");
    after.split(' ').next().unwrap().parse().expect("a byte count")
}

/// Write `data` without blocking until the kernel accepts nothing more for a while (the
/// peer stopped reading and every buffer on the way is full), or until all of it is written.
/// Returns how many bytes were written. The stream is left in blocking mode.
pub fn write_until_blocked<S: Duplex>(stream: &S, data: &[u8]) -> usize {
    /// No progress for this long counts as blocked. Too short only means fewer bytes pushed.
    const STALL: Duration = Duration::from_millis(250);
    let mut stream = stream.clone_handle().unwrap(); // the same socket, writable through `&mut`
    stream.set_nonblocking(true).unwrap();
    let mut written = 0;
    let mut last_progress = Instant::now();
    while written < data.len() && last_progress.elapsed() < STALL {
        match stream.write(&data[written..]) {
            Ok(n) => {
                written += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("write failed after {written} bytes: {e}"),
        }
    }
    stream.set_nonblocking(false).unwrap();
    written
}

/// Read exactly `len` bytes (bounded by the stream's read timeout).
pub fn read_n<S: Duplex>(stream: &S, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    let mut stream = stream.clone_handle().unwrap();
    stream.read_exact(&mut buf).unwrap_or_else(|e| panic!("reading {len} bytes: {e}"));
    buf
}

/// The server closed this connection: a read returns 0 (FIN) or a reset, within the read
/// timeout, and no data.
#[track_caller]
pub fn assert_closed_by_server(mut stream: &TcpStream) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected the server to close the connection, got {n} bytes"),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF or reset, got {e}"),
    }
}

/// A temporary path for a Unix socket, unique per test and process (removed by the caller).
pub fn temp_socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("echoloop-test-{}-{name}.sock", std::process::id()))
}

/// A fresh Unix socket path for one test: removed before use and again on drop.
pub struct SocketPath(pub PathBuf);

impl SocketPath {
    /// `temp_socket_path(name)`, with any leftover file removed.
    pub fn new(name: &str) -> SocketPath {
        let path = temp_socket_path(name);
        let _ = std::fs::remove_file(&path);
        SocketPath(path)
    }

    /// `unix:PATH`, as typed on a command line.
    pub fn addr(&self) -> String {
        format!("unix:{}", self.0.display())
    }

    /// A config for `model` listening here.
    pub fn config(&self, model: Model) -> ServerConfig {
        config(model).with_addr(ListenAddr::Unix(self.0.clone()))
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Write all of `data` (without reading: it must fit in the buffers both ways), half-close,
/// then read the echo until the server closes.
pub fn send_all_then_read_echo<S: Duplex>(mut stream: S, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("send without reading");
    stream.shutdown_write().expect("half-close");
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("EOF after the echo, not an error");
    got
}

/// Connect with the given SO_SNDBUF / SO_RCVBUF, set before `connect` so that the TCP
/// window is sized from the start (and the kernel does not auto-tune them).
pub fn connect_with_buffers(addr: SocketAddr, send: Option<usize>, recv: Option<usize>) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
    if let Some(size) = send {
        socket.set_send_buffer_size(size).unwrap();
    }
    if let Some(size) = recv {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.connect_timeout(&addr.into(), IO_TIMEOUT).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// What a finished `echoloop` run left behind.
pub struct Finished {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Everything on stdout, as bytes.
    pub stdout: Vec<u8>,
    /// Everything on stderr.
    pub stderr: String,
}

impl Finished {
    /// Stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Run `echoloop ARGS...` with `stdin` piped in (from a thread, while stdout and stderr
/// are read, so no pipe can fill up), killing it after `limit`.
pub fn run_bin_with(args: &[&str], stdin: Vec<u8>, limit: Duration) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_echoloop"));
    command.args(args);
    run_with_stdin(command, stdin, limit)
}

/// Run `command` with `stdin` piped in (from a thread, while stdout and stderr are read, so
/// no pipe can fill up), killing it after `limit`.
pub fn run_with_stdin(mut command: Command, stdin: Vec<u8>, limit: Duration) -> Finished {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        let _ = input.write_all(&stdin); // the child may exit before reading it all
    });
    let mut out = child.stdout.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let mut err = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut buf = String::new();
        let _ = err.read_to_string(&mut buf);
        buf
    });
    let status = wait_child(&mut child, limit);
    join_bounded(feeder, IO_TIMEOUT);
    Finished {
        code: status.code().unwrap_or(-1),
        stdout: join_bounded(stdout, IO_TIMEOUT),
        stderr: join_bounded(stderr, IO_TIMEOUT),
    }
}

/// Wait for `child` to exit within `limit`; past it, kill it and panic.
pub fn wait_child(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not exit within {limit:?}", child.id());
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Lower `pid`'s open-file limit so that exactly `free` more descriptors fit: descriptors
/// are numbered from the lowest free one, and RLIMIT_NOFILE caps the number.
pub fn leave_descriptors(pid: u32, free: usize) {
    let open = open_fds(pid);
    let limit = (0..).filter(|fd| !open.contains(fd)).nth(free).unwrap(); // the first one past
    let rlimit = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: limit as libc::rlim_t };
    // SAFETY: plain system call with a valid pointer to an initialised struct and a null old value.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &rlimit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The descriptors process `pid` has open now (the entries of `/proc/PID/fd`).
pub fn open_fds(pid: u32) -> Vec<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list /proc/PID/fd")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The program `name` if it is on PATH (a test that needs it prints one line and returns
/// where it is not).
pub fn installed(name: &str) -> Option<String> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .map(|path| path.display().to_string())
}
