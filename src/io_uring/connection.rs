//! One client connection of the io-uring model: where it is in its life, which requests of
//! it the kernel holds, and the bytes it owes its client.
//!
//! The loop (`mod.rs`) turns completions into calls here, then asks what to request next
//! ([`Connection::recv_room`], [`Connection::next_send`]). The connection never touches the
//! ring, so its whole echo protocol can be read in this file.
//!
//! **Who owns the bytes when.** A recv completes into a provided buffer (see `buffers.rs`).
//! - Nothing owed and no send in flight (the common case): the send goes straight out of
//!   that buffer, with `MSG_DONTWAIT`, so it completes at once rather than parking in the
//!   kernel with our buffer: a buffer is out of the ring for one loop turn at most, and a
//!   client that does not read cannot pin the ring. Whatever that send did not take is
//!   copied to the *outbox*, and the buffer goes back to the ring.
//! - A send in flight already: the bytes are copied behind it into the [`PendingBuf`], and
//!   the buffer goes back to the ring at once.
//! - The outbox is the one thing a waiting send points at: it is not touched until that
//!   send completes, then refilled from the `PendingBuf`. Memory the kernel reads must not
//!   move, and a `PendingBuf` slides and grows as it pleases, so it is never sent from.
//!
//! With `--framing line|length` a recv is not a message: the same [`Framer`] as the event
//! loop's says how much of it ends whole frames. Those are what goes straight out of the
//! buffer; the start of a frame cut off by the end of the recv is copied into a
//! [`PartialFrame`] until the recv that completes it (then the frame goes out through the
//! outbox, its start first). A frame over `--max-frame` ends the connection as in the event
//! loop: the frames before it are echoed, then it lingers and closes.
//!
//! One send at a time per connection: a second send could run while the first was short,
//! and bytes would leave out of order. One recv at a time, for at most the room left under
//! `--max-pending` ([`Connection::recv_room`]), so what is owed never exceeds the cap
//! (backpressure: at the cap no recv is armed, and the client's bytes wait in the kernel).
//! A multishot recv keeps receiving, a completion per buffer (or bundle), until it has
//! brought the bytes it was armed for; the kernel counts them (`IORING_RECV_MSHOT_LIM`), so
//! the cap holds without a cancel racing the kernel: at the limit the recv ends, and it is
//! armed again only when there is room. A cancel stops it only when the connection stops
//! receiving for another reason (a frame over `--max-frame`, shutdown); what it brings
//! meanwhile is echoed (shutdown) or discarded (refused).
//!
//! **What a connection costs.** A connection waiting for its client (most of them, most of
//! the time) has a recv armed and owes nothing: 40 bytes here, its socket, when bytes last
//! moved, the send in flight, which listener accepted it, its phase and three flags, and one
//! pointer to what it needs only now and then ([`Extras`]: the outbox and the pending bytes
//! beyond a send straight from a provided buffer, a frame's start, a PROXY header being
//! received, the client it named), allocated when first needed and freed when nothing in it
//! is needed. The framing, the cap and the buffer size are the loop's, lent with each call; the counts go straight into
//! the loop's tally for the turn; the client's address is asked of the kernel for a log
//! line. docs/design.md ("What a connection costs") has the byte count.

use std::io;
use std::os::fd::RawFd;

use log::{info, trace};

use crate::buffer::{PartialFrame, PendingBuf};
use crate::framing::{AtEof, Framer, Oversize, Rest};
use crate::lifecycle::proxy_header::{self, HeaderStep};
use crate::lifecycle::{Stamp, linger};
use crate::net::{Peer, Stream};
use crate::proxy_protocol::ProxyDecoder;
use crate::stats::IoTally;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// `--proxy-protocol`: receiving the PROXY header, echoing nothing yet
    /// (`crate::lifecycle::proxy_header`).
    Header,
    /// Receiving and echoing.
    Open,
    /// The client half-closed (recv returned 0): finish the echo, then close.
    PeerClosed,
    /// A frame was over `--max-frame`: receive nothing more, finish echoing the frames
    /// before it, then linger (as when shutting down) and close.
    Refused,
    /// The server is shutting down: receive nothing more, send what is owed, then close.
    ShuttingDown,
    /// Shutting down with nothing left to send, but the kernel still holds bytes either way:
    /// our FIN went out behind the echoes, and we receive and discard until the client
    /// closes or has acknowledged everything. Closing at once would make the kernel answer
    /// unread bytes with a reset that destroys echoes not yet delivered
    /// (`crate::lifecycle::linger` explains it in full).
    Lingering,
    /// Being closed: its requests are being cancelled; the slot is freed when the last one
    /// has completed, because until then the kernel may still point into its memory.
    Closing,
}

