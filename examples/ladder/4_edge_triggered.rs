//! Rung 4 of the ladder (docs/learn.md): rung 3's loop on raw `epoll` through `libc`, no mio.
//!
//! Adds, over rung 3: what mio did for us, in plain sight. Three system calls: `epoll_create1`
//! makes the poller, `epoll_ctl` registers a descriptor with a `u64` of our choosing (the
//! token: here the slab key), `epoll_wait` fills an array with (readiness, token) pairs.
//! `accept4` makes each socket non-blocking as it is accepted (std's `accept` would need an
//! extra `fcntl`). Each connection is registered once, edge-triggered, for both directions
//! (`EPOLLIN | EPOLLOUT | EPOLLET`), and never again: where rung 3 makes an `epoll_ctl` per
//! event, this loop makes one per connection. And a cap: a connection holds at most `CAP`
//! bytes read but not yet echoed; at the cap it stops reading that client until the client
//! reads (backpressure), so a client that never reads costs `CAP` bytes, not unbounded memory.
//!
//! Still lacks, and the real loop (src/event_loop/) adds: connection limits, backing off
//! when out of descriptors, idle timers, lingering before a close, graceful shutdown,
//! writing straight from the read buffer, and portability (mio also speaks kqueue and IOCP).
//!
//! `cargo run --release --example ladder-4-edge-triggered 127.0.0.1:7878` (port 0 works).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use slab::Slab;

mod cli; // the address argument and the `listening on` line, shared by every rung

/// The listener's token; connections use their slab keys, 0, 1, 2, ...
const LISTENER: u64 = u64::MAX;
/// The most bytes a connection holds that its client has not taken yet.
const CAP: usize = 64 * 1024;

fn main() {
    cli::run("ladder-4-edge-triggered", echo_server);
}

fn echo_server(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?; // so that accepting until WouldBlock cannot block
    cli::announce(listener.local_addr()?)?;

    let epoll = Epoll::new()?;
    epoll.add(listener.as_raw_fd(), libc::EPOLLIN | libc::EPOLLET, LISTENER)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Vec::with_capacity(1024);
    loop {
        match epoll.wait(&mut events) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: wait again
            Err(e) => return Err(e),
        }
        for event in &events {
            let token = event.u64; // a copy: the kernel's struct is packed, no references to it
            match token {
                LISTENER => accept_all(&epoll, &listener, &mut conns),
                key => on_ready(&mut conns, key as usize),
            }
        }
    }
}

/// The three epoll calls, each checked: a negative result means "see errno".
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers are passed.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: a new descriptor, owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watch `fd` for `events`; each report for it carries `token`.
    fn add(&self, fd: RawFd, events: i32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events: events as u32, u64: token };
        // SAFETY: a valid pointer to an initialised event, read during the call only.
        check(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) })?;
        Ok(())
    }

    /// Block until something is ready; `events` then holds what the kernel reported.
    fn wait(&self, events: &mut Vec<libc::epoll_event>) -> io::Result<()> {
        events.clear();
        let room = events.capacity() as i32;
        // SAFETY: the kernel writes at most `room` events into the vector's spare capacity.
        let n = check(unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), room, -1) })?;
        // SAFETY: the kernel initialised the first `n` of them.
        unsafe { events.set_len(n as usize) };
        Ok(())
    }
}

/// A C call's result: negative means failure, with the reason in `errno`.
fn check(result: i32) -> io::Result<i32> {
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

/// Edge-triggered: the listener's event may stand for many queued clients, and none will
/// be announced again. Accept until `WouldBlock`.
fn accept_all(epoll: &Epoll, listener: &TcpListener, conns: &mut Slab<Conn>) {
    loop {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: null address pointers: we do not ask who the peer is.
        let fd = match check(unsafe {
            libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), flags)
        }) {
            // SAFETY: a new descriptor, owned by nobody else.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(e) if e.kind() == ErrorKind::WouldBlock => return, // the queue is empty
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return eprintln!("accept: {e}"), // e.g. out of descriptors
        };
        let entry = conns.vacant_entry(); // key first: it is the token
        let interest = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET; // once, for good
        match epoll.add(fd.as_raw_fd(), interest, entry.key() as u64) {
            Ok(()) => _ = entry.insert(Conn { stream: TcpStream::from(fd), pending: Vec::new(), eof: false }),
            Err(e) => eprintln!("epoll_ctl: {e}"), // dropping `fd` closes it
        }
    }
}

/// Events are hints: whatever the flags say, do all that will not block and see.
fn on_ready(conns: &mut Slab<Conn>, key: usize) {
    let Some(conn) = conns.get_mut(key) else { return }; // closed earlier in this batch
    match conn.on_event() {
        Ok(false) => {} // wait for the next edge: the registration never changes
        // Done, or failed. Closing the descriptor also takes it out of the epoll set
        // (because no duplicate of it is open), so no EPOLL_CTL_DEL is needed.
        Ok(true) | Err(_) => drop(conns.remove(key)),
    }
}

/// One client: its socket, and the bytes read from it that it has not taken back yet.
struct Conn {
    stream: TcpStream,
    /// At most `CAP` bytes. Non-empty after a write met `WouldBlock`: an `EPOLLOUT` edge
    /// will come when the client reads, and resume the echo (and the reading).
    pending: Vec<u8>,
    /// The client sent EOF: finish the echo, then close.
    eof: bool,
}

impl Conn {
    /// Edge-triggered: no new event comes for bytes already waiting, so read until
    /// `WouldBlock`, unless the cap stops us first; then only `EPOLLOUT` (the client read
    /// some echo) wakes us, and we go on from here. Returns whether the connection is done.
    fn on_event(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            self.flush()?; // older bytes first: the echo keeps the client's order
            if self.eof {
                return Ok(self.pending.is_empty()); // done once the last byte is out
            }
            let room = (CAP - self.pending.len()).min(buf.len());
            if room == 0 {
                return Ok(false); // backpressure: flush met WouldBlock, EPOLLOUT will come
            }
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false), // drained
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Write what is pending until it is all out or the kernel takes no more.
    fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.pending.drain(..n)), // a short write keeps the rest
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
