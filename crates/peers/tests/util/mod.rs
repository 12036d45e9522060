//! Test helpers: `Peer` (a reference server as a child process on port 0, killed by PID on
//! drop), clients with timeouts, a concurrent verified echo, and bounded waits. Every socket
//! has read and write timeouts, so a thread doing socket I/O always finishes and a plain
//! `join` is bounded too.
#![allow(dead_code)] // not every test uses every helper

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for any single socket operation or wait in a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Which reference server.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Epoll,
    Tokio,
    /// The UDP echo: its `listening on` line says `udp:ADDR`.
    Udp,
}

impl Kind {
    pub fn program(self) -> &'static str {
        match self {
            Kind::Epoll => env!("CARGO_BIN_EXE_peer-epoll"),
            Kind::Tokio => env!("CARGO_BIN_EXE_peer-tokio"),
            Kind::Udp => env!("CARGO_BIN_EXE_peer-udp"),
        }
    }
}

/// A running reference server, killed (by its PID) and reaped on drop.
pub struct Peer {
    child: Child,
    addr: SocketAddr,
}

impl Peer {
    /// Start `kind` on 127.0.0.1:0 and wait for its `listening on` line.
    pub fn start(kind: Kind) -> Peer {
        Peer::start_with(kind, "127.0.0.1:0", None)
    }

    /// Start `kind` on `addr`, with RLIMIT_NOFILE set to `fd_limit` in the child if given.
    pub fn start_with(kind: Kind, addr: &str, fd_limit: Option<u64>) -> Peer {
        let mut command = Command::new(kind.program());
        command.arg(addr).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        if let Some(limit) = fd_limit {
            let limit = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: limit as libc::rlim_t };
            // SAFETY: between fork and exec the closure only makes one async-signal-safe call
            // (setrlimit) on a struct it owns, and allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", kind.program()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (line_tx, line_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = line_tx.send(line);
        });
        let mut peer = Peer { child, addr: "0.0.0.0:0".parse().unwrap() };
        let line = line_rx.recv_timeout(IO_TIMEOUT).expect("no `listening on` line in time");
        let bound =
            line.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let bound = bound.strip_prefix("udp:").unwrap_or(bound);
        peer.addr = bound.trim_end().parse().unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        peer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connected client with read and write timeouts.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// Send `signal` and wait (bounded) for the exit status.
    pub fn stop_with(mut self, signal: libc::c_int) -> ExitStatus {
        // SAFETY: kill(2) with the PID of our own, not yet reaped, child.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, signal) }, 0, "kill");
        wait_bounded(&mut self.child, IO_TIMEOUT)
    }

    /// User plus system CPU time the server has used so far (from /proc/PID/stat).
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read /proc/PID/stat");
        // After the command name (in parentheses, may hold spaces): field 3 (state) onward;
        // utime and stime are fields 14 and 15, in clock ticks.
        let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// The descriptor numbers the server has open (from /proc/PID/fd), including any it
    /// inherited.
    pub fn open_descriptors(&self) -> Vec<usize> {
        let entries = std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("list /proc/PID/fd");
        let mut fds: Vec<usize> =
            entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect();
        fds.sort_unstable();
        fds
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL to this child's PID
        let _ = self.child.wait();
    }
}

/// A client whose echo backs up into the server: a 4 KiB receive buffer and 536-byte
/// segments, both set before connecting. Small segments keep the server's autotuned send
/// buffer small too, so a client that is slow to read leaves bytes pending in the server.
pub fn connect_narrow(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.set_tcp_mss(536).expect("TCP_MAXSEG");
    socket.connect(&addr.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Send one byte as TCP urgent data (MSG_OOB).
pub fn send_urgent(stream: &TcpStream, byte: u8) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor and a one-byte buffer that outlives the call.
    let sent = unsafe { libc::send(stream.as_raw_fd(), (&raw const byte).cast(), 1, libc::MSG_OOB) };
    assert_eq!(sent, 1, "send MSG_OOB: {}", io::Error::last_os_error());
}

/// Wait for `child` to exit, panicking after `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(start.elapsed() < limit, "process {} did not exit within {limit:?}", child.id());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `condition` every 10 ms until it holds, panicking after `limit` with `what`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0; len];
    rng.fill(&mut data);
    data
}

/// Send `data` in random chunk sizes (up to 64 KiB) from a second thread, then half-close
/// if asked; the thread ends with the result of the last write.
pub fn send_in_chunks(
    stream: &TcpStream,
    data: &[u8],
    seed: u64,
    half_close: bool,
) -> JoinHandle<io::Result<()>> {
    let mut writer = stream.try_clone().expect("clone the stream");
    let data = data.to_vec();
    thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rng.usize(1..=rest.len().min(64 * 1024)));
            writer.write_all(chunk)?;
            rest = tail;
        }
        if half_close { writer.shutdown(Shutdown::Write) } else { Ok(()) }
    })
}

/// Send `data` (see `send_in_chunks`) while this thread reads the same number of bytes
/// back; return what came back. Reading while writing: no buffer size can deadlock it.
pub fn echo_concurrently(stream: &TcpStream, data: &[u8], seed: u64) -> Vec<u8> {
    let sender = send_in_chunks(stream, data, seed, false);
    let mut got = vec![0; data.len()];
    (&*stream).read_exact(&mut got).expect("read the echo back");
    sender.join().expect("sender panicked").expect("send the data");
    got
}

/// Compare byte for byte; on a difference name its first offset instead of dumping megabytes.
pub fn assert_same_bytes(got: &[u8], want: &[u8]) {
    if let Some(at) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!("echo differs at byte {at} of {}", want.len());
    }
    assert_eq!(got.len(), want.len(), "echo length differs");
}

/// Send `data`, read exactly as many bytes back, and compare them.
pub fn assert_echoes(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).expect("send");
    let mut got = vec![0; data.len()];
    stream.read_exact(&mut got).expect("read the echo back");
    assert_same_bytes(&got, data);
}
