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
//!
//! With `--framing line|length` a read is not a message: the [`Framer`] says how much of
//! each read ends whole frames. Those are echoed straight from the shared buffer, as in raw
//! mode; only the start of a frame cut off by the end of the read is copied, into this
//! connection's [`PartialFrame`], until the read that completes it.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::time::Instant;

use log::{info, trace};
use mio::{Interest, Token};

use crate::buffer::{PartialFrame, PendingBuf};
use crate::framing::{AtEof, Framer, Oversize, Rest};
use crate::lifecycle::linger;
use crate::lifecycle::proxy_header::{self, HeaderStep};
use crate::net::{Peer, Stream, interrupted, would_block};
use crate::proxy_protocol::ProxyDecoder;
use crate::stats::{ConnCounts, IoTally};

/// Bytes one connection may read per loop turn before the loop moves on to the others: one
/// full read of the shared buffer. The rest waits for the next turn, as tokio's cooperative
/// budget makes a task yield. Without a budget, one client that sends without pause could
/// keep the loop reading its socket forever (a fast client refills it as fast as we read);
/// with a large one (16 reads, 1 MiB, before issue 20) it still held the loop for a
/// millisecond a turn, and every small client's reply waited behind it
/// (docs/results/2026-12-05-fairness.md). With one buffer a turn, a streaming connection's
/// share of a turn is what one small client's is: one read and its echo.
pub const READ_BUDGET: usize = 64 * 1024;

/// Bytes a *lingering* connection may read and discard per turn: sixteen buffers. Discarding
/// costs a `read` and no echo, so a larger share is cheap; and it matters: lingering ends
/// when the client has every echo, and a close then with the client's bytes still unread
/// resets the client instead of giving it EOF, so draining what it sent first (1 MiB covers
/// a full socket buffer) keeps that end clean. A client that never stops sending is still
/// bounded: the check comes after each turn's share.
const DISCARD_BUDGET: usize = 16 * 64 * 1024;

/// The interest of a connection that reads: READABLE, plus PRIORITY (EPOLLPRI) so that an
/// urgent (MSG_OOB) byte, which stops a TCP `read` short of the data behind it, is reported
/// and the short-read rule in `on_readable` is not trusted for that event.
pub const READ: Interest = Interest::READABLE.add(Interest::PRIORITY);

/// Where a connection is in its life. Together with the pending bytes it decides the
/// interest (see [`Connection::interest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `--proxy-protocol`: reading the PROXY header, echoing nothing yet
    /// (`crate::lifecycle::proxy_header`).
    Header,
    /// Reading and echoing.
    Open,
    /// The client half-closed (read returned 0): finish the echo, then close.
    PeerClosed,
    /// A frame was over `--max-frame`: read nothing more, finish echoing the frames before
    /// it, then close, lingering first (as when shutting down) if the client is still
    /// sending or has not yet received every echo: the rest of the oversized frame would
    /// otherwise sit unread, and a close with unread input is a reset that destroys the
    /// echoes of the frames before it.
    Refused,
    /// The server is shutting down: read nothing more, flush what is pending, then linger.
    ShuttingDown,
    /// Ended by the server (shutting down, or refused) with nothing left to echo, but the
    /// client is still sending or has not yet received all our echoes: our FIN went out
    /// behind the last echoed byte, and we read and discard until the client closes, or
    /// until it has acknowledged everything (checked by the loop too, see
    /// [`Connection::done_lingering`]). Why closing at once would destroy echoes:
    /// `crate::lifecycle::linger`. The grace period bounds how long we linger.
    Lingering,
}

