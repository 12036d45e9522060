//! `peer-epoll`: a reference echo server with nothing between the readiness line and the
//! code. One thread, one edge-triggered epoll set, raw `libc` calls (in `sys`); `std` only
//! parses the address and binds the listener.
//!
//! Why it exists: comparing echoloop's mio loop with this one measures what mio and the
//! project's structure cost, and nothing else. So it does the same work the same way:
//! - accept until EAGAIN; out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM),
//!   stop accepting for 100 ms instead of retrying at once, which would spin: the queued
//!   connections wait in the kernel's backlog;
//! - one 64 KiB read buffer shared by every connection; per connection only the bytes the
//!   kernel refused (`pending`), EPOLLOUT asked for only while some are pending, and no
//!   reading while 64 KiB are pending (backpressure: the client's sends block instead of
//!   our memory growing);
//! - read until EAGAIN, except that a short read ends draining: it emptied the receive queue,
//!   and any later byte raises a new edge. Not so after EPOLLRDHUP / EPOLLHUP / EPOLLERR /
//!   EPOLLPRI: a FIN queued behind the data raises no new edge, nor does data behind an
//!   urgent byte (SO_OOBINLINE keeps that byte in the stream, and a read stops before it);
//! - on EOF, echo what is still pending, then close.
//!
//! SIGINT and SIGTERM arrive through a signalfd in the epoll set; either ends the loop and
//! the process exits 0, closing every connection.

mod sys;

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The read buffer shared by all connections.
const BUF_SIZE: usize = 64 * 1024;
/// At most this many bytes wait per connection; at the cap we stop reading it.
const PENDING_CAP: usize = 64 * 1024;
/// How long accepting pauses when the process is out of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Events collected per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

/// A connection's interest: input, the client's FIN, urgent data; edge-triggered.
const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET) as u32;
/// After any of these, a short read no longer proves the receive queue empty (module docs).
const NO_NEW_EDGE: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) as u32;

fn main() -> ExitCode {
    echoloop_peers::run("peer-epoll", |addr| Server::bind(addr)?.run())
}

/// The loop's state: the epoll set, the two fixed descriptors in it, and the connections.
struct Server {
    epoll: OwnedFd,
    listener: TcpListener,
    /// Readable when SIGINT or SIGTERM arrived.
    stop: OwnedFd,
    /// Indexed by descriptor (the epoll data of each event), so a lookup is one index; the
    /// kernel hands out the lowest free number, so the length follows the peak count.
    conns: Vec<Option<Conn>>,
    buf: Vec<u8>,
    /// Set after EMFILE and friends: until then, listener events are ignored and
    /// `epoll_wait` times out at this instant to retry.
    accept_paused_until: Option<Instant>,
}

