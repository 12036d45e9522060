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
//!
//! **What a connection costs.** Most connections, most of the time, hold no byte: they wait
//! for their client. So a [`Connection`] is only what every connection needs at every
//! moment, 32 bytes: the socket, when bytes last moved, where it is in its life, the
//! interest registered, which listener accepted it, and one pointer to what it needs only
//! now and then ([`Extras`]: pending echoes, a frame's start, a PROXY header being read, the
//! client that header named), which is allocated when first needed and freed when it holds
//! nothing any more. What is the same for every connection (the framing, the cap, the read
//! buffer) and what is true only during one call (its token, the time, the turn's counts)
//! the loop lends it as a [`Turn`]. The client's address is asked of the kernel for the rare
//! log line that shows it. docs/design.md ("What a connection costs") has the byte count.

use std::io::{self, ErrorKind, IoSlice, Read, Write};

use log::{info, trace};
use mio::{Interest, Token};

use crate::buffer::{PartialFrame, PendingBuf};
use crate::framing::{AtEof, Framer, Oversize, Rest};
use crate::lifecycle::proxy_header::{self, HeaderStep};
use crate::lifecycle::{Stamp, linger};
use crate::net::{Peer, Stream, interrupted, would_block};
use crate::proxy_protocol::ProxyDecoder;
use crate::stats::IoTally;

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

/// What the loop lends the connection it is serving: what every connection shares (the
/// framing, the cap) and what is true only for this call (its token, the time, where the
/// counts go). Lent, not kept, so that no connection carries a copy.
#[derive(Debug)]
pub struct Turn<'a> {
    /// The connection's token (its slab key), for the trace.
    pub token: Token,
    /// This turn's time, stamped on the connection when bytes move.
    pub now: Stamp,
    /// Where frames end (`raw`: every read is whole).
    pub framer: Framer,
    /// The most bytes a connection may hold, pending and partial frame together:
    /// `--max-pending`, raised to hold one whole frame (see [`Connection::read_room`]).
    pub cap: usize,
    /// This turn's reads, frames and bytes, which the loop publishes once per turn.
    pub tally: &'a mut IoTally,
}

/// One accepted client: 32 bytes while it holds no byte, which is most of its life.
#[derive(Debug)]
pub struct Connection {
    /// The non-blocking socket: its descriptor, and whether it is TCP or Unix.
    stream: Stream,
    /// When bytes last moved in either direction (for the idle timeout); in the
    /// [`Phase::Header`] phase, the accept (for `--proxy-timeout`).
    last_active: Stamp,
    /// What it needs only now and then; `None` (no heap memory) while that is nothing.
    extras: Option<Box<Extras>>,
    /// Which of the loop's listeners accepted it (where its counts go).
    listener: u16,
    /// Decides, with what is held, what to wait for.
    phase: Phase,
    /// The interest the registry holds for us now, so we reregister only on a change.
    registered: Interest,
}

/// What a connection needs only now and then, out of line: allocated when first needed,
/// freed when nothing in it is needed any more ([`Connection::release_if_empty`]), so an idle
/// connection has none. (Behind a PROXY header that named another client, `client` keeps
/// it for the connection's life: the kernel cannot be asked for that address.)
#[derive(Debug)]
struct Extras {
    /// Bytes read and due back but not yet taken by the kernel. Non-empty iff WRITABLE is
    /// registered. Its cap is the connection's cap, which it shares with `partial`: see
    /// [`Connection::read_room`].
    pending: PendingBuf,
    /// The start of a frame whose end has not arrived yet. Invariants:
    /// - it never holds a whole frame (a frame is echoed the moment it is whole), so it is
    ///   shorter than `framer.frame_bound()`;
    /// - `partial.len() + pending.len() <= cap`: both are bytes read and not yet echoed, and
    ///   every byte read may end in either, so a read asks for at most the room left
    ///   (backpressure counts both). The cap holds one whole frame, so with nothing pending
    ///   there is always room for the next byte of a partial frame: it cannot stall.
    partial: PartialFrame,
    /// In the [`Phase::Header`] phase, the PROXY header so far.
    header: Option<Box<ProxyDecoder>>,
    /// The client a PROXY header named, when it is not the socket's peer.
    client: Option<Peer>,
}

impl Extras {
    fn new(cap: usize) -> Extras {
        Extras { pending: PendingBuf::new(cap), partial: PartialFrame::default(), header: None, client: None }
    }