/// How far [`Connection::on_readable`] reads when the socket is readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Until a *short read* (fewer bytes than asked), which means the receive queue was
    /// empty at that moment: any byte that arrives later raises a new edge, so the `read`
    /// that would only say `WouldBlock` is saved. The common case.
    ToShortRead,
    /// Until `WouldBlock`, past short reads: when no new edge will report what may be left.
    /// The client's FIN may be queued behind the data (a hang-up), an error may wait, an
    /// urgent byte stops a read short of the bytes behind it, or the read budget ran out.
    ToWouldBlock,
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
    /// A frame was over `--max-frame` (this one): reading stopped; the frames before it go
    /// out, then the connection closes. (The loop counts it and logs it through the throttle.)
    FrameTooLarge(Oversize),
}

/// One accepted client.
#[derive(Debug)]
pub struct Connection {
    /// The non-blocking socket.
    stream: Stream,
    /// Our key in the slab and our token in the poll: they are the same number.
    token: Token,
    /// The client's address, for logs: the peer's, or the client a PROXY header names.
    peer: Peer,
    /// Decides, with `pending`, what to wait for.
    phase: Phase,
    /// In the [`Phase::Header`] phase, the PROXY header so far; `None` after it (and
    /// without `--proxy-protocol`), so a served connection pays one pointer for it.
    header: Option<Box<ProxyDecoder>>,
    /// Bytes read and due back but not yet taken by the kernel. Non-empty iff WRITABLE is
    /// registered. Its cap is the connection's cap (`--max-pending`, raised to hold one whole
    /// frame), which it shares with `partial`: see [`Connection::read_room`]. Empty = no heap
    /// memory.
    pending: PendingBuf,
    /// Where frames end (`raw`: every read is whole, and `partial` stays empty).
    framer: Framer,
    /// The start of a frame whose end has not arrived yet. Invariants:
    /// - it never holds a whole frame (a frame is echoed the moment it is whole), so it is
    ///   shorter than `framer.frame_bound()`, and empty (no heap memory) between frames;
    /// - `partial.len() + pending.len() <= cap`: both are bytes read and not yet echoed, and
    ///   every byte read may end in either, so a read asks for at most the room left
    ///   (backpressure counts both). The cap holds one whole frame, so with nothing pending
    ///   there is always room for the next byte of a partial frame: it cannot stall.
    partial: PartialFrame,
    /// The interest the registry holds for us now, so we reregister only on a change.
    registered: Interest,
    /// When bytes last moved in either direction (for the idle timeout).
    last_active: Instant,
    /// Reads, frames and bytes: in all, and not yet handed to the loop ([`Connection::take_io`]).
    counts: ConnCounts,
    /// Which of the loop's listeners accepted it (where its counts go).
    listener: usize,
}

impl Connection {
    /// A connection just registered with [`READ`] interest (READABLE | PRIORITY).
    /// `cap` bounds the bytes held (pending and partial frame together); it is at least
    /// `framer.frame_bound()`. With `proxy_header`, it begins by reading a PROXY header.
    pub fn new(
        stream: Stream,
        token: Token,
        peer: Peer,
        framer: Framer,
        cap: usize,
        proxy_header: bool,
        now: Instant,
    ) -> Self {
        debug_assert!(cap >= framer.frame_bound(), "a connection must be able to hold one whole frame");
        Connection {
            stream,
            token,
            peer,
            phase: if proxy_header { Phase::Header } else { Phase::Open },
            header: proxy_header.then(Box::default),
            pending: PendingBuf::new(cap),
            framer,
            partial: PartialFrame::default(),
            registered: READ,
            last_active: now,
            counts: ConnCounts::default(),
            listener: 0,
        }
    }

    /// This connection, as accepted by the loop's listener `i`.
    pub fn on_listener(self, i: usize) -> Self {
        Connection { listener: i, ..self }
    }

