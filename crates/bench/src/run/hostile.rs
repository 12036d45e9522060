//! The hostile clients of `--mode chaos`: each kind misbehaves in one way a server meets in
//! the wild, again and again until the end of the run.
//!
//! They are plain blocking sockets on threads of their own (their point is to be wrong,
//! not fast), each bounded by `--connect-timeout` per operation and by the run's end. A
//! kind that uses up a connection per round pauses [`PAUSE`] between rounds, so that the
//! chaos stresses the server's edge cases rather than its accept rate.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pattern::Pattern;
use crate::target::Target;

/// Between two rounds of a kind that opens a connection per round.
const PAUSE: Duration = Duration::from_millis(10);
/// What a resetting or closing client writes before it goes.
const BURST: usize = 16 * 1024;
/// The most a never-reading client writes (it stops earlier when the kernel refuses).
const NEVER_READ_CAP: usize = 16 << 20;

/// One way to misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hostile {
    /// Send, read a little, then reset the connection (SO_LINGER 0): the server's next
    /// read or write fails with ECONNRESET.
    Reset,
    /// Send, half-close, and read the echo to the end (it must be exact).
    HalfClose,
    /// Connect and close at once, without a byte.
    ConnectClose,
    /// One byte a second, reading each echo: a slow client holds a connection for long.
    SlowBytes,
    /// Write until the kernel refuses, never read: the server must apply backpressure.
    NeverRead,
    /// Send and close without reading: the close resets, the echo has nowhere to go.
    SendClose,
}

impl Hostile {
    /// Every kind, in report order.
    pub const ALL: [Hostile; 6] = [
        Hostile::Reset,
        Hostile::HalfClose,
        Hostile::ConnectClose,
        Hostile::SlowBytes,
        Hostile::NeverRead,
        Hostile::SendClose,
    ];
}

/// What the clients of one kind did.
#[derive(Debug, Clone, Serialize)]
pub struct HostileReport {
    /// The kind.
    pub kind: Hostile,
    /// Clients of this kind at once.
    pub clients: usize,
    /// Connections they opened.
    pub connections: u64,
    /// Operations that failed (refused, reset, timed out): expected of some kinds, and
    /// never part of the verdict.
    pub errors: u64,
    /// Echoes that came back wrong to a client that checks them (half-close, slow bytes):
    /// part of the verdict.
    pub wrong_echoes: u64,
    /// The first error, for the reader.
    pub first_error: Option<String>,
}

impl HostileReport {
    fn merge(&mut self, other: HostileReport) {
        self.connections += other.connections;
        self.errors += other.errors;
        self.wrong_echoes += other.wrong_echoes;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// Run `per_kind` clients of every kind against `target` until `until`; each operation
/// gives up after `timeout`.
pub fn unleash(target: &Target, per_kind: usize, until: Instant, timeout: Duration) -> Vec<HostileReport> {
    let pattern = Pattern::new();
    thread::scope(|scope| {
        let clients: Vec<_> = Hostile::ALL
            .iter()
            .flat_map(|&kind| (0..per_kind).map(move |_| kind))
            .map(|kind| {
                let pattern = &pattern;
                let client = Client { target, until, timeout, pattern };
                (kind, scope.spawn(move || client.run(kind)))
            })
            .collect();
        let mut reports: Vec<HostileReport> =
            Hostile::ALL.iter().map(|&kind| empty(kind, per_kind)).collect();
        for (kind, handle) in clients {
            let report = handle.join().unwrap_or_else(|_| HostileReport {
                errors: 1,
                first_error: Some("a hostile client's thread panicked".into()),
                ..empty(kind, 0)
            });
            if let Some(total) = reports.iter_mut().find(|r| r.kind == kind) {
                total.merge(report);
            }
        }
        reports
    })
}

fn empty(kind: Hostile, clients: usize) -> HostileReport {
    HostileReport { kind, clients, connections: 0, errors: 0, wrong_echoes: 0, first_error: None }
}

/// What every hostile client knows.
#[derive(Clone, Copy)]
struct Client<'a> {
    target: &'a Target,
    until: Instant,
    timeout: Duration,
    pattern: &'a Pattern,
}

impl Client<'_> {
    /// Misbehave as `kind` until the end, round after round.
    fn run(self, kind: Hostile) -> HostileReport {
        let mut report = empty(kind, 1);
        while Instant::now() < self.until {
            report.connections += 1;
            match self.round(kind) {
                Ok(true) => {}
                Ok(false) => report.wrong_echoes += 1,
                Err(e) => {
                    report.errors += 1;
                    report.first_error.get_or_insert_with(|| e.to_string());
                }
            }
            self.pause();
        }
        report
    }