    /// Nothing in it is needed any more.
    fn unneeded(&self) -> bool {
        self.pending.is_empty() && self.partial.len() == 0 && self.header.is_none() && self.client.is_none()
    }
}

impl Connection {
    /// A connection accepted by the loop's listener `listener` and registered with [`READ`]
    /// interest (READABLE | PRIORITY), at `now`. With `proxy_header`, it begins by reading a
    /// PROXY header (its [`Extras`] hold the header so far; `cap` bounds what they may hold).
    pub fn new(stream: Stream, listener: u16, proxy_header: bool, cap: usize, now: Stamp) -> Self {
        let header = || Box::new(Extras { header: Some(Box::default()), ..Extras::new(cap) });
        let phase = if proxy_header { Phase::Header } else { Phase::Open };
        Connection {
            stream,
            last_active: now,
            extras: proxy_header.then(header),
            listener,
            phase,
            registered: READ,
        }
    }

    /// Which of the loop's listeners accepted it.
    pub fn listener(&self) -> usize {
        usize::from(self.listener)
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
    pub fn on_readable(&mut self, buf: &mut [u8], drain: Drain, turn: &mut Turn<'_>) -> io::Result<ReadStop> {
        let result = match self.phase {
            Phase::Lingering => self.discard_input(buf, turn.token),
            Phase::Header => match self.read_header(buf, turn) {
                Ok(None) => self.read_and_echo(buf, drain, turn), // whole: the client's bytes now
                other => other.map(|stop| stop.unwrap_or(ReadStop::Done)),
            },
            _ => self.read_and_echo(buf, drain, turn),
        };
        self.release_if_empty();
        result
    }

    /// The [`Phase::Header`] phase: read until the PROXY header is whole (`Ok(None)`: the
    /// connection is open now, the bytes that followed the header in its last read were
    /// echoed, and reading goes on) or the socket is drained (`Ok(Some(Done))`). A frame over
    /// the limit right after the header is `Ok(Some(FrameTooLarge))`. An invalid header or
    /// an early EOF is an error: the loop closes the connection and counts it as refused.
    fn read_header(&mut self, buf: &mut [u8], turn: &mut Turn<'_>) -> io::Result<Option<ReadStop>> {
        let room = turn.cap.min(buf.len()); // nothing is held yet: the whole cap
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
            trace!("token={} read n={n} (PROXY header)", turn.token.0);
            let peer = self.stream.peer();
            let Some(decoder) = self.extras.as_mut().and_then(|extras| extras.header.as_deref_mut()) else {
                return Ok(None);
            };
            match proxy_header::feed(decoder, &buf[..n], peer) {
                HeaderStep::NeedMore => {}
                HeaderStep::Invalid(why) => return Err(io::Error::new(ErrorKind::InvalidData, why)),
                HeaderStep::Done { client, payload } => {
                    if let Some(extras) = &mut self.extras {
                        extras.header = None;
                        extras.client = (client != peer).then_some(client); // the kernel cannot say it later
                    }
                    (self.phase, self.last_active) = (Phase::Open, turn.now);
                    if payload == n {
                        return Ok(None);
                    }
                    turn.tally.read(n - payload); // the header's bytes are not the client's
                    return Ok(self.echo_frames(&buf[payload..n], turn)?.map(ReadStop::FrameTooLarge));
                }
            }
        }
    }

    /// Still in the [`Phase::Header`] phase: not served yet.
    pub fn awaiting_header(&self) -> bool {
        self.phase == Phase::Header
    }

    /// The drain loop of [`Connection::on_readable`].
    fn read_and_echo(&mut self, buf: &mut [u8], drain: Drain, turn: &mut Turn<'_>) -> io::Result<ReadStop> {
        let mut budget = READ_BUDGET;
        while budget > 0 {
            if self.phase != Phase::Open {
                return Ok(ReadStop::Done);
            }
            // Never read more than we could keep if the kernel refused to take any of it back,
            // nor more than this turn's budget.
            let room = self.read_room(turn.cap).min(buf.len()).min(budget);
            if room == 0 {
                trace!(
                    "token={} pending={} partial={} at cap: not reading (backpressure)",
                    turn.token.0,
                    self.pending_len(),
                    self.partial().len()
                );
                return Ok(ReadStop::Done);
            }
            let n = match self.stream.read(&mut buf[..room]) {
                Ok(0) => return self.peer_closed(turn),
                Ok(n) => n,
                Err(e) if would_block(&e) => {
                    trace!("token={} read WouldBlock: drained", turn.token.0);
                    return Ok(ReadStop::Done);
                }
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => return Err(e),
            };
            trace!("token={} read n={n}", turn.token.0);
            budget -= n;
            turn.tally.read(n);
            self.last_active = turn.now;
            if let Some(oversize) = self.echo_frames(&buf[..n], turn)? {
                return Ok(ReadStop::FrameTooLarge(oversize));
            }
            if n < room && drain == Drain::ToShortRead {
                return Ok(ReadStop::Done); // short read: drained, a new edge will come
            }
        }
        trace!("token={} read budget spent: yielding to other connections", turn.token.0);
        Ok(ReadStop::BudgetSpent)
    }