    /// Which of the loop's listeners accepted it.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// Read what the client sent and echo it, using the loop's shared `buf`.
    ///
    /// Edge-triggered: read until `WouldBlock`, or until no new event is promised and none
    /// is needed (mio `Poll` docs, "Draining readiness"). A *short read* (fewer bytes than
    /// asked) means the receive queue was empty at that moment; any byte that arrives later
    /// raises a new edge, so with [`Drain::ToShortRead`] we stop there and save the `read`
    /// that would only say `WouldBlock`. That holds for TCP and Unix stream sockets on
    /// Linux, whose `read` copies everything queued up to the length asked. When the event
    /// says more than "new bytes" (a FIN, an error, an urgent byte), `drain` is
    /// [`Drain::ToWouldBlock`] and we read on.
    pub fn on_readable(&mut self, buf: &mut [u8], drain: Drain, now: Instant) -> io::Result<ReadStop> {
        if self.phase == Phase::Lingering {
            return self.discard_input(buf);
        }
        if self.phase == Phase::Header
            && let Some(stop) = self.read_header(buf, now)?
        {
            return Ok(stop); // not whole yet, or a frame over the limit right after it
        }
        let mut budget = READ_BUDGET;
        while budget > 0 {
            if self.phase != Phase::Open {
                return Ok(ReadStop::Done);
            }
            // Never read more than we could keep if the kernel refused to take any of it back,
            // nor more than this turn's budget.
            let room = self.read_room().min(buf.len()).min(budget);
            if room == 0 {
                trace!(
                    "token={} pending={} partial={} at cap: not reading (backpressure)",
                    self.token.0,
                    self.pending.len(),
                    self.partial.len()
                );
                return Ok(ReadStop::Done);
            }
            let n = match self.stream.read(&mut buf[..room]) {
                Ok(0) => return self.peer_closed(),
                Ok(n) => n,
                Err(e) if would_block(&e) => {
                    trace!("token={} read WouldBlock: drained", self.token.0);
                    return Ok(ReadStop::Done);
                }
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => return Err(e),
            };
            trace!("token={} read n={n}", self.token.0);
            budget -= n;
            self.counts.read(n);
            self.last_active = now;
            if let Some(oversize) = self.echo_frames(&buf[..n])? {
                return Ok(ReadStop::FrameTooLarge(oversize));
            }
            if n < room && drain == Drain::ToShortRead {
                return Ok(ReadStop::Done); // short read: drained, a new edge will come
            }
        }
        trace!("token={} read budget spent: yielding to other connections", self.token.0);
        Ok(ReadStop::BudgetSpent)
    }

