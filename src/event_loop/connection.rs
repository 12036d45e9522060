//! One client connection of the event loop: its socket, where it is in its life, and the
//! bytes it owes its client.
//!
//! The event loop calls [`Connection::on_writable`] and [`Connection::on_readable`] when
//! `epoll` says the socket *may* be ready, then asks [`Connection::interest`] what to wait
//! for next. The connection never touches the `Registry`: the loop owns registration, so
//! the whole non-blocking protocol of a connection can be read in this one file.
//!
//! The echo path, in the common case, is two syscalls: `read` into the loop's shared buffer,
//! then `write` of the same bytes straight back. Only when the kernel's send buffer is full
//! (a *partial write*) do bytes stay behind in this connection's [`PendingBuf`].

use std::io::{self, ErrorKind, Read, Write};
use std::time::Instant;

use log::trace;
use mio::{Interest, Token};

use crate::buffer::PendingBuf;
use crate::net::{Peer, Stream};

/// Reads one connection may do per readiness event before the loop moves on to others.
/// Without a budget, one client that sends without pause could keep the loop reading its
/// socket forever (a 64 KiB read takes microseconds, and a fast client refills it as fast);
/// with it, every ready connection gets a turn each pass. 16 reads of 64 KiB = 1 MiB.
pub const READS_PER_EVENT: usize = 16;

/// The interest of a connection that reads: READABLE, plus PRIORITY (EPOLLPRI) so that an
/// urgent (MSG_OOB) byte, which stops a TCP `read` short of the data behind it, is reported
/// and the short-read rule in `on_readable` is not trusted for that event.
pub const READ: Interest = Interest::READABLE.add(Interest::PRIORITY);

/// Where a connection is in its life. Together with the pending bytes it decides the
/// interest (see [`Connection::interest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and echoing.
    Open,
    /// The client half-closed (read returned 0): finish the echo, then close.
    PeerClosed,
    /// The server is shutting down: read nothing more, flush what is pending, then linger.
    ShuttingDown,
    /// Shutting down with nothing left to echo, but the client is still sending or has not
    /// yet received all our echoes: our FIN went out behind the last echoed byte, and we
    /// read and discard until the client closes, or until the kernel holds nothing for us
    /// either way (checked by the loop, see [`Connection::done_lingering`]). Closing at
    /// once would be wrong: `close(2)` on a socket whose receive queue holds unread bytes
    /// (or gets some later) makes the kernel send a reset and throw away the echoes still
    /// in our send queue (RFC 2525, "Failure to RST on close with data pending"; Linux
    /// `tcp_close`). The grace period bounds how long we linger.
    Lingering,
}

/// Why [`Connection::on_readable`] stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStop {
    /// Nothing more to read for now, or reading is paused (cap, EOF, shutdown): a future
    /// readiness event, or an interest change, will bring us back.
    Done,
    /// The per-event budget ran out with data possibly still waiting. Edge-triggered
    /// readiness will not report it again, so the loop must come back on its own.
    BudgetSpent,
}

/// One accepted client.
#[derive(Debug)]
pub struct Connection {
    /// The non-blocking socket.
    stream: Stream,
    /// Our key in the slab and our token in the poll: they are the same number.
    token: Token,
    /// The client's address, for logs.
    peer: Peer,
    /// Decides, with `pending`, what to wait for.
    phase: Phase,
    /// Bytes read but not yet taken by the kernel. Non-empty iff WRITABLE is registered;
    /// full (`--max-pending`) iff READABLE is not (backpressure). Empty = no heap memory.
    pending: PendingBuf,
    /// The interest the registry holds for us now, so we reregister only on a change.
    registered: Interest,
    /// When bytes last moved in either direction (for the idle timeout).
    last_active: Instant,
    /// Bytes read from the client.
    bytes_in: u64,
    /// Bytes written back to the client.
    bytes_out: u64,
}