    /// The bytes this connection may still read: the cap, less what it holds (pending and
    /// partial frame alike, either of which a byte read may end in).
    fn read_room(&self, cap: usize) -> usize {
        cap.saturating_sub(self.held())
    }

    /// Echo the frames that `data` (one read, in the shared buffer) makes whole, and keep
    /// the start of a frame it leaves unfinished. `Some`: a frame over the limit, after them.
    ///
    /// The whole frames of this read go out in one write, straight from the shared buffer
    /// (no copy); a frame begun in an earlier read goes out in the same call (`writev`), its
    /// start from the partial frame. In raw mode all of `data` is whole: the plain echo.
    fn echo_frames(&mut self, data: &[u8], turn: &mut Turn<'_>) -> io::Result<Option<Oversize>> {
        let split = turn.framer.split(self.partial(), data);
        turn.tally.frames(split.frames);
        let whole = &data[..split.whole];
        if !whole.is_empty() && self.partial().is_empty() {
            self.echo(whole, turn)?;
        } else if !whole.is_empty() {
            let start = self.take_partial(); // freed once echoed (or copied to pending)
            trace!("token={} frame whole: {} bytes held + {} read", turn.token.0, start.len(), whole.len());
            self.echo_pair(&start, whole, turn)?;
        }
        let rest = &data[split.whole..];
        match split.rest {
            Rest::Partial if rest.is_empty() => {}
            Rest::Partial => {
                let extras = self.extras_mut(turn.cap);
                extras.partial.extend(rest, turn.framer.frame_bound());
                trace!(
                    "token={} partial frame: held={} (+{})",
                    turn.token.0,
                    extras.partial.len(),
                    rest.len()
                );
            }
            Rest::TooLarge(oversize) => {
                self.phase = Phase::Refused;
                let refused = self.take_partial().len() + rest.len();
                turn.tally.bytes_unsent += refused as u64; // read, and never to be echoed
                self.linger_once_flushed(turn.token)?; // at once if nothing is pending, else after the flush
                return Ok(Some(oversize)); // the loop counts it and logs it
            }
        }
        Ok(None)
    }

    /// `read` returned 0: the client half-closed. Read no more; what is pending still goes
    /// out, then the loop closes us (see [`Connection::interest`]).
    fn peer_closed(&mut self, turn: &mut Turn<'_>) -> io::Result<ReadStop> {
        trace!("token={} read EOF: client half-closed, pending={}", turn.token.0, self.pending_len());
        self.phase = Phase::PeerClosed;
        self.end_partial_frame_at_eof(turn)?;
        Ok(ReadStop::Done)
    }

    /// The client's EOF arrived: a last line without `\n` is whole now, so echo it; a
    /// length frame cut short can never be whole, so drop it, and say so.
    fn end_partial_frame_at_eof(&mut self, turn: &mut Turn<'_>) -> io::Result<()> {
        match turn.framer.at_eof(self.partial()) {
            AtEof::Nothing => Ok(()),
            AtEof::Echo => {
                let line = self.take_partial();
                trace!("token={} EOF ends the last line: n={}", turn.token.0, line.len());
                turn.tally.frames(1);
                self.echo(&line, turn)
            }
            AtEof::Discard(n) => {
                info!("{}: EOF in the middle of a frame: discarded its {n} bytes", self.peer());
                turn.tally.bytes_unsent += self.take_partial().len() as u64;
                Ok(())
            }
        }
    }