/// The one send a connection may have in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sending {
    /// Straight out of provided buffer `bid` (`len` bytes, `MSG_DONTWAIT`). A recv brings
    /// at most one buffer, and a buffer is at most `u32::MAX` bytes (`--uring-buffer-size`).
    Provided { bid: u16, len: u32 },
    /// Out of the outbox; the kernel may wait for room in the socket.
    Outbox,
}

/// What the loop does with the provided buffer a recv completed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BufferUse {
    /// Send its first `len` bytes straight out of it (whole frames: all it holds, unframed);
    /// it goes back to the ring when that send completes.
    SendFromIt { len: usize },
    /// The bytes were copied (or discarded): give it back to the ring now.
    GiveBack,
}

/// What the loop lends the connection a completion is for: the time, the cap, and where
/// the counts go. Lent, not kept, so that no connection carries a copy.
#[derive(Debug)]
pub(super) struct Turn<'a> {
    /// This turn's time, stamped on the connection when bytes move.
    pub now: Stamp,
    /// Where frames end (`raw`: every recv is whole).
    pub framer: Framer,
    /// The most a connection may hold, owed and partial frame together: `--max-pending`,
    /// raised to hold one whole frame (`ServerConfig::connection_cap`).
    pub cap: usize,
    /// This turn's receives and bytes, which the loop publishes once per turn.
    pub tally: &'a mut IoTally,
}

/// One accepted client: 40 bytes while it owes nothing, which is most of its life.
#[derive(Debug)]
pub(super) struct Connection {
    /// The socket (blocking mode is fine: io_uring never blocks the thread on it). Its
    /// descriptor names it in requests.
    stream: Stream,
    /// When bytes last moved in either direction (for the idle timeout); in the
    /// [`Phase::Header`] phase, the accept (for `--proxy-timeout`).
    last_active: Stamp,
    /// What it needs only now and then; `None` (no heap memory) while that is nothing.
    extras: Option<Box<Extras>>,
    /// The send of ours in the kernel, if any.
    sending: Option<Sending>,
    /// Which of the loop's listeners accepted it (where its counts go).
    listener: u16,
    /// Decides, with the bytes owed, what to request next.
    phase: Phase,
    /// A recv of ours is in the kernel (a multishot one until its last completion).
    recv_armed: bool,
    /// A cancel of that recv alone has been queued: the connection takes no more bytes.
    recv_cancel_queued: bool,
    /// A cancel for this connection's requests has been queued (once is enough).
    cancel_queued: bool,
}

/// What a connection needs only now and then, out of line: allocated when first needed,
/// freed when nothing in it is needed any more ([`Connection::release_if_empty`]). (Behind
/// a PROXY header that named another client, `client` keeps it for the connection's life:
/// the kernel cannot be asked for that address.)
#[derive(Debug)]
struct Extras {
    /// Bytes a waiting send points at (`outbox[outbox_start..]`); never changed while
    /// `sending == Some(Outbox)`, and never freed then: the `Box` keeps it in place, and
    /// it is released only with no send in flight.
    outbox: Vec<u8>,
    outbox_start: usize,
    /// Bytes received behind the send in flight. Capped with everything else owed, and the
    /// partial frame, at the cap (the recv asks for no more than the room left).
    pending: PendingBuf,
    /// The start of a frame whose end has not arrived yet; never a whole frame.
    partial: PartialFrame,
    /// A frame over `--max-frame` just refused the connection: for the loop to count and
    /// log (through the server's throttle), once.
    oversize: Option<Oversize>,
    /// The PROXY header so far, from the accept until it is whole (`--proxy-protocol`);
    /// still there if the connection closes before: it was never served.
    header: Option<Box<ProxyDecoder>>,
    /// The client a PROXY header named, when it is not the socket's peer.
    client: Option<Peer>,
}

impl Extras {
    fn new(cap: usize) -> Extras {
        Extras {
            outbox: Vec::new(),
            outbox_start: 0,
            pending: PendingBuf::new(cap),
            partial: PartialFrame::default(),
            oversize: None,
            header: None,
            client: None,
        }
    }

    /// Bytes owed: the outbox's rest and the pending bytes.
    fn owed(&self) -> usize {
        (self.outbox.len() - self.outbox_start) + self.pending.len()
    }

