//! Rung 3 of the ladder (docs/learn.md): one thread, many connections, readiness from mio.
//! The smallest correct event loop: read this before `src/event_loop/`.
//!
//! Adds, over rung 2: every client on one thread, without a thread each. Every socket is
//! non-blocking and registered with one `mio::Poll` (epoll on Linux); the loop waits in
//! `poll` until some socket may be ready, then does only what will not block. What it gets
//! right, and the real loop keeps: accept until `WouldBlock`, read until `WouldBlock`, keep
//! what a partial write left over, ask for WRITABLE only while something is left, finish the
//! echo after the client's EOF. An idle connection costs a slab entry, not a thread.
//!
//! Still lacks, and the real loop adds: a cap on the bytes held per connection (a client
//! that never reads makes this one grow without bound: the `unbounded` mistake), connection
//! limits, idle timeouts, backing off when out of file descriptors, lingering before a
//! close, graceful shutdown, and writing straight from the read buffer. It also calls
//! `reregister` (one `epoll_ctl`) after every event; rung 4 shows how to avoid that.
//!
//! `cargo run --release --example ladder-3-event-loop 127.0.0.1:7878` (port 0 works), then,
//! in another shell, `echoloop client ADDR < some-file | cmp - some-file`, or `nc ADDR`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

mod cli; // the address argument and the `listening on` line, shared by every rung

/// Connections get tokens 0, 1, 2, ... (their slab keys); the listener takes one far away.
const LISTENER: Token = Token(usize::MAX);

/// One client: its socket, and the bytes we read from it but could not write back yet.
struct Conn {
    stream: TcpStream,
    /// Non-empty only after a partial write; then (and only then) we ask for WRITABLE.
    pending: Vec<u8>,
    /// The client sent EOF (`read` returned 0): echo what is left, then close.
    eof: bool,
}

impl Conn {
    /// Readiness is a hint, and mio is edge-triggered: an event says "something changed",
    /// so we do all we can now (write what is pending, read until `WouldBlock`) because no
    /// new event will come for what is already there.
    fn on_event(&mut self) -> io::Result<()> {
        self.flush()?; // older bytes first: the echo keeps the client's order
        let mut buf = [0; 16 * 1024];
        while !self.eof {
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true, // the client half-closed (or closed)
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    self.flush()?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break, // drained: wait
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: retry
                Err(e) => return Err(e), // reset and friends: the caller closes us
            }
        }
        Ok(())
    }

    /// Write pending bytes until done or the kernel's send buffer is full (`WouldBlock`,
    /// or a short write: whatever it did not take stays in `pending`).
    fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.pending.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break, // WRITABLE will call us
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// What to wait for next; `None` when the echo is complete and the client sent EOF.
    fn interest(&self) -> Option<Interest> {
        match (self.eof, self.pending.is_empty()) {
            (false, true) => Some(Interest::READABLE),
            (false, false) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::WRITABLE),
            (true, true) => None,
        }
    }
}

fn main() {
    cli::run("ladder-3-event-loop", echo_server);
}

fn echo_server(addr: SocketAddr) -> io::Result<()> {
    let mut listener = TcpListener::bind(addr)?; // non-blocking, as everything mio hands out
    cli::announce(listener.local_addr()?)?;

    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    loop {
        // The only place we wait: until some registered socket may be ready.
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: poll again
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => accept_all(&poll, &listener, &mut conns),
                token => serve(&poll, &mut conns, token),
            }
        }
    }
}

/// One event may stand for many queued connections: accept until `WouldBlock`.
fn accept_all(poll: &Poll, listener: &TcpListener, conns: &mut Slab<Conn>) {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _peer)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return, // the queue is empty
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // E.g. out of file descriptors. The real loop pauses and retries on a timer:
            // the connection stays queued, and no new event comes for it.
            Err(e) => return eprintln!("accept: {e}"),
        };
        let entry = conns.vacant_entry(); // key first: it is the token
        match poll.registry().register(&mut stream, Token(entry.key()), Interest::READABLE) {
            Ok(()) => _ = entry.insert(Conn { stream, pending: Vec::new(), eof: false }),
            Err(e) => eprintln!("register: {e}"), // dropping `stream` closes it
        }
    }
}

/// A connection may be ready: do its I/O, then wait for what it needs next, or close it.
fn serve(poll: &Poll, conns: &mut Slab<Conn>, token: Token) {
    // The slot may be empty (closed earlier in this batch of events) or even reused by a
    // new client: harmless, since the handler only does what will not block.
    let Some(conn) = conns.get_mut(token.0) else { return };
    let keep = match conn.on_event().map(|()| conn.interest()) {
        // Simplest: reregister after every event. The real loop does it only when the
        // interest changes, saving an epoll_ctl call per event.
        Ok(Some(interest)) => poll.registry().reregister(&mut conn.stream, token, interest).is_ok(),
        Ok(None) | Err(_) => false, // echo complete after EOF, or the socket failed
    };
    if !keep {
        // Deregister, free the slot; dropping the stream closes the socket.
        let mut conn = conns.remove(token.0);
        let _ = poll.registry().deregister(&mut conn.stream);
    }
}