    /// Lingering: read what the client still sends and drop it, until its EOF (then the
    /// phase says "closed by the peer", and with nothing pending the loop closes us), or
    /// until the client has acknowledged every byte we sent ([`linger::done`]).
    fn discard_input(&mut self, buf: &mut [u8], token: Token) -> io::Result<ReadStop> {
        let (mut stop, mut budget) = (ReadStop::BudgetSpent, DISCARD_BUDGET);
        while budget > 0 {
            let room = buf.len().min(budget);
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    trace!("token={} read EOF while lingering: closing", token.0);
                    self.phase = Phase::PeerClosed;
                    return Ok(ReadStop::Done);
                }
                Ok(n) => {
                    trace!("token={} lingering: discarded n={n}", token.0);
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
            trace!("token={} lingering: the client has every echo: closing", token.0);
            self.phase = Phase::PeerClosed; // nothing pending: the loop closes us
            return Ok(ReadStop::Done);
        }
        Ok(stop)
    }

    /// Send `data` back: straight to the socket if nothing is queued ahead of it, else
    /// behind the pending bytes, so the order the client sent is the order it gets back.
    fn echo(&mut self, data: &[u8], turn: &mut Turn<'_>) -> io::Result<()> {
        if self.pending_len() > 0 {
            trace!("token={} queued n={} behind pending={}", turn.token.0, data.len(), self.pending_len());
            self.extras_mut(turn.cap).pending.push(data);
            return Ok(());
        }
        let n = write_some(&mut self.stream, data)?;
        turn.tally.wrote(n);
        if n < data.len() {
            // The kernel's send buffer is full: keep the rest; WRITABLE will tell us when
            // there is room again.
            trace!(
                "token={} partial write n={n} of {}: pending={}",
                turn.token.0,
                data.len(),
                data.len() - n
            );
            self.extras_mut(turn.cap).pending.push(&data[n..]);
        } else {
            trace!("token={} write n={n}", turn.token.0);
        }
        Ok(())
    }

    /// [`Connection::echo`] of `head` then `tail` in one gather write (`writev`) when nothing
    /// is pending: a frame whose start was held goes out in one call, like any other.
    fn echo_pair(&mut self, head: &[u8], tail: &[u8], turn: &mut Turn<'_>) -> io::Result<()> {
        if self.pending_len() > 0 {
            self.echo(head, turn)?; // both queue behind what is pending
            return self.echo(tail, turn);
        }
        let n = loop {
            match self.stream.write_vectored(&[IoSlice::new(head), IoSlice::new(tail)]) {
                Ok(n) => break n,
                Err(e) if would_block(&e) => break 0, // the send buffer is full
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => return Err(e),
            }
        };
        turn.tally.wrote(n);
        let total = head.len() + tail.len();
        trace!("token={} write n={n} of {total} (held start + this read)", turn.token.0);
        if n < head.len() {
            let pending = &mut self.extras_mut(turn.cap).pending;
            pending.push(&head[n..]); // what the kernel refused waits, in order
            pending.push(tail);
        } else if n < total {
            self.extras_mut(turn.cap).pending.push(&tail[n - head.len()..]);
        }
        Ok(())
    }

    /// Write pending bytes until they are all out or the kernel takes no more.
    pub fn on_writable(&mut self, turn: &mut Turn<'_>) -> io::Result<()> {
        let result = self.flush(turn);
        self.release_if_empty();
        result
    }

    /// The work of [`Connection::on_writable`].
    fn flush(&mut self, turn: &mut Turn<'_>) -> io::Result<()> {
        if let Some(extras) = &mut self.extras {
            let pending = &mut extras.pending;
            while !pending.is_empty() {
                let asked = pending.len();
                let n = write_some(&mut self.stream, pending.front())?;
                pending.consume(n);
                turn.tally.wrote(n);
                if n > 0 {
                    self.last_active = turn.now;
                }
                trace!("token={} write pending n={n} left={}", turn.token.0, pending.len());
                if n < asked {
                    // The send buffer filled up again. A further write would only say
                    // WouldBlock; the next WRITABLE edge brings us back.
                    break;
                }
            }
        }
        self.linger_once_flushed(turn.token)
    }