    /// Nothing in it is needed any more.
    fn unneeded(&self) -> bool {
        self.owed() == 0
            && self.partial.len() == 0
            && self.oversize.is_none()
            && self.header.is_none()
            && self.client.is_none()
    }
}

impl Connection {
    /// A connection just accepted by the loop's listener `listener` at `now`, nothing
    /// requested yet. With `proxy_header`, it begins by receiving a PROXY header (its
    /// [`Extras`] hold the header so far; `max_pending` bounds what they may hold).
    pub(super) fn new(
        stream: Stream,
        listener: u16,
        proxy_header: bool,
        max_pending: usize,
        now: Stamp,
    ) -> Connection {
        let header = || Box::new(Extras { header: Some(Box::default()), ..Extras::new(max_pending) });
        Connection {
            stream,
            last_active: now,
            extras: proxy_header.then(header),
            sending: None,
            listener,
            phase: if proxy_header { Phase::Header } else { Phase::Open },
            recv_armed: false,
            recv_cancel_queued: false,
            cancel_queued: false,
        }
    }

    /// Which of the loop's listeners accepted it.
    pub(super) fn listener(&self) -> usize {
        usize::from(self.listener)
    }

    /// Bytes received and not yet taken by the kernel to send back.
    fn owed(&self) -> usize {
        let provided = match self.sending {
            Some(Sending::Provided { len, .. }) => len as usize,
            _ => 0,
        };
        provided + self.extras.as_ref().map_or(0, |extras| extras.owed())
    }

    /// How many bytes the next recv may bring in all, if one should be armed now: while
    /// open, the room under the cap `cap` (none at the cap: backpressure); while receiving
    /// the PROXY header, the cap; while lingering, any amount (it is discarded).
    pub(super) fn recv_room(&self, cap: usize) -> Option<usize> {
        if self.recv_armed {
            return None;
        }
        match self.phase {
            Phase::Open => {
                let room = cap.saturating_sub(self.owed() + self.partial().len());
                if room == 0 {
                    trace!("fd={} owed={} at cap: no recv (backpressure)", self.fd(), self.owed());
                }
                (room > 0).then_some(room)
            }
            Phase::Header => Some(cap),
            Phase::Lingering => Some(usize::MAX),
            Phase::PeerClosed | Phase::Refused | Phase::ShuttingDown | Phase::Closing => None,
        }
    }

    /// A recv was armed, or brought its last completion.
    pub(super) fn set_recv_armed(&mut self, armed: bool) {
        self.recv_armed = armed;
        if !armed {
            self.recv_cancel_queued = false;
        }
    }

    /// True once, when a (multishot) recv is still armed but the connection takes no more
    /// bytes (refused, shutting down): the loop queues a cancel of it.
    pub(super) fn recv_to_cancel(&mut self) -> bool {
        let unwanted = matches!(self.phase, Phase::Refused | Phase::ShuttingDown);
        let cancel = self.recv_armed && unwanted && !self.recv_cancel_queued && !self.cancel_queued;
        self.recv_cancel_queued |= cancel;
        cancel
    }

    /// A recv brought `data` in provided buffer `bid`: the whole frames in it (all of it,
    /// unframed) go straight out of the buffer if nothing is owed and no frame was begun,
    /// else behind what is; the start of an unfinished frame is kept.
    pub(super) fn received(&mut self, data: &[u8], bid: u16, turn: &mut Turn<'_>) -> BufferUse {
        // PeerClosed: the stream ended, or lingering just did, part-way through a bundle
        // (or with a recv armed while lingering still in flight): what a recv armed before
        // that brings is the lingering client's, discarded like the rest of it. (After EOF
        // a stream brings nothing more, so no echo is ever lost here.)
        if matches!(self.phase, Phase::Lingering | Phase::PeerClosed | Phase::Closing | Phase::Refused) {
            trace!("fd={} discarded n={} ({:?})", self.fd(), data.len(), self.phase);
            if self.phase == Phase::Lingering && linger::done(&self.stream.sock_ref()) {
                trace!("fd={} lingering: the client has every echo: closing", self.fd());
                self.phase = Phase::PeerClosed; // nothing owed: the loop closes us
            }
            return BufferUse::GiveBack;
        }
        turn.tally.read(data.len());
        self.last_active = turn.now;
        let (whole, start) = self.split_frames(data, turn);
        if whole > 0 && start.is_empty() && self.sending.is_none() && self.owed() == 0 {
            trace!("fd={} recv n={}: send from buffer {bid}{}", self.fd(), data.len(), unframed(whole, data));
            // A recv brings at most one buffer, and a buffer is at most `u32::MAX` bytes.
            self.sending = Some(Sending::Provided { bid, len: whole as u32 });
            self.release_if_empty(); // a raw recv left nothing behind
            return BufferUse::SendFromIt { len: whole };
        }
        trace!("fd={} recv n={}: {whole} queued behind owed={}", self.fd(), data.len(), self.owed());
        if whole > 0 {
            let pending = &mut self.extras_mut(turn.cap).pending;
            pending.push(&start); // a frame's start goes before its end
            pending.push(&data[..whole]);
        }
        self.release_if_empty();
        BufferUse::GiveBack
    }