impl Server {
    /// Bind `addr`, build the epoll set, and print the `listening on` line.
    fn bind(addr: SocketAddr) -> io::Result<Server> {
        let cannot_bind = |e: io::Error| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"));
        let listener = TcpListener::bind(addr).map_err(cannot_bind)?;
        listener.set_nonblocking(true)?;
        let epoll = sys::epoll_create()?;
        let stop = sys::stop_signals()?;
        let edge_in = (libc::EPOLLIN | libc::EPOLLET) as u32;
        sys::epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), edge_in)?;
        sys::epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, stop.as_raw_fd(), edge_in)?;
        echoloop_peers::announce(listener.local_addr()?)?;
        Ok(Server {
            epoll,
            listener,
            stop,
            conns: Vec::new(),
            buf: vec![0; BUF_SIZE],
            accept_paused_until: None,
        })
    }

    /// Wait, dispatch each event by descriptor, repeat until a stop signal.
    fn run(mut self) -> io::Result<()> {
        let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
        loop {
            match sys::epoll_wait(&self.epoll, &mut events, self.timeout_ms()) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // e.g. SIGCONT: wait again
                Err(e) => return Err(e),
            }
            self.resume_accepting_if_due();
            for &libc::epoll_event { events: flags, u64: data } in &events {
                let fd = data as RawFd;
                if fd == self.stop.as_raw_fd() {
                    return Ok(());
                } else if fd == self.listener.as_raw_fd() {
                    self.accept_all();
                } else {
                    self.on_connection_event(fd, flags);
                }
            }
        }
    }

    /// No timer but the accept pause: block until an event, or until the pause ends.
    fn timeout_ms(&self) -> i32 {
        match self.accept_paused_until {
            None => -1,
            Some(until) => {
                until.saturating_duration_since(Instant::now()).as_nanos().div_ceil(1_000_000) as i32
            }
        }
    }

    fn resume_accepting_if_due(&mut self) {
        if self.accept_paused_until.is_some_and(|until| Instant::now() >= until) {
            self.accept_paused_until = None;
            self.accept_all(); // the edges that came meanwhile were ignored: drain the queue now
        }
    }

    /// Edge-triggered: one edge may stand for many queued connections, so accept to EAGAIN.
    fn accept_all(&mut self) {
        if self.accept_paused_until.is_some() {
            return; // out of resources: the timer retries, not each new connection
        }
        loop {
            match sys::accept(self.listener.as_raw_fd()) {
                Ok(fd) => self.add(fd),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return, // queue empty: a new edge will come
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: retry
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue, // that client left: next
                Err(e) if out_of_resources(&e) => return self.pause_accepting(), // until a descriptor frees up
                Err(e) => {
                    eprintln!("peer-epoll: accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}");
                    return self.pause_accepting();
                }
            }
        }
    }

    fn pause_accepting(&mut self) {
        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
    }

    /// Configure and register a new connection; one that fails either is closed (dropped).
    fn add(&mut self, fd: OwnedFd) {
        let registered = sys::set_option(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
            .and_then(|()| sys::set_option(&fd, libc::SOL_SOCKET, libc::SO_OOBINLINE, 1))
            .and_then(|()| sys::epoll_ctl(&self.epoll, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), READ));
        if registered.is_ok() {
            // Data that arrived before the ADD is reported by the ADD itself: nothing is missed.
            let slot = fd.as_raw_fd() as usize;
            if self.conns.len() <= slot {
                self.conns.resize_with(slot + 1, || None);
            }
            self.conns[slot] = Some(Conn::new(fd));
        }
    }

    /// Serve one connection's event; close it on EOF with nothing pending, or on any error.
    /// Closing the descriptor also removes it from the epoll set. An event for a descriptor
    /// closed earlier in this batch finds no connection, or a new one that reuses the
    /// number; events are only hints, so that one just reads EAGAIN.
    fn on_connection_event(&mut self, fd: RawFd, flags: u32) {
        let Some(slot) = self.conns.get_mut(fd as usize) else { return };
        let Some(conn) = slot else { return };
        match conn.on_event(&mut self.buf, flags).and_then(|()| conn.update_interest(&self.epoll)) {
            Ok(()) if !conn.done() => {}
            Ok(()) | Err(_) => *slot = None, // finished, or reset / broken pipe: drop closes it
        }
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: accepting again at once would fail the same way.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// One client. When idle it is a descriptor and an empty vector: no buffer of its own.
struct Conn {
    fd: OwnedFd,
    /// Bytes read but not yet taken by the kernel, in order. Non-empty iff EPOLLOUT is
    /// registered (after `update_interest`); at `PENDING_CAP` we stop reading.
    pending: Vec<u8>,
    /// Whether EPOLLOUT is part of the registered interest.
    out_registered: bool,
    /// The client sent its FIN: no more input; echo what is pending, then close.
    eof: bool,
    /// An event said no new edge is promised (`NO_NEW_EDGE`): from now on read to EAGAIN.
    read_to_eagain: bool,
}

impl Conn {
    fn new(fd: OwnedFd) -> Conn {
        Conn { fd, pending: Vec::new(), out_registered: false, eof: false, read_to_eagain: false }
    }

    /// The flags are hints: flush what is pending (if anything), then read what there is.
    /// Flushing first also resumes a connection that stopped reading at the cap, whose
    /// unread bytes will raise no new edge.
    fn on_event(&mut self, buf: &mut [u8], flags: u32) -> io::Result<()> {
        self.read_to_eagain |= flags & NO_NEW_EDGE != 0;
        self.flush()?;
        self.read_and_echo(buf)
    }

    /// Read and echo until EAGAIN, EOF, the pending cap, or a short read (module docs).
    fn read_and_echo(&mut self, buf: &mut [u8]) -> io::Result<()> {
        while !self.eof {
            let room = (PENDING_CAP - self.pending.len()).min(buf.len());
            if room == 0 {
                return Ok(()); // backpressure: EPOLLOUT flushes, then reading resumes
            }
            match sys::read(&self.fd, &mut buf[..room]) {
                Ok(0) => self.eof = true, // the client's FIN
                Ok(n) => {
                    self.echo(&buf[..n])?;
                    if n < room && !self.read_to_eagain {
                        return Ok(()); // short read: drained, the next byte raises an edge
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()), // drained
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,     // a signal: retry
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Send `data` behind whatever is pending; keep what the kernel does not take.
    fn echo(&mut self, data: &[u8]) -> io::Result<()> {
        let sent = if self.pending.is_empty() { send_now(&self.fd, data)? } else { 0 };
        self.pending.extend_from_slice(&data[sent..]);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let sent = send_now(&self.fd, &self.pending)?;
            self.pending.drain(..sent);
        }
        Ok(())
    }

    /// Ask for EPOLLOUT exactly while something is pending.
    fn update_interest(&mut self, epoll: &OwnedFd) -> io::Result<()> {
        let want_out = !self.pending.is_empty();
        if want_out != self.out_registered {
            let events = if want_out { READ | libc::EPOLLOUT as u32 } else { READ };
            sys::epoll_ctl(epoll, libc::EPOLL_CTL_MOD, self.fd.as_raw_fd(), events)?;
            self.out_registered = want_out;
        }
        Ok(())
    }

    /// The client half-closed and got everything back.
    fn done(&self) -> bool {
        self.eof && self.pending.is_empty()
    }
}

/// Send as much of `data` as the kernel takes now; return how much that was.
fn send_now(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match sys::send(fd, &data[sent..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()), // cannot happen on a stream socket
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break, // send buffer full: EPOLLOUT later
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: retry
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}