    /// The [`Phase::Header`] phase: read until the PROXY header is whole (`Ok(None)`: the
    /// connection is open now, the bytes that followed the header in its last read were
    /// echoed, and reading goes on) or the socket is drained (`Ok(Some(Done))`). A frame over
    /// the limit right after the header is `Ok(Some(FrameTooLarge))`. An invalid header or
    /// an early EOF is an error: the loop closes the connection and counts it as refused.
    fn read_header(&mut self, buf: &mut [u8], now: Instant) -> io::Result<Option<ReadStop>> {
        let Some(decoder) = self.header.as_deref_mut() else { return Ok(None) };
        let room = self.pending.room().min(buf.len()); // nothing is held yet: the whole cap
        loop {
            let n = match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "closed before its header was whole",
                    ));
                }
                Ok(n) => n,
                Err(e) if would_block(&e) => return Ok(Some(ReadStop::Done)), // the next edge brings the rest
                Err(e) if interrupted(&e) => continue,                        // a signal: retry
                Err(e) => return Err(e),
            };
            trace!("token={} read n={n} (PROXY header)", self.token.0);
            match proxy_header::feed(decoder, &buf[..n], self.peer) {
                HeaderStep::NeedMore => {}
                HeaderStep::Invalid(why) => return Err(io::Error::new(ErrorKind::InvalidData, why)),
                HeaderStep::Done { client, payload } => {
                    (self.header, self.peer, self.phase, self.last_active) = (None, client, Phase::Open, now);
                    if payload == n {
                        return Ok(None);
                    }
                    self.counts.read(n - payload); // the header's bytes are not the client's
                    return Ok(self.echo_frames(&buf[payload..n])?.map(ReadStop::FrameTooLarge));
                }
            }
        }
    }

    /// Still in the [`Phase::Header`] phase: not served yet.
    pub fn awaiting_header(&self) -> bool {
        self.phase == Phase::Header
    }

    /// The bytes this connection may still read: the cap, less what it holds (pending and
    /// partial frame alike, either of which a byte read may end in).
    fn read_room(&self) -> usize {
        // `pending`'s room is the cap less `pending`; the invariant keeps `partial` within it.
        self.pending.room().saturating_sub(self.partial.len())
    }

    /// Echo the frames that `data` (one read, in the shared buffer) makes whole, and keep
    /// the start of a frame it leaves unfinished. `Some`: a frame over the limit, after them.
    ///
    /// The whole frames of this read go out in one write, straight from the shared buffer
    /// (no copy); a frame begun in an earlier read goes out in the same call (`writev`), its
    /// start from `partial`. In raw mode all of `data` is whole: the plain echo.
    fn echo_frames(&mut self, data: &[u8]) -> io::Result<Option<Oversize>> {
        let split = self.framer.split(self.partial.as_slice(), data);
        self.counts.frames(split.frames);
        let whole = &data[..split.whole];
        if !whole.is_empty() && self.partial.is_empty() {
            self.echo(whole)?;
        } else if !whole.is_empty() {
            let start = self.partial.take(); // freed once echoed (or copied to pending)
            trace!("token={} frame whole: {} bytes held + {} read", self.token.0, start.len(), whole.len());
            self.echo_pair(&start, whole)?;
        }
        let rest = &data[split.whole..];
        match split.rest {
            Rest::Partial if rest.is_empty() => {}
            Rest::Partial => {
                self.partial.extend(rest, self.framer.frame_bound());
                trace!("token={} partial frame: held={} (+{})", self.token.0, self.partial.len(), rest.len());
            }
            Rest::TooLarge(oversize) => {
                self.phase = Phase::Refused;
                self.partial.take();
                self.linger_once_flushed()?; // at once if nothing is pending, else after the flush
                return Ok(Some(oversize)); // the loop counts it and logs it
            }
        }
        Ok(None)
    }

    /// `read` returned 0: the client half-closed. Read no more; what is pending still goes
    /// out, then the loop closes us (see [`Connection::interest`]).
    fn peer_closed(&mut self) -> io::Result<ReadStop> {
        trace!("token={} read EOF: client half-closed, pending={}", self.token.0, self.pending.len());
        self.phase = Phase::PeerClosed;
        self.end_partial_frame_at_eof()?;
        Ok(ReadStop::Done)
    }

    /// The client's EOF arrived: a last line without `\n` is whole now, so echo it; a
    /// length frame cut short can never be whole, so drop it, and say so.
    fn end_partial_frame_at_eof(&mut self) -> io::Result<()> {
        match self.framer.at_eof(self.partial.as_slice()) {
            AtEof::Nothing => Ok(()),
            AtEof::Echo => {
                let line = self.partial.take();
                trace!("token={} EOF ends the last line: n={}", self.token.0, line.len());
                self.counts.frames(1);
                self.echo(&line)
            }
            AtEof::Discard(n) => {
                info!("{}: EOF in the middle of a frame: discarded its {n} bytes", self.peer);
                self.partial.take();
                Ok(())
            }
        }
    }

    /// Lingering: read what the client still sends and drop it, until its EOF (then the
    /// phase says "closed by the peer", and with nothing pending the loop closes us), or
    /// until the client has acknowledged every byte we sent ([`linger::done`]).
    fn discard_input(&mut self, buf: &mut [u8]) -> io::Result<ReadStop> {
        let (mut stop, mut budget) = (ReadStop::BudgetSpent, DISCARD_BUDGET);
        while budget > 0 {
            let room = buf.len().min(budget);
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    trace!("token={} read EOF while lingering: closing", self.token.0);
                    self.phase = Phase::PeerClosed;
                    return Ok(ReadStop::Done);
                }
                Ok(n) => {
                    trace!("token={} lingering: discarded n={n}", self.token.0);
                    budget -= n;
                }
                Err(e) if would_block(&e) => {
                    stop = ReadStop::Done;
                    break;
                }
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => return Err(e),
            }
        }
        if linger::done(&self.stream.sock_ref()) {
            trace!("token={} lingering: the client has every echo: closing", self.token.0);
            self.phase = Phase::PeerClosed; // nothing pending: the loop closes us
            return Ok(ReadStop::Done);
        }
        Ok(stop)
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
        self.counts.wrote(n);
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

    /// [`Connection::echo`] of `head` then `tail` in one gather write (`writev`) when nothing
    /// is pending: a frame whose start was held goes out in one call, like any other.
    fn echo_pair(&mut self, head: &[u8], tail: &[u8]) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.echo(head)?; // both queue behind what is pending
            return self.echo(tail);
        }
        let n = loop {
            match self.stream.write_vectored(&[IoSlice::new(head), IoSlice::new(tail)]) {
                Ok(n) => break n,
                Err(e) if would_block(&e) => break 0, // the send buffer is full
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => return Err(e),
            }
        };
        self.counts.wrote(n);
        let total = head.len() + tail.len();
        trace!("token={} write n={n} of {total} (held start + this read)", self.token.0);
        if n < head.len() {
            self.pending.push(&head[n..]); // what the kernel refused waits, in order
            self.pending.push(tail);
        } else if n < total {
            self.pending.push(&tail[n - head.len()..]);
        }
        Ok(())
    }

    /// Write pending bytes until they are all out or the kernel takes no more.
    pub fn on_writable(&mut self, now: Instant) -> io::Result<()> {
        while !self.pending.is_empty() {
            let asked = self.pending.len();
            let n = write_some(&mut self.stream, self.pending.front())?;
            self.pending.consume(n);
            self.counts.wrote(n);
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

    /// Ended by the server (shutting down, refused) and everything is handed to the kernel:
    /// linger, or stay as we are if the kernel holds nothing for this socket either way
    /// (with nothing pending the loop closes us at once: an idle client need not delay the
    /// shutdown). The rule is `crate::lifecycle::linger`'s, as in every model.
    fn linger_once_flushed(&mut self) -> io::Result<()> {
        let ended_by_us = matches!(self.phase, Phase::ShuttingDown | Phase::Refused);
        if ended_by_us
            && self.pending.is_empty()
            && linger::begin(&self.stream.sock_ref(), format_args!("token={}", self.token.0))?
        {
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
            Phase::Header => true,
            Phase::Open => self.read_room() > 0,
            Phase::Lingering => true, // to see the client's EOF (and discard what precedes it)
            Phase::PeerClosed | Phase::Refused | Phase::ShuttingDown => false,
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
    /// acknowledged ([`linger::done`]).
    pub fn done_lingering(&self) -> bool {
        self.phase == Phase::Lingering && linger::done(&self.stream.sock_ref())
    }

    /// The server is shutting down: stop reading; what is pending still goes out, then
    /// we close, lingering first if the client is still sending or has not yet received
    /// everything. (A client that already half-closed is left to finish as before.)
    pub fn stop_reading(&mut self) -> io::Result<()> {
        if self.phase == Phase::Open {
            self.phase = Phase::ShuttingDown;
        }
        if !self.partial.is_empty() {
            // Its end will never be read now, so it can never be echoed whole.
            info!(
                "{}: shutting down in the middle of a frame: discarded its {} bytes",
                self.peer,
                self.partial.len()
            );
            self.partial.take();
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
        (self.counts.bytes_in(), self.counts.bytes_out(), self.pending.len())
    }

    /// The reads, frames and bytes moved since the last call, for the loop's statistics.
    pub fn take_io(&mut self) -> IoTally {
        self.counts.take()
    }

    /// The connection is closing: the last of its counts, with every byte read and never
    /// echoed (pending, a partial frame, a refused one) counted as unsent.
    pub fn take_io_at_close(&mut self) -> IoTally {
        self.counts.take_at_close()
    }
}

/// One `write`, with the two non-errors made explicit: `WouldBlock` (the send buffer is
/// full) is "0 bytes taken", and `Interrupted` (a signal) is retried.
fn write_some(stream: &mut Stream, data: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if would_block(&e) => return Ok(0),
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The connection's state machine over real sockets, without a `Poll`: each test plays the
/// loop (calls `on_readable` / `on_writable` as events would) and the client (the other end
/// of a socket pair), and checks what the kernel and the client really got.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framing;
    use crate::net::{SocketOptions, kernel_queues};
    use socket2::SockRef;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    const RAW: Framer = Framer::new(Framing::Raw, 1);
    /// A bound on every wait below: these tests never sleep for a result, they poll for it.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// Our end of a Unix socket pair as a connection (non-blocking, with a send buffer of
    /// `send_buffer` bytes if given), and the client's end.
    fn unix_connection(framer: Framer, cap: usize, send_buffer: Option<usize>) -> (Connection, UnixStream) {
        let (ours, client) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        if let Some(size) = send_buffer {
            SockRef::from(&ours).set_send_buffer_size(size).unwrap();
        }
        client.set_nonblocking(true).unwrap();
        let stream = Stream::from_fd(ours.into(), false);
        (Connection::new(stream, Token(0), Peer(None), framer, cap, false, Instant::now()), client)
    }

    /// Bytes that say where they are: a lost or reordered byte cannot go unnoticed.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// The client reads (non-blocking) and the connection writes what it owes, as WRITABLE
    /// events would, until nothing is pending and the client has every byte echoed so far:
    /// `got`, everything the client has read.
    fn client_takes_the_echo(conn: &mut Connection, client: &mut UnixStream, got: &mut Vec<u8>) {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = vec![0; 64 * 1024];
        while conn.byte_counts().2 > 0 || got.len() as u64 != conn.byte_counts().1 {
            assert!(
                Instant::now() < deadline,
                "stuck: client has {} bytes, conn {:?}",
                got.len(),
                conn.phase
            );
            match client.read(&mut buf) {
                Ok(0) => break, // our FIN
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if would_block(&e) => {}
                Err(e) => panic!("client read: {e}"),
            }
            conn.on_writable(Instant::now()).unwrap();
        }
    }

    /// Readable events, as the loop handles them with `drain`: read and echo until the
    /// connection stops reading (not the budget), or `max_events`.
    fn serve_readable(conn: &mut Connection, drain: Drain, max_events: usize) {
        let mut buf = vec![0; 64 * 1024];
        for _ in 0..max_events {
            if conn.on_readable(&mut buf, drain, Instant::now()).unwrap() == ReadStop::Done {
                return;
            }
        }
    }

    /// A write the kernel takes only in part leaves the rest pending, and the connection
    /// asks for WRITABLE (and only then); once the client reads, the rest goes out, in
    /// order, and WRITABLE is dropped again.
    #[test]
    fn a_partial_write_asks_for_writable_until_the_rest_is_out() {
        let (mut conn, mut client) = unix_connection(RAW, 1 << 20, Some(4096));
        assert_eq!(conn.interest(), Some(READ), "nothing pending: no WRITABLE");
        let sent = pattern(48 * 1024); // far more than a 4 KiB send buffer takes
        client.write_all(&sent).unwrap();
        serve_readable(&mut conn, Drain::ToShortRead, 1);
        let (read, echoed, pending) = conn.byte_counts();
        assert_eq!(read, sent.len() as u64, "all of it read in one event");
        assert!(
            pending > 0 && echoed + pending as u64 == read,
            "read={read} echoed={echoed} pending={pending}"
        );
        assert_eq!(conn.interest(), Some(READ.add(Interest::WRITABLE)));
        let mut got = Vec::new();
        client_takes_the_echo(&mut conn, &mut client, &mut got);
        assert!(got == sent, "the echo differs from what was sent");
        assert_eq!(conn.byte_counts().2, 0);
        assert_eq!(conn.interest(), Some(READ), "all out: WRITABLE dropped");
    }

    /// One turn reads at most the budget: a client that sent two budgets' worth and more
    /// gets one read per turn, each turn ending `BudgetSpent` (the loop comes back for the
    /// rest after serving the others), and the last turn ends at the short read.
    #[test]
    fn a_turn_reads_at_most_one_budget() {
        let (mut conn, mut client) = unix_connection(RAW, 1 << 20, None);
        let sent = pattern(2 * READ_BUDGET + 1000);
        let mut written = 0;
        while written < sent.len() {
            written += client.write(&sent[written..]).unwrap(); // a Unix pair's buffers hold it
        }
        let mut buf = vec![0; 2 * READ_BUDGET];
        for turn in 1..=2 {
            assert_eq!(
                conn.on_readable(&mut buf, Drain::ToShortRead, Instant::now()).unwrap(),
                ReadStop::BudgetSpent
            );
            assert_eq!(conn.byte_counts().0, (turn * READ_BUDGET) as u64, "turn {turn}");
        }
        assert_eq!(conn.on_readable(&mut buf, Drain::ToWouldBlock, Instant::now()).unwrap(), ReadStop::Done);
        assert_eq!(conn.byte_counts().0, sent.len() as u64);
        let mut got = Vec::new();
        client_takes_the_echo(&mut conn, &mut client, &mut got);
        assert!(got == sent, "the echo differs from what was sent");
    }

    /// At the cap (`--max-pending`) the connection stops reading: its interest has no
    /// READABLE, and the client's further bytes wait in the kernel, not in our memory.
    /// Once the client reads its echo, reading resumes and every byte comes back.
    #[test]
    fn at_the_cap_it_stops_reading_and_the_bytes_wait_in_the_kernel() {
        const CAP: usize = 1000;
        let (mut conn, mut client) = unix_connection(RAW, CAP, Some(4096));
        let sent = pattern(64 * 1024);
        client.write_all(&sent).unwrap(); // fits the client's send buffer: no blocking
        serve_readable(&mut conn, Drain::ToShortRead, 64);
        assert_eq!(conn.byte_counts().2, CAP, "pending filled to the cap");
        assert_eq!(conn.interest(), Some(Interest::WRITABLE), "at the cap: WRITABLE only, no READABLE");
        let stream_socket = conn.stream.sock_ref();
        let held = kernel_queues(&stream_socket).unwrap().unread;
        assert!(held > 0, "the rest waits unread in the kernel");
        assert_eq!(conn.byte_counts().0 + held as u64, sent.len() as u64);
        // The client reads; each time the connection may read again, it does (as the
        // reregistration with READABLE would make it), until everything came back.
        let mut got = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while got.len() < sent.len() {
            assert!(Instant::now() < deadline, "stuck at {} of {} bytes", got.len(), sent.len());
            client_takes_the_echo(&mut conn, &mut client, &mut got);
            assert!(
                conn.interest().is_some_and(|interest| interest.is_readable()),
                "nothing pending: reading"
            );
            serve_readable(&mut conn, Drain::ToShortRead, 64);
        }
        assert!(got == sent, "the echo differs from what was sent");
        assert!(conn.byte_counts().2 <= CAP);
    }

    /// The client's EOF while echoes are still pending does not close the connection: it
    /// stops reading and asks for WRITABLE only; once the echo is out it is finished
    /// (interest `None`), and the client got every byte.
    #[test]
    fn eof_with_bytes_pending_finishes_the_echo_before_closing() {
        let (mut conn, mut client) = unix_connection(RAW, 1 << 20, Some(4096));
        let sent = pattern(32 * 1024);
        client.write_all(&sent).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        // The event says read_closed: the FIN is queued behind the data, so read past the
        // short read to see it.
        serve_readable(&mut conn, Drain::ToWouldBlock, 4);
        assert_eq!(conn.phase, Phase::PeerClosed, "EOF seen");
        assert!(conn.byte_counts().2 > 0, "still pending");
        assert_eq!(conn.interest(), Some(Interest::WRITABLE), "no more reading, not finished");
        let mut got = Vec::new();
        client_takes_the_echo(&mut conn, &mut client, &mut got);
        assert!(got == sent, "the echo differs from what was sent");
        assert_eq!(conn.interest(), None, "echo complete: the loop closes it");
    }

    /// An urgent (MSG_OOB) byte stops a TCP read short at its mark, with data behind it: a
    /// short read then proves nothing. Trusting it (`ToShortRead`, the common case) leaves
    /// the rest unread with no new edge to come; the PRIORITY event makes the loop read to
    /// `WouldBlock`, and everything comes back, the urgent byte in its place (inline).
    #[test]
    fn an_urgent_byte_stops_a_read_short_and_draining_to_would_block_gets_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        SocketOptions::default().apply(SockRef::from(&ours), true).unwrap(); // urgent data inline
        client.write_all(b"abc").unwrap();
        SockRef::from(&client).send_out_of_band(b"!").unwrap();
        client.write_all(b"def").unwrap();
        let deadline = Instant::now() + PATIENCE;
        while kernel_queues(&SockRef::from(&ours)).unwrap().unread < 7 {
            assert!(Instant::now() < deadline, "the 7 bytes never arrived");
            std::thread::yield_now();
        }
        let stream = Stream::from_fd(ours.into(), true);
        let mut conn = Connection::new(stream, Token(0), Peer(None), RAW, 1 << 20, false, Instant::now());
        let mut buf = vec![0; 64 * 1024];
        conn.on_readable(&mut buf, Drain::ToShortRead, Instant::now()).unwrap();
        assert_eq!(conn.byte_counts().0, 3, "the read stopped at the urgent mark, 4 bytes behind it");
        conn.on_readable(&mut buf, Drain::ToWouldBlock, Instant::now()).unwrap();
        assert_eq!(conn.byte_counts(), (7, 7, 0));
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut echo = [0; 7];
        client.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"abc!def");
    }

    /// A frame over `--max-frame` refuses the connection, but it does not close at once:
    /// the frames before it are echoed, our FIN follows them, and it lingers (reading and
    /// discarding) while the client has not acknowledged everything; once it has, the
    /// connection is finished. The client gets exactly the echoes, then EOF.
    #[test]
    fn a_refused_frame_lingers_until_the_client_has_every_echo() {
        let (mut conn, mut client) = unix_connection(Framer::new(Framing::Line, 8), 64, None);
        client.write_all(b"ok\nthis line is over the limit").unwrap();
        serve_readable(&mut conn, Drain::ToShortRead, 4);
        assert_eq!(conn.phase, Phase::Lingering, "the client has not read its echo yet");
        assert_eq!(conn.interest(), Some(READ), "lingering reads (and discards) to see the end");
        assert!(!conn.done_lingering());
        client.write_all(b"more of the refused line").unwrap(); // discarded, never echoed
        serve_readable(&mut conn, Drain::ToShortRead, 4);
        let mut got = Vec::new();
        client.set_nonblocking(false).unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        client.read_to_end(&mut got).unwrap(); // the echo, then our FIN
        assert_eq!(got, b"ok\n");
        assert!(conn.done_lingering(), "the client has everything: lingering may end");
        // The next readable event (the client's EOF, or more bytes) ends it for good.
        client.shutdown(Shutdown::Write).unwrap();
        serve_readable(&mut conn, Drain::ToWouldBlock, 4);
        assert_eq!(conn.interest(), None, "finished: the loop closes it");
        let (read, echoed, _) = conn.byte_counts();
        assert_eq!(echoed, 3);
        assert_eq!(conn.take_io_at_close().bytes_unsent, read - 3, "the refused bytes count as unsent");
    }
}