    /// Where whole frames end in what was held and `data`: how many bytes of `data` end
    /// whole frames, and the start of the first of them held from earlier recvs (empty if
    /// none). The start of an unfinished frame is kept; a frame over the limit refuses the
    /// connection (after the frames before it), and its bytes count as never echoed.
    fn split_frames(&mut self, data: &[u8], turn: &mut Turn<'_>) -> (usize, Vec<u8>) {
        let split = turn.framer.split(self.partial(), data);
        turn.tally.frames(split.frames);
        let start = if split.whole > 0 { self.take_partial() } else { Vec::new() };
        let rest = &data[split.whole..];
        match split.rest {
            Rest::Partial if rest.is_empty() => {}
            Rest::Partial => self.extras_mut(turn.cap).partial.extend(rest, turn.framer.frame_bound()),
            Rest::TooLarge(oversize) => {
                self.phase = Phase::Refused;
                let refused = self.take_partial().len() + rest.len();
                turn.tally.bytes_unsent += refused as u64; // read, and never to be echoed
                self.extras_mut(turn.cap).oversize = Some(oversize);
            }
        }
        (split.whole, start)
    }

    /// The recv saw EOF: the client sends no more. A last line without its `\n` is whole
    /// now, and is echoed; a length frame cut short never can be, and is dropped.
    pub(super) fn received_eof(&mut self, turn: &mut Turn<'_>) {
        trace!("fd={} recv EOF ({:?}), owed={}", self.fd(), self.phase, self.owed());
        if self.phase == Phase::Closing {
            return;
        }
        self.phase = Phase::PeerClosed;
        match turn.framer.at_eof(self.partial()) {
            AtEof::Nothing => {}
            AtEof::Echo => {
                turn.tally.frames(1);
                let line = self.take_partial();
                self.extras_mut(turn.cap).pending.push(&line);
            }
            AtEof::Discard(n) => {
                info!("{}: EOF in the middle of a frame: discarded its {n} bytes", self.peer());
                turn.tally.bytes_unsent += self.take_partial().len() as u64;
            }
        }
        self.release_if_empty();
    }

    /// The start of an unfinished frame (empty if none).
    fn partial(&self) -> &[u8] {
        self.extras.as_ref().map_or(&[], |extras| extras.partial.as_slice())
    }

    /// Hand the partial frame over (empty if none); the connection holds none after.
    fn take_partial(&mut self) -> Vec<u8> {
        self.extras.as_mut().map_or_else(Vec::new, |extras| extras.partial.take())
    }

    /// The frame over `--max-frame` that just refused it, if one did (once).
    pub(super) fn take_oversize(&mut self) -> Option<Oversize> {
        let oversize = self.extras.as_mut().and_then(|extras| extras.oversize.take());
        self.release_if_empty();
        oversize
    }

    /// The send out of a provided buffer completed having taken `n` bytes of `data` (0 for
    /// "the socket was full"). What it did not take is copied to the outbox, so the loop can
    /// give the buffer back right after this.
    pub(super) fn sent_from_buffer(&mut self, n: usize, data: &[u8], turn: &mut Turn<'_>) {
        debug_assert!(
            matches!(self.sending, Some(Sending::Provided { len, .. }) if len as usize == data.len())
        );
        self.sending = None;
        if n < data.len() {
            trace!("fd={} partial send n={n} of {}: rest to the outbox", self.fd(), data.len());
            // Nothing else is owed: a provided send goes only when nothing is (`received`).
            let extras = self.extras_mut(turn.cap);
            debug_assert!(extras.owed() == 0, "a provided send with bytes owed behind it");
            extras.outbox.clear();
            extras.outbox_start = 0;
            extras.outbox.extend_from_slice(&data[n..]);
        }
        self.count_sent(n, turn);
    }