impl Connection {
    /// A connection just registered with [`READ`] interest (READABLE | PRIORITY).
    pub fn new(stream: Stream, token: Token, peer: Peer, max_pending: usize, now: Instant) -> Self {
        Connection {
            stream,
            token,
            peer,
            phase: Phase::Open,
            pending: PendingBuf::new(max_pending),
            registered: READ,
            last_active: now,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Read what the client sent and echo it, using the loop's shared `buf`.
    ///
    /// Edge-triggered: read until `WouldBlock`, or until no new event is promised and none
    /// is needed (mio `Poll` docs, "Draining readiness"). A *short read* (fewer bytes than
    /// asked) means the receive queue was empty at that moment; any byte that arrives later
    /// raises a new edge, so we stop there and save the `read` that would only say
    /// `WouldBlock`. That holds for TCP and Unix stream sockets on Linux, whose `read`
    /// copies everything queued up to the length asked. One exception: the client's FIN
    /// may already be queued behind the data (the event said `read_closed`); it raises no
    /// further edge, so then we read on until we see the 0 that means EOF. `maybe_eof`
    /// passes that hint in.
    pub fn on_readable(&mut self, buf: &mut [u8], maybe_eof: bool, now: Instant) -> io::Result<ReadStop> {
        if self.phase == Phase::Lingering {
            return self.discard_input(buf);
        }
        for _ in 0..READS_PER_EVENT {
            if self.phase != Phase::Open {
                return Ok(ReadStop::Done);
            }
            // Never read more than we could keep if the kernel refused to take any of it back.
            let room = self.pending.room().min(buf.len());
            if room == 0 {
                trace!(
                    "token={} pending={} at cap: not reading (backpressure)",
                    self.token.0,
                    self.pending.len()
                );
                return Ok(ReadStop::Done);
            }
            let n = match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    trace!(
                        "token={} read EOF: client half-closed, pending={}",
                        self.token.0,
                        self.pending.len()
                    );
                    self.phase = Phase::PeerClosed;
                    return Ok(ReadStop::Done);
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    trace!("token={} read WouldBlock: drained", self.token.0);
                    return Ok(ReadStop::Done);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: retry
                Err(e) => return Err(e),
            };
            trace!("token={} read n={n}", self.token.0);
            self.bytes_in += n as u64;
            self.last_active = now;
            self.echo(&buf[..n])?;
            if n < room && !maybe_eof {
                return Ok(ReadStop::Done); // short read: drained, a new edge will come
            }
        }
        trace!("token={} read budget spent: yielding to other connections", self.token.0);
        Ok(ReadStop::BudgetSpent)
    }

    /// Lingering: read what the client still sends and drop it, until its EOF (then the
    /// phase says "closed by the peer", and with nothing pending the loop closes us).
    fn discard_input(&mut self, buf: &mut [u8]) -> io::Result<ReadStop> {
        for _ in 0..READS_PER_EVENT {
            match self.stream.read(buf) {
                Ok(0) => {
                    trace!("token={} read EOF while lingering: closing", self.token.0);
                    self.phase = Phase::PeerClosed;
                    return Ok(ReadStop::Done);
                }
                Ok(n) => trace!("token={} lingering: discarded n={n}", self.token.0),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(ReadStop::Done),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: retry
                Err(e) => return Err(e),
            }
        }
        Ok(ReadStop::BudgetSpent)
    }

    /// Send `data` back: straight to the socket if nothing is queued ahead of it, else
    /// behind the pending bytes, so the order the client sent is the order it gets back.
    fn echo(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.pending.is_empty() {
            trace!("token={} queued n={} behind pending={}", self.token.0, data.len(), self.pending.len());
            self.pending.push(data);
            return Ok(());
        }
        let n = write_some(&mut self.stream, data)?;
        self.bytes_out += n as u64;
        if n < data.len() {
            // The kernel's send buffer is full: keep the rest; WRITABLE will tell us when
            // there is room again.
            trace!(
                "token={} partial write n={n} of {}: pending={}",
                self.token.0,
                data.len(),
                data.len() - n
            );
            self.pending.push(&data[n..]);
        } else {
            trace!("token={} write n={n}", self.token.0);
        }
        Ok(())
    }

    /// Write pending bytes until they are all out or the kernel takes no more.
    pub fn on_writable(&mut self, now: Instant) -> io::Result<()> {
        while !self.pending.is_empty() {
            let asked = self.pending.len();
            let n = write_some(&mut self.stream, self.pending.front())?;
            self.pending.consume(n);
            self.bytes_out += n as u64;
            if n > 0 {
                self.last_active = now;
            }
            trace!("token={} write pending n={n} left={}", self.token.0, self.pending.len());
            if n < asked {
                // The send buffer filled up again. A further write would only say
                // WouldBlock; the next WRITABLE edge brings us back.
                break;
            }
        }
        self.linger_once_flushed()
    }

    /// Shutting down and everything is handed to the kernel. If the kernel holds nothing
    /// for this socket either way, stay in `ShuttingDown`: with nothing pending the loop
    /// closes us at once (an idle client need not delay the shutdown). Otherwise send our
    /// FIN behind the echoes (`shutdown(Write)`) and linger (see [`Phase::Lingering`]).
    fn linger_once_flushed(&mut self) -> io::Result<()> {
        if self.phase != Phase::ShuttingDown || !self.pending.is_empty() {
            return Ok(());
        }
        let (unread, unacknowledged) = self.stream.kernel_queues()?;
        if (unread, unacknowledged) != (0, 0) {
            trace!(
                "token={} all echoed; kernel holds unread={unread} unacked={unacknowledged}: \
                 FIN sent, lingering until the client closes",
                self.token.0
            );
            self.stream.shutdown_write()?;
            self.phase = Phase::Lingering;
        }
        Ok(())
    }

    /// What to wait for next, derived from the phase, the pending bytes and the cap;
    /// `None` means the connection is finished and should be closed.
    ///
    /// Every way out of backpressure changes this value (WRITABLE -> READABLE|WRITABLE or
    /// READABLE), and the loop reregisters on every change; `EPOLL_CTL_MOD` reports a socket
    /// that is already readable at once, so bytes that waited in the kernel are not forgotten.
    pub fn interest(&self) -> Option<Interest> {
        let reading = match self.phase {
            Phase::Open => !self.pending.is_full(),
            Phase::Lingering => true, // to see the client's EOF (and discard what precedes it)
            Phase::PeerClosed | Phase::ShuttingDown => false,
        };
        let writing = !self.pending.is_empty();
        match (reading, writing) {
            (true, true) => Some(READ.add(Interest::WRITABLE)),
            (true, false) => Some(READ),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }

    /// The interest the registry holds, and the one to set it to when it changes.
    pub fn registered(&self) -> Interest {
        self.registered
    }

    /// Record that the registry now holds `interest` for us.
    pub fn set_registered(&mut self, interest: Interest) {
        self.registered = interest;
    }

    /// Lingering, and the client has everything: every echoed byte and our FIN are
    /// acknowledged, and nothing it sent waits unread, so closing cannot reset the
    /// connection or lose a byte. (A socket that cannot even say so is done too.)
    pub fn done_lingering(&self) -> bool {
        self.phase == Phase::Lingering && self.stream.kernel_queues().map_or(true, |queues| queues == (0, 0))
    }

    /// The server is shutting down: stop reading; what is pending still goes out, then
    /// we close, lingering first if the client is still sending or has not yet received
    /// everything. (A client that already half-closed is left to finish as before.)
    pub fn stop_reading(&mut self) -> io::Result<()> {
        if self.phase == Phase::Open {
            self.phase = Phase::ShuttingDown;
        }
        self.linger_once_flushed()
    }

    /// The socket, for the registry.
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// The client's address.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// When bytes last moved.
    pub fn last_active(&self) -> Instant {
        self.last_active
    }

    /// Bytes (read, written back, still pending).
    pub fn byte_counts(&self) -> (u64, u64, usize) {
        (self.bytes_in, self.bytes_out, self.pending.len())
    }
}

/// One `write`, with the two non-errors made explicit: `WouldBlock` (the send buffer is
/// full) is "0 bytes taken", and `Interrupted` (a signal) is retried.
fn write_some(stream: &mut Stream, data: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