    /// Ended by the server (shutting down, refused) and everything is handed to the kernel:
    /// linger, or stay as we are if the kernel holds nothing for this socket either way
    /// (with nothing pending the loop closes us at once: an idle client need not delay the
    /// shutdown). The rule is `crate::lifecycle::linger`'s, as in every model.
    fn linger_once_flushed(&mut self, token: Token) -> io::Result<()> {
        let ended_by_us = matches!(self.phase, Phase::ShuttingDown | Phase::Refused);
        if ended_by_us
            && self.pending_len() == 0
            && linger::begin(&self.stream.sock_ref(), format_args!("token={}", token.0))?
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
    pub fn interest(&self, cap: usize) -> Option<Interest> {
        let reading = match self.phase {
            Phase::Header => true,
            Phase::Open => self.read_room(cap) > 0,
            Phase::Lingering => true, // to see the client's EOF (and discard what precedes it)
            Phase::PeerClosed | Phase::Refused | Phase::ShuttingDown => false,
        };
        let writing = self.pending_len() > 0;
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
    pub fn stop_reading(&mut self, turn: &mut Turn<'_>) -> io::Result<()> {
        if self.phase == Phase::Open {
            self.phase = Phase::ShuttingDown;
        }
        if !self.partial().is_empty() {
            // Its end will never be read now, so it can never be echoed whole.
            let discarded = self.take_partial().len();
            info!("{}: shutting down in the middle of a frame: discarded its {discarded} bytes", self.peer());
            turn.tally.bytes_unsent += discarded as u64;
        }
        let result = self.linger_once_flushed(turn.token);
        self.release_if_empty();
        result
    }

    /// The socket, for the registry.
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// The client's address: the one a PROXY header named, else the socket's peer, asked of
    /// the kernel (for a log line; a TCP socket already reset has none any more).
    pub fn peer(&self) -> Peer {
        match self.extras.as_ref().and_then(|extras| extras.client) {
            Some(client) => client,
            None => self.stream.peer(),
        }
    }

    /// When bytes last moved (in the [`Phase::Header`] phase: the accept).
    pub fn last_active(&self) -> Stamp {
        self.last_active
    }

    /// The bytes it holds, read and not yet echoed (pending, and a partial frame): what it
    /// leaves unsent if it closes now.
    pub fn held(&self) -> usize {
        self.extras.as_ref().map_or(0, |extras| extras.pending.len() + extras.partial.len())
    }

    /// Bytes waiting for the kernel to take them.
    fn pending_len(&self) -> usize {
        self.extras.as_ref().map_or(0, |extras| extras.pending.len())
    }

    /// The start of an unfinished frame (empty if none).
    fn partial(&self) -> &[u8] {
        self.extras.as_ref().map_or(&[], |extras| extras.partial.as_slice())
    }

    /// Hand the partial frame over (empty if none); the connection holds none after.
    fn take_partial(&mut self) -> Vec<u8> {
        self.extras.as_mut().map_or_else(Vec::new, |extras| extras.partial.take())
    }

    /// The extras, allocated now if this is the first time they are needed (`cap` bounds
    /// the bytes they may hold).
    fn extras_mut(&mut self, cap: usize) -> &mut Extras {
        self.extras.get_or_insert_with(|| Box::new(Extras::new(cap)))
    }

    /// Free the extras once nothing in them is needed: back to 32 bytes. Called at the end
    /// of every method that may have emptied them.
    fn release_if_empty(&mut self) {
        if self.extras.as_ref().is_some_and(|extras| extras.unneeded()) {
            self.extras = None;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framing;
    use crate::lifecycle::Clock;
    use crate::net::{SocketOptions, kernel_queues};
    use socket2::SockRef;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    const RAW: Framer = Framer::new(Framing::Raw, 1);
    /// A bound on every wait below: these tests never sleep for a result, they poll for it.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A connection as the loop holds it: the limits it lends and the counts it keeps.
    struct Served {
        conn: Connection,
        framer: Framer,
        cap: usize,
        clock: Clock,
        /// Everything counted so far (never published).
        tally: IoTally,
    }

    impl Served {
        fn new(stream: Stream, framer: Framer, cap: usize) -> Served {
            let clock = Clock::new(Instant::now());
            let conn = Connection::new(stream, 0, false, cap, clock.stamp(Instant::now()));
            Served { conn, framer, cap, clock, tally: IoTally::default() }
        }

        /// The connection, and what the loop lends it for one call.
        fn parts(&mut self) -> (&mut Connection, Turn<'_>) {
            let now = self.clock.stamp(Instant::now());
            let turn =
                Turn { token: Token(0), now, framer: self.framer, cap: self.cap, tally: &mut self.tally };
            (&mut self.conn, turn)
        }

        fn readable(&mut self, buf: &mut [u8], drain: Drain) -> ReadStop {
            let (conn, mut turn) = self.parts();
            conn.on_readable(buf, drain, &mut turn).unwrap()
        }

        fn writable(&mut self) {
            let (conn, mut turn) = self.parts();
            conn.on_writable(&mut turn).unwrap();
        }

        fn interest(&self) -> Option<Interest> {
            self.conn.interest(self.cap)
        }

        /// Bytes (read, written back, still pending).
        fn byte_counts(&self) -> (u64, u64, usize) {
            (self.tally.bytes_read, self.tally.bytes_echoed, self.conn.pending_len())
        }
    }

    impl std::ops::Deref for Served {
        type Target = Connection;
        fn deref(&self) -> &Connection {
            &self.conn
        }
    }

    /// Our end of a Unix socket pair as a connection (non-blocking, with a send buffer of
    /// `send_buffer` bytes if given), and the client's end.
    fn unix_connection(framer: Framer, cap: usize, send_buffer: Option<usize>) -> (Served, UnixStream) {
        let (ours, client) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        if let Some(size) = send_buffer {
            SockRef::from(&ours).set_send_buffer_size(size).unwrap();
        }
        client.set_nonblocking(true).unwrap();
        let stream = Stream::from_fd(ours.into(), false);
        (Served::new(stream, framer, cap), client)
    }

    /// Bytes that say where they are: a lost or reordered byte cannot go unnoticed.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// The client reads (non-blocking) and the connection writes what it owes, as WRITABLE
    /// events would, until nothing is pending and the client has every byte echoed so far:
    /// `got`, everything the client has read.
    fn client_takes_the_echo(conn: &mut Served, client: &mut UnixStream, got: &mut Vec<u8>) {
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
            conn.writable();
        }
    }

    /// Readable events, as the loop handles them with `drain`: read and echo until the
    /// connection stops reading (not the budget), or `max_events`.
    fn serve_readable(conn: &mut Served, drain: Drain, max_events: usize) {
        let mut buf = vec![0; 64 * 1024];
        for _ in 0..max_events {
            if conn.readable(&mut buf, drain) == ReadStop::Done {
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
            assert_eq!(conn.readable(&mut buf, Drain::ToShortRead), ReadStop::BudgetSpent);
            assert_eq!(conn.byte_counts().0, (turn * READ_BUDGET) as u64, "turn {turn}");
        }
        assert_eq!(conn.readable(&mut buf, Drain::ToWouldBlock), ReadStop::Done);
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
        let mut conn = Served::new(stream, RAW, 1 << 20);
        let mut buf = vec![0; 64 * 1024];
        conn.readable(&mut buf, Drain::ToShortRead);
        assert_eq!(conn.byte_counts().0, 3, "the read stopped at the urgent mark, 4 bytes behind it");
        conn.readable(&mut buf, Drain::ToWouldBlock);
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
        assert_eq!(conn.tally.bytes_unsent, read - 3, "the refused bytes count as unsent");
        assert_eq!(conn.held(), 0, "nothing left to count at close");
    }

    /// Bytes held only while they wait: a partial write or a frame's start allocates the
    /// connection's `Extras`, and it is freed (back to 32 bytes, no heap) once they are gone.
    #[test]
    fn held_bytes_live_out_of_line_only_while_they_wait() {
        let (mut conn, mut client) =
            unix_connection(Framer::new(Framing::Line, 64 * 1024), 1 << 20, Some(4096));
        assert!(conn.extras.is_none(), "a new connection holds nothing");
        client.write_all(b"half a li").unwrap();
        serve_readable(&mut conn, Drain::ToShortRead, 1);
        assert_eq!(conn.partial(), b"half a li");
        client.write_all(b"ne\n").unwrap();
        serve_readable(&mut conn, Drain::ToShortRead, 1);
        assert!(conn.extras.is_none(), "the frame went out whole: nothing held, no memory");
        let sent = [b"x".repeat(48 * 1024), b"\n".to_vec()].concat();
        client.write_all(&sent).unwrap();
        serve_readable(&mut conn, Drain::ToShortRead, 4);
        assert!(conn.extras.is_some() && conn.pending_len() > 0, "a partial write is held");
        let mut got = Vec::new();
        client_takes_the_echo(&mut conn, &mut client, &mut got);
        assert_eq!(got.len(), b"half a line\n".len() + sent.len());
        assert!(conn.extras.is_none(), "all out: freed");
        assert_eq!(conn.tally.frames, 2);
    }

    /// A guard, not the measurement (that is `echoloop bench --mode idle` against the
    /// server: docs/scale.md): an idle connection is 32 bytes, and growing it should be a
    /// decision, made in docs/design.md ("What a connection costs").
    #[test]
    fn an_idle_connection_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Connection>(), 32);
    }
}