    /// The send out of the outbox completed having taken `n` bytes.
    pub(super) fn sent_from_outbox(&mut self, n: usize, turn: &mut Turn<'_>) {
        debug_assert_eq!(self.sending, Some(Sending::Outbox));
        self.sending = None;
        if let Some(owed) = &mut self.extras {
            owed.outbox_start += n;
            trace!(
                "fd={} outbox send n={n} left={}",
                self.stream.raw_fd(),
                owed.outbox.len() - owed.outbox_start
            );
        }
        self.count_sent(n, turn);
    }

    /// A send completed having taken `n` bytes: counted, and what is owed freed if that
    /// was the last of it.
    fn count_sent(&mut self, n: usize, turn: &mut Turn<'_>) {
        turn.tally.wrote(n);
        if n > 0 {
            self.last_active = turn.now;
        }
        self.release_if_empty();
    }

    /// The next send out of the outbox, if one should go now: the outbox's rest, else
    /// everything pending moved into it. Marks it in flight; the slice stays put until
    /// [`Connection::sent_from_outbox`]. With nothing owed, the memory is given back.
    pub(super) fn next_send(&mut self) -> Option<&[u8]> {
        if self.sending.is_some() || self.phase == Phase::Closing {
            return None;
        }
        self.release_if_empty(); // nothing owed: an idle connection holds no buffer
        let owed = self.extras.as_mut().filter(|extras| extras.owed() > 0)?;
        if owed.outbox_start == owed.outbox.len() {
            owed.outbox.clear();
            owed.outbox_start = 0;
            owed.outbox.extend_from_slice(owed.pending.front());
            owed.pending.consume(owed.pending.len());
        }
        self.sending = Some(Sending::Outbox);
        Some(&owed.outbox[owed.outbox_start..])
    }

    /// The extras, allocated now if this is the first time they are needed (`cap` bounds
    /// the bytes they may hold).
    fn extras_mut(&mut self, cap: usize) -> &mut Extras {
        self.extras.get_or_insert_with(|| Box::new(Extras::new(cap)))
    }

    /// Free the extras once nothing in them is needed, and only with no send in flight (a
    /// send out of the outbox points into it): back to 40 bytes.
    fn release_if_empty(&mut self) {
        let Some(extras) = self.extras.as_mut().filter(|_| self.sending.is_none()) else { return };
        if extras.owed() == 0 {
            (extras.outbox, extras.outbox_start) = (Vec::new(), 0); // no send points into it
        }
        if extras.unneeded() {
            self.extras = None;
        }
    }

    /// Everything received was sent and the client is done, or the server is shutting
    /// down and the connection need not linger: close it.
    pub(super) fn finished(&self) -> bool {
        matches!(self.phase, Phase::PeerClosed | Phase::Refused | Phase::ShuttingDown)
            && self.sending.is_none()
            && self.owed() == 0
    }

    /// The server is shutting down: receive nothing more (an armed recv is cancelled by the
    /// loop; bytes it still brings are echoed). A client that half-closed finishes as before.
    pub(super) fn stop_receiving(&mut self) {
        if self.phase == Phase::Open {
            self.phase = Phase::ShuttingDown;
        }
    }

    /// Shutting down and nothing left to send: linger if the kernel still holds bytes either
    /// way (see [`Phase::Lingering`]); if not, stay, and [`Connection::finished`] says close.
    /// The rule is `crate::lifecycle::linger`'s, as in every model.
    pub(super) fn linger_once_flushed(&mut self) -> io::Result<()> {
        let flushed = self.sending.is_none() && self.owed() == 0;
        if matches!(self.phase, Phase::ShuttingDown | Phase::Refused)
            && flushed
            && linger::begin(&self.stream.sock_ref(), format_args!("fd={}", self.fd()))?
        {
            self.phase = Phase::Lingering;
        }
        Ok(())
    }

    /// Lingering, and the client has acknowledged everything: closing cannot lose a byte.
    pub(super) fn done_lingering(&self) -> bool {
        self.phase == Phase::Lingering && linger::done(&self.stream.sock_ref())
    }

    /// Start closing. True if requests of ours are in the kernel and no cancel is queued
    /// yet: the loop queues one, and frees the slot when the last completion is in.
    pub(super) fn begin_close(&mut self) -> bool {
        self.phase = Phase::Closing;
        let cancel = self.in_flight() && !self.cancel_queued;
        self.cancel_queued |= cancel;
        cancel
    }

    /// The kernel holds a request of ours.
    pub(super) fn in_flight(&self) -> bool {
        self.recv_armed || self.sending.is_some()
    }

    /// Where in its life it is.
    pub(super) fn phase(&self) -> Phase {
        self.phase
    }

    /// The send in flight, if any.
    pub(super) fn sending(&self) -> Option<Sending> {
        self.sending
    }