    /// One connection's worth of misbehaviour; `Ok(false)` when a checked echo was wrong.
    fn round(&self, kind: Hostile) -> io::Result<bool> {
        let mut socket = Socket::connect(self.target, self.timeout)?;
        let sent = self.pattern.window(0, BURST);
        match kind {
            Hostile::Reset => {
                socket.write_all(sent)?;
                let _ = socket.read(&mut [0u8; 1024])?; // some of the echo, not all
                socket.reset()
            }
            Hostile::HalfClose => {
                socket.write_all(&sent[..4096])?;
                socket.shutdown(Shutdown::Write)?;
                let mut echo = Vec::with_capacity(4096);
                socket.read_to_end(&mut echo)?;
                Ok(echo == sent[..4096])
            }
            Hostile::ConnectClose => Ok(true),
            Hostile::SlowBytes => self.slow_bytes(socket),
            Hostile::NeverRead => self.never_read(socket),
            Hostile::SendClose => socket.write_all(sent).map(|()| true), // then dropped unread
        }
        .map_err(|e| io::Error::new(e.kind(), format!("{kind:?}: {e}")))
    }

    /// One byte a second until the end, each echo read and checked.
    fn slow_bytes(&self, mut socket: Socket) -> io::Result<bool> {
        let bytes = self.pattern.window(0, 4096);
        for &byte in bytes.iter().cycle() {
            if Instant::now() >= self.until {
                break;
            }
            socket.write_all(&[byte])?;
            let mut echo = [0u8];
            socket.read_exact(&mut echo)?;
            if echo[0] != byte {
                return Ok(false);
            }
            thread::sleep(self.until.saturating_duration_since(Instant::now()).min(Duration::from_secs(1)));
        }
        Ok(true)
    }

    /// Fill both directions' buffers, then hold the connection, reading nothing, to the end.
    fn never_read(&self, mut socket: Socket) -> io::Result<bool> {
        socket.set_nonblocking(true)?;
        let mut written = 0;
        while written < NEVER_READ_CAP && Instant::now() < self.until {
            match socket.write(self.pattern.window(written as u64, 64 * 1024)) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break, // the server stopped reading: held
                Err(e) if e.kind() == ErrorKind::Interrupted => {}    // a signal; retry
                Err(e) => return Err(e),
            }
        }
        thread::sleep(self.until.saturating_duration_since(Instant::now()));
        Ok(true)
    }

    fn pause(&self) {
        thread::sleep(self.until.saturating_duration_since(Instant::now()).min(PAUSE));
    }
}

/// A blocking socket of either family, with timeouts.
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn connect(target: &Target, timeout: Duration) -> io::Result<Socket> {
        let socket = match target {
            Target::Tcp(addr) => Socket::Tcp(TcpStream::connect_timeout(addr, timeout)?),
            Target::Unix(path) => Socket::Unix(UnixStream::connect(path)?),
            Target::Udp(_) => {
                return Err(io::Error::new(ErrorKind::InvalidInput, "chaos needs a stream target"));
            }
        };
        match &socket {
            Socket::Tcp(s) => s.set_read_timeout(Some(timeout)).and(s.set_write_timeout(Some(timeout)))?,
            Socket::Unix(s) => s.set_read_timeout(Some(timeout)).and(s.set_write_timeout(Some(timeout)))?,
        }
        Ok(socket)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(how),
            Socket::Unix(s) => s.shutdown(how),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_nonblocking(on),
            Socket::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// Close with a reset: SO_LINGER on with a zero timeout makes `close` send RST and drop
    /// whatever is unsent (a Unix socket has no reset; it just closes).
    fn reset(self) -> io::Result<bool> {
        if let Socket::Tcp(s) = &self {
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: a valid socket of ours, and a pointer to a linger struct of the right size.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(true) // dropped here: the close is the reset
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // nothing is buffered in user space
    }
}
