//! Test helpers: `TestServer` (in process, port 0, stopped through its handle and joined on
//! drop), `Bin` (the real binary as a child process, killed on drop), and byte helpers.
#![allow(dead_code)] // not every test module uses every helper

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use echoloop::{ListenAddr, Model, Server, ServerConfig, ShutdownHandle, Summary};

/// Upper bound for any single socket operation in a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A config on 127.0.0.1:0 for `model`, with a short shutdown grace.
pub fn config(model: Model) -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        model,
        shutdown_grace: Duration::from_secs(2),
        ..ServerConfig::default()
    }
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

/// Send `data` in random-sized chunks from one thread while reading the echo on this one;
/// half-close after the last byte and return everything read until the server closes.
pub fn echo_chunked(stream: TcpStream, data: Vec<u8>, seed: u64) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = rng.usize(1..=rest.len().min(70_000));
            writer.write_all(&rest[..n]).expect("send");
            rest = &rest[n..];
        }
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut received = Vec::new();
    (&stream).read_to_end(&mut received).expect("read echo");
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
    /// The address from its `listening on` line.
    pub addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Bin {
    /// Run `echoloop serve ARGS...` and wait (bounded) for its `listening on` line.
    pub fn serve(args: &[&str]) -> Bin {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echoloop"))
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn echoloop");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut err = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = tx.send(line);
            io::copy(&mut out, &mut io::sink()).ok(); // keep the pipe drained
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let mut bin = Bin { child, addr: String::new(), stderr };
        match line.trim_end().strip_prefix("listening on ") {
            Some(addr) => bin.addr = addr.to_string(),
            None => panic!("no 'listening on' line (got {line:?}); stderr:\n{}", bin.stderr()),
        }
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

    /// Send it a signal.
    pub fn signal(&self, signal: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Wait for it to exit within `limit`; return its status and all its stderr.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                thread::sleep(Duration::from_millis(50)); // let the stderr reader finish
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_echoloop"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn echoloop");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("echoloop {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_echoloop"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn echoloop");
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
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("echoloop {args:?} did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    join_bounded(feeder, IO_TIMEOUT);
    Finished {
        code: status.code().unwrap_or(-1),
        stdout: join_bounded(stdout, IO_TIMEOUT),
        stderr: join_bounded(stderr, IO_TIMEOUT),
    }
}