    /// Its descriptor.
    pub(super) fn fd(&self) -> RawFd {
        self.stream.raw_fd()
    }

    /// The client's address: the one a PROXY header named, else the socket's peer, asked of
    /// the kernel (for a log line).
    pub(super) fn peer(&self) -> Peer {
        match self.extras.as_ref().and_then(|extras| extras.client) {
            Some(client) => client,
            None => self.stream.peer(),
        }
    }

    /// A recv completed into `data` while the PROXY header is not whole. `Ok(true)`: it is
    /// now, and the connection is open (the bytes after the header wait in `pending` for
    /// the next send); `Ok(false)`: not yet; `Err`: not a valid header (why). The provided
    /// buffer goes back to the ring in every case.
    pub(super) fn received_header(&mut self, data: &[u8], turn: &mut Turn<'_>) -> Result<bool, String> {
        let peer = self.stream.peer();
        let Some(extras) = self.extras.as_mut() else { return Ok(true) };
        let Some(decoder) = extras.header.as_deref_mut() else { return Ok(true) };
        match proxy_header::feed(decoder, data, peer) {
            HeaderStep::NeedMore => Ok(false),
            HeaderStep::Invalid(why) => Err(why),
            HeaderStep::Done { client, payload } => {
                extras.header = None;
                extras.client = (client != peer).then_some(client); // the kernel cannot say it later
                (self.phase, self.last_active) = (Phase::Open, turn.now);
                if payload < data.len() {
                    let rest = &data[payload..];
                    turn.tally.read(rest.len()); // the header's bytes are not the client's
                    let (whole, start) = self.split_frames(rest, turn);
                    let pending = &mut self.extras_mut(turn.cap).pending;
                    pending.push(&start);
                    pending.push(&rest[..whole]);
                }
                self.release_if_empty();
                Ok(true)
            }
        }
    }

    /// Its PROXY header is not whole yet (even while closing): it was never served.
    pub(super) fn awaiting_header(&self) -> bool {
        self.extras.as_ref().is_some_and(|extras| extras.header.is_some())
    }

    /// When bytes last moved.
    pub(super) fn last_active(&self) -> Stamp {
        self.last_active
    }

    /// Bytes received and never sent back: what it leaves unsent if it closes now (what it
    /// owes, and a partial frame).
    pub(super) fn unsent(&self) -> usize {
        self.owed() + self.partial().len()
    }
}

/// For the trace: how much of a recv's `data` goes out, when not all of it does.
fn unframed(whole: usize, data: &[u8]) -> String {
    if whole == data.len() { String::new() } else { format!(" ({whole} bytes of whole frames)") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framing;
    use std::os::unix::net::UnixStream;

    /// A connection as the loop holds it: the framing and cap it lends and the counts it keeps.
    struct Served {
        conn: Connection,
        framer: Framer,
        cap: usize,
        tally: IoTally,
        /// The other end of the socket pair, kept open.
        _peer: UnixStream,
    }

    impl Served {
        /// A raw connection over one end of a socket pair.
        fn new(cap: usize) -> Served {
            Served::framed(Framer::new(Framing::Raw, 0), cap)
        }

        /// A connection with `framer` over one end of a socket pair.
        fn framed(framer: Framer, cap: usize) -> Served {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let stream = Stream::from_fd(ours.into(), false);
            let conn = Connection::new(stream, 0, false, cap, Stamp::default());
            Served { conn, framer, cap, tally: IoTally::default(), _peer: theirs }
        }

        /// The connection, and what the loop lends it for one completion.
        fn parts(&mut self) -> (&mut Connection, Turn<'_>) {
            let turn =
                Turn { now: Stamp::default(), framer: self.framer, cap: self.cap, tally: &mut self.tally };
            (&mut self.conn, turn)
        }

        fn received_eof(&mut self) {
            let (conn, mut turn) = self.parts();
            conn.received_eof(&mut turn);
        }

        fn received(&mut self, data: &[u8], bid: u16) -> BufferUse {
            let (conn, mut turn) = self.parts();
            conn.received(data, bid, &mut turn)
        }

        fn sent_from_buffer(&mut self, n: usize, data: &[u8]) {
            let (conn, mut turn) = self.parts();
            conn.sent_from_buffer(n, data, &mut turn);
        }

        fn sent_from_outbox(&mut self, n: usize) {
            let (conn, mut turn) = self.parts();
            conn.sent_from_outbox(n, &mut turn);
        }

        fn recv_room(&self) -> Option<usize> {
            self.conn.recv_room(self.cap)
        }
    }

    /// Lingering ends part-way through a bundle (the client has every echo): the bundle's
    /// later buffers are the lingering client's too, discarded, not taken as bytes to echo
    /// (which, past `--max-pending`, stopped the server on `PendingBuf`'s cap).
    #[test]
    fn a_bundle_that_ends_lingering_is_discarded_to_its_end() {
        let mut s = Served::new(100);
        s.conn.phase = Phase::Lingering; // nothing owed, nothing unacknowledged: done at once
        assert_eq!(s.received(&[1; 64], 0), BufferUse::GiveBack);
        assert_eq!(s.conn.phase, Phase::PeerClosed, "lingering is over");
        assert_eq!(s.received(&[2; 4096], 1), BufferUse::GiveBack, "the bundle's next buffer");
        assert_eq!(s.conn.owed(), 0, "nothing taken to echo");
        assert_eq!(s.tally.bytes_read, 0, "discarded, as lingering discards");
    }

    /// Lines: the whole ones go out of the buffer; a line cut by the end of a recv waits,
    /// and goes out (start first) when the recv with its end arrives, behind what is owed.
    #[test]
    fn whole_lines_go_out_of_the_buffer_and_a_cut_line_waits_for_its_end() {
        let mut s = Served::framed(Framer::new(Framing::Line, 100), 100);
        assert_eq!(s.received(b"one\ntwo\nthr", 0), BufferUse::SendFromIt { len: 8 });
        assert_eq!(s.recv_room(), Some(100 - 8 - 3), "the cut line counts against the cap");
        assert_eq!(s.received(b"ee\nfo", 1), BufferUse::GiveBack, "a send is in flight");
        s.sent_from_buffer(8, b"one\ntwo\n");
        assert_eq!(s.conn.next_send(), Some(&b"three\n"[..]));
        s.sent_from_outbox(6);
        assert_eq!(s.received(b"ur", 2), BufferUse::GiveBack, "no whole line");
        assert_eq!(s.conn.next_send(), None);
        s.received_eof(); // the last line ends with the stream
        assert_eq!(s.conn.next_send(), Some(&b"four"[..]));
        s.sent_from_outbox(4);
        assert!(s.conn.finished());
        assert_eq!(s.tally.frames, 4);
        assert!(s.conn.extras.is_none(), "all out: nothing held");
    }

    /// A frame over the limit: the frames before it are echoed, nothing more is received,
    /// and once they are out the connection is finished (nothing to linger for here: the
    /// other end read nothing, but sent nothing more either). The loop is told once.
    #[test]
    fn a_frame_over_the_limit_refuses_the_connection_after_the_frames_before_it() {
        let mut s = Served::framed(Framer::new(Framing::Line, 8), 64);
        assert_eq!(s.received(b"ok\nthis line is too long", 0), BufferUse::SendFromIt { len: 3 });
        assert_eq!(s.conn.phase(), Phase::Refused);
        assert!(s.conn.take_oversize().is_some() && s.conn.take_oversize().is_none(), "told once");
        assert_eq!(s.recv_room(), None, "refused: no more recvs");
        assert!(!s.conn.finished(), "the echo of the frame before it is still out");
        s.sent_from_buffer(3, b"ok\n");
        assert!(s.conn.finished());
        assert_eq!(s.tally.bytes_unsent, 21, "the refused bytes count as never echoed");
    }

    /// A multishot recv still armed when a frame refuses the connection: cancelled once, and
    /// what it brings before the cancel lands is discarded, neither echoed nor counted.
    #[test]
    fn a_refused_connection_cancels_its_multishot_recv_once_and_discards_what_it_brings() {
        let mut s = Served::framed(Framer::new(Framing::Line, 8), 64);
        s.conn.set_recv_armed(true); // multishot: still armed after this completion
        assert!(!s.conn.recv_to_cancel(), "open: it keeps receiving");
        assert_eq!(s.received(b"ok\nthis line is too long", 0), BufferUse::SendFromIt { len: 3 });
        assert!(s.conn.recv_to_cancel());
        assert!(!s.conn.recv_to_cancel(), "one cancel is enough");
        let read = s.tally.bytes_read;
        assert_eq!(s.received(b"more\n", 1), BufferUse::GiveBack);
        assert_eq!(s.tally.bytes_read, read, "discarded, not counted");
        s.conn.set_recv_armed(false); // its last completion (ECANCELED)
        assert_eq!(s.recv_room(), None);
    }

    /// A length frame cut short by EOF can never be whole: dropped, not echoed.
    #[test]
    fn a_length_frame_cut_by_eof_is_dropped() {
        let mut s = Served::framed(Framer::new(Framing::Length, 100), 200);
        assert_eq!(
            s.received(&[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 9, b'x'], 0),
            BufferUse::SendFromIt { len: 6 }
        );
        s.sent_from_buffer(6, &[0, 0, 0, 2, b'h', b'i']);
        s.received_eof();
        assert_eq!(s.conn.next_send(), None);
        assert!(s.conn.finished());
        assert_eq!(s.tally.bytes_unsent, 5, "the cut frame counts as unsent");
        assert_eq!(s.conn.unsent(), 0);
    }

    #[test]
    fn first_bytes_go_straight_out_of_the_buffer_and_the_rest_waits_in_order() {
        let mut s = Served::new(100);
        assert_eq!(s.recv_room(), Some(100));
        assert_eq!(s.received(b"hello", 7), BufferUse::SendFromIt { len: 5 });
        assert_eq!(s.conn.sending(), Some(Sending::Provided { bid: 7, len: 5 }));
        assert!(s.conn.extras.is_none(), "a send straight from the buffer holds nothing of ours");
        assert_eq!(s.received(b" world", 8), BufferUse::GiveBack);
        assert_eq!(s.conn.next_send(), None, "one send at a time");
        s.sent_from_buffer(2, b"hello"); // short: "llo" must go before " world"
        assert_eq!(s.conn.next_send(), Some(&b"llo"[..]));
        s.sent_from_outbox(3);
        assert_eq!(s.conn.next_send(), Some(&b" world"[..]));
        s.sent_from_outbox(6);
        assert_eq!(s.conn.next_send(), None);
        assert_eq!((s.tally.bytes_read, s.tally.bytes_echoed, s.conn.unsent()), (11, 11, 0));
        assert!(s.conn.extras.is_none(), "nothing owed: no heap memory");
    }

    #[test]
    fn recvs_ask_for_no_more_than_the_room_under_the_cap() {
        let mut s = Served::new(10);
        s.received(b"abcdef", 0); // 6 owed (in the provided send)
        assert_eq!(s.recv_room(), Some(4));
        s.received(b"ghij", 1);
        assert_eq!(s.recv_room(), None, "at the cap: backpressure");
        s.sent_from_buffer(0, b"abcdef"); // the socket was full: all of it to the outbox
        assert_eq!(s.recv_room(), None);
        assert_eq!(s.conn.next_send(), Some(&b"abcdef"[..]));
        s.sent_from_outbox(6);
        assert_eq!(s.recv_room(), Some(6), "draining reopens the window");
        s.conn.set_recv_armed(true);
        assert_eq!(s.recv_room(), None, "one recv at a time");
    }

    #[test]
    fn eof_finishes_only_after_the_echo() {
        let mut s = Served::new(100);
        s.received(b"bye", 0);
        s.received_eof();
        assert!(!s.conn.finished());
        assert_eq!(s.recv_room(), None);
        s.sent_from_buffer(3, b"bye");
        assert!(s.conn.finished());
    }

    #[test]
    fn closing_waits_for_requests_in_flight_and_cancels_once() {
        let mut s = Served::new(100);
        assert!(!s.conn.begin_close(), "nothing in flight: nothing to cancel");
        s.conn.set_recv_armed(true);
        assert!(s.conn.begin_close());
        assert!(!s.conn.begin_close(), "one cancel is enough");
        assert_eq!(s.received(b"late", 3), BufferUse::GiveBack);
        assert_eq!(s.recv_room(), None);
    }

    /// The outbox a send points at is not freed under it: what is owed goes back only with
    /// no send in flight.
    #[test]
    fn owed_bytes_are_freed_only_with_no_send_in_flight() {
        let mut s = Served::new(100);
        s.received(b"abc", 0);
        s.sent_from_buffer(1, b"abc");
        assert_eq!(s.conn.next_send(), Some(&b"bc"[..]));
        s.conn.release_if_empty();
        assert!(s.conn.extras.is_some(), "a send points into the outbox");
        s.sent_from_outbox(2);
        assert_eq!(s.conn.next_send(), None);
        assert!(s.conn.extras.is_none());
    }

    /// A guard, not the measurement (that is `echoloop bench --mode idle` against the
    /// server: docs/scale.md): an idle connection is 40 bytes, and growing it should be a
    /// decision, made in docs/design.md ("What a connection costs").
    #[test]
    fn an_idle_connection_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Connection>(), 40);
    }
}
