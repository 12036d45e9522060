//! One client connection of the io-uring model: where it is in its life, which requests of
//! it the kernel holds, and the bytes it owes its client.
//!
//! The loop (`mod.rs`) turns completions into calls here, then asks what to request next
//! ([`Connection::recv_len`], [`Connection::next_send`]). The connection never touches the
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
//! and bytes would leave out of order. One recv at a time, asking at most the room left
//! under `--max-pending`, so what is owed never exceeds the cap (backpressure: at the cap no
//! recv is armed, and the client's bytes wait in the kernel). This is why the recv is
//! single-shot: a multishot recv keeps receiving until it is cancelled, and a cancel takes
//! effect only at the next `io_uring_enter`, after the kernel may have received whatever the
//! socket held; the cap would be a wish, not a bound.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use log::{info, trace};

use crate::buffer::{PartialFrame, PendingBuf};
use crate::framing::{AtEof, Framer, Oversize, Rest};
use crate::lifecycle::linger;
use crate::lifecycle::proxy_header::{self, HeaderStep};
use crate::net::{Peer, Stream};
use crate::proxy_protocol::ProxyDecoder;
use crate::stats::{ConnCounts, IoTally};

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
    /// Straight out of provided buffer `bid` (`len` bytes, `MSG_DONTWAIT`).
    Provided { bid: u16, len: usize },
    /// Out of `outbox[outbox_start..]`; the kernel may wait for room in the socket.
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

/// One accepted client.
#[derive(Debug)]
pub(super) struct Connection {
    /// The socket (blocking mode is fine: io_uring never blocks the thread on it).
    stream: Stream,
    /// Its descriptor, for requests.
    fd: RawFd,
    /// The client's address, for logs.
    peer: Peer,
    /// Decides, with the bytes owed, what to request next.
    phase: Phase,
    /// The PROXY header so far, from the accept until it is whole (`--proxy-protocol`);
    /// still there if the connection closes before: it was never served.
    header: Option<Box<ProxyDecoder>>,
    /// A recv of ours is in the kernel.
    recv_armed: bool,
    /// The send of ours in the kernel, if any.
    sending: Option<Sending>,
    /// Bytes a waiting send points at (`outbox[outbox_start..]`); never changed while
    /// `sending == Some(Outbox)`. Empty = no heap memory.
    outbox: Vec<u8>,
    outbox_start: usize,
    /// Bytes received behind the send in flight. Capped with everything else owed, and the
    /// partial frame, at `cap` (the recv asks for no more than the room left).
    pending: PendingBuf,
    /// `--max-pending`, raised to hold one whole frame (`ServerConfig::connection_cap`).
    cap: usize,
    /// Where frames end (`raw`: every recv is whole, and `partial` stays empty).
    framer: Framer,
    /// The start of a frame whose end has not arrived yet; never a whole frame, empty (no
    /// heap memory) between frames.
    partial: PartialFrame,
    /// A frame over `--max-frame` just refused the connection: for the loop to count and
    /// log (through the server's throttle), once.
    oversize: Option<Oversize>,
    /// A cancel for this connection's requests has been queued (once is enough).
    cancel_queued: bool,
    /// When bytes last moved in either direction (for the idle timeout).
    last_active: Instant,
    /// Receives and bytes: in all, and not yet handed to the loop ([`Connection::take_io`]).
    counts: ConnCounts,
    /// Which of the loop's listeners accepted it (where its counts go).
    listener: usize,
}

impl Connection {
    /// A connection just accepted, nothing requested yet. `cap` bounds the bytes held (owed
    /// and partial frame together); it is at least `framer.frame_bound()`. With
    /// `proxy_header`, it begins by receiving a PROXY header.
    pub(super) fn new(
        stream: Stream,
        peer: Peer,
        framer: Framer,
        cap: usize,
        proxy_header: bool,
        now: Instant,
    ) -> Connection {
        let fd = stream.raw_fd();
        Connection {
            stream,
            fd,
            peer,
            phase: if proxy_header { Phase::Header } else { Phase::Open },
            header: proxy_header.then(Box::default),
            recv_armed: false,
            sending: None,
            outbox: Vec::new(),
            outbox_start: 0,
            pending: PendingBuf::new(cap),
            cap,
            framer,
            partial: PartialFrame::default(),
            oversize: None,
            cancel_queued: false,
            last_active: now,
            counts: ConnCounts::default(),
            listener: 0,
        }
    }

    /// This connection, as accepted by the loop's listener `i`.
    pub(super) fn on_listener(self, i: usize) -> Connection {
        Connection { listener: i, ..self }
    }

    /// Which of the loop's listeners accepted it.
    pub(super) fn listener(&self) -> usize {
        self.listener
    }

    /// Bytes received and not yet taken by the kernel to send back.
    fn owed(&self) -> usize {
        let provided = match self.sending {
            Some(Sending::Provided { len, .. }) => len,
            _ => 0,
        };
        provided + (self.outbox.len() - self.outbox_start) + self.pending.len()
    }

    /// How many bytes the next recv may ask for, if one should be armed now: while open,
    /// the room under the cap (none at the cap: backpressure); while lingering, a buffer's
    /// worth to discard.
    pub(super) fn recv_len(&self, buffer_size: usize) -> Option<usize> {
        if self.recv_armed {
            return None;
        }
        match self.phase {
            Phase::Open => {
                let room = self.cap.saturating_sub(self.owed() + self.partial.len());
                if room == 0 {
                    trace!("fd={} owed={} at cap: no recv (backpressure)", self.fd, self.owed());
                }
                (room > 0).then(|| room.min(buffer_size))
            }
            Phase::Header => Some(self.cap.min(buffer_size)),
            Phase::Lingering => Some(buffer_size),
            Phase::PeerClosed | Phase::Refused | Phase::ShuttingDown | Phase::Closing => None,
        }
    }

    /// A recv of ours is in the kernel.
    pub(super) fn recv_armed(&self) -> bool {
        self.recv_armed
    }

    /// A recv was armed, or completed.
    pub(super) fn set_recv_armed(&mut self, armed: bool) {
        self.recv_armed = armed;
    }

    /// A recv brought `data` in provided buffer `bid`: the whole frames in it (all of it,
    /// unframed) go straight out of the buffer if nothing is owed and no frame was begun,
    /// else behind what is; the start of an unfinished frame is kept.
    pub(super) fn received(&mut self, data: &[u8], bid: u16, now: Instant) -> BufferUse {
        if matches!(self.phase, Phase::Lingering | Phase::Closing) {
            trace!("fd={} discarded n={} ({:?})", self.fd, data.len(), self.phase);
            if self.phase == Phase::Lingering && linger::done(&self.stream.sock_ref()) {
                trace!("fd={} lingering: the client has every echo: closing", self.fd);
                self.phase = Phase::PeerClosed; // nothing owed: the loop closes us
            }
            return BufferUse::GiveBack;
        }
        self.counts.read(data.len());
        self.last_active = now;
        let (whole, start) = self.split_frames(data);
        if whole > 0 && start.is_empty() && self.sending.is_none() && self.owed() == 0 {
            trace!("fd={} recv n={}: send from buffer {bid}{}", self.fd, data.len(), unframed(whole, data));
            self.sending = Some(Sending::Provided { bid, len: whole });
            return BufferUse::SendFromIt { len: whole };
        }
        trace!("fd={} recv n={}: {whole} queued behind owed={}", self.fd, data.len(), self.owed());
        self.pending.push(&start); // a frame's start goes before its end
        self.pending.push(&data[..whole]);
        BufferUse::GiveBack
    }

    /// Where whole frames end in what was held and `data`: how many bytes of `data` end
    /// whole frames, and the start of the first of them held from earlier recvs (empty if
    /// none). The start of an unfinished frame is kept; a frame over the limit refuses the
    /// connection (after the frames before it).
    fn split_frames(&mut self, data: &[u8]) -> (usize, Vec<u8>) {
        let split = self.framer.split(self.partial.as_slice(), data);
        self.counts.frames(split.frames);
        let start = if split.whole > 0 { self.partial.take() } else { Vec::new() };
        match split.rest {
            Rest::Partial => self.partial.extend(&data[split.whole..], self.framer.frame_bound()),
            Rest::TooLarge(oversize) => {
                self.oversize = Some(oversize);
                self.phase = Phase::Refused;
                self.partial.take();
            }
        }
        (split.whole, start)
    }

    /// The recv saw EOF: the client sends no more. A last line without its `\n` is whole
    /// now, and is echoed; a length frame cut short never can be, and is dropped.
    pub(super) fn received_eof(&mut self) {
        trace!("fd={} recv EOF ({:?}), owed={}", self.fd, self.phase, self.owed());
        if self.phase == Phase::Closing {
            return;
        }
        self.phase = Phase::PeerClosed;
        match self.framer.at_eof(self.partial.as_slice()) {
            AtEof::Nothing => {}
            AtEof::Echo => {
                self.counts.frames(1);
                self.pending.push(&self.partial.take());
            }
            AtEof::Discard(n) => {
                info!("{}: EOF in the middle of a frame: discarded its {n} bytes", self.named_peer());
                self.partial.take();
            }
        }
    }

    /// The send out of a provided buffer completed having taken `n` bytes of `data` (0 for
    /// "the socket was full"). What it did not take is copied to the outbox, so the loop can
    /// give the buffer back right after this.
    pub(super) fn sent_from_buffer(&mut self, n: usize, data: &[u8], now: Instant) {
        debug_assert!(matches!(self.sending, Some(Sending::Provided { len, .. }) if len == data.len()));
        self.sending = None;
        if n < data.len() {
            trace!("fd={} partial send n={n} of {}: rest to the outbox", self.fd, data.len());
            debug_assert!(self.outbox.len() == self.outbox_start, "a provided send with an outbox");
            self.outbox.clear();
            self.outbox_start = 0;
            self.outbox.extend_from_slice(&data[n..]);
        }
        self.count_sent(n, now);
    }

    /// The send out of the outbox completed having taken `n` bytes.
    pub(super) fn sent_from_outbox(&mut self, n: usize, now: Instant) {
        debug_assert_eq!(self.sending, Some(Sending::Outbox));
        self.sending = None;
        self.outbox_start += n;
        trace!("fd={} outbox send n={n} left={}", self.fd, self.outbox.len() - self.outbox_start);
        self.count_sent(n, now);
    }

    fn count_sent(&mut self, n: usize, now: Instant) {
        self.counts.wrote(n);
        if n > 0 {
            self.last_active = now;
        }
    }

    /// The next send out of the outbox, if one should go now: the outbox's rest, else
    /// everything pending moved into it. Marks it in flight; the slice stays put until
    /// [`Connection::sent_from_outbox`]. With nothing owed, the outbox's memory is given back.
    pub(super) fn next_send(&mut self) -> Option<&[u8]> {
        if self.sending.is_some() || self.phase == Phase::Closing {
            return None;
        }
        if self.outbox_start == self.outbox.len() {
            self.outbox.clear();
            self.outbox_start = 0;
            if self.pending.is_empty() {
                self.outbox = Vec::new(); // nothing owed: an idle connection holds no buffer
                return None;
            }
            self.outbox.extend_from_slice(self.pending.front());
            self.pending.consume(self.pending.len());
        }
        self.sending = Some(Sending::Outbox);
        Some(&self.outbox[self.outbox_start..])
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

    /// Ended by the server (shutting down, or a refused frame) and nothing left to send:
    /// linger if the kernel still holds bytes either way (see [`Phase::Lingering`]); if not,
    /// stay, and [`Connection::finished`] says close. The rule is
    /// `crate::lifecycle::linger`'s, as in every model.
    pub(super) fn linger_once_flushed(&mut self) -> io::Result<()> {
        let flushed = self.sending.is_none() && self.owed() == 0;
        if matches!(self.phase, Phase::ShuttingDown | Phase::Refused)
            && flushed
            && linger::begin(&self.stream.sock_ref(), format_args!("fd={}", self.fd))?
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
        self.fd
    }

    /// The client's address.
    pub(super) fn peer(&self) -> Peer {
        self.peer
    }

    /// The frame over `--max-frame` that just refused it, if one did (once).
    pub(super) fn take_oversize(&mut self) -> Option<Oversize> {
        self.oversize.take()
    }

    /// The client's address for a line that must name it: the one known, or asked of the
    /// kernel now (accepting asks only when debug lines will show it).
    pub(super) fn named_peer(&self) -> Peer {
        match self.peer {
            Peer(None) => peer_of(&self.stream),
            known => known,
        }
    }

    /// When bytes last moved.
    pub(super) fn last_active(&self) -> Instant {
        self.last_active
    }

    /// The receives and bytes moved since the last call, for the server's statistics.
    pub(super) fn take_io(&mut self) -> IoTally {
        self.counts.take()
    }

    /// The connection is closing: the last of its counts, with every byte received and never
    /// sent back (what it owed) counted as unsent.
    pub(super) fn take_io_at_close(&mut self) -> IoTally {
        self.counts.take_at_close()
    }

    /// A recv completed into `data` while the PROXY header is not whole. `Ok(true)`: it is
    /// now, and the connection is open (the bytes after the header wait in `pending` for
    /// the next send); `Ok(false)`: not yet; `Err`: not a valid header (why). The provided
    /// buffer goes back to the ring in every case.
    pub(super) fn received_header(&mut self, data: &[u8], now: Instant) -> Result<bool, String> {
        let Some(decoder) = self.header.as_deref_mut() else { return Ok(true) };
        match proxy_header::feed(decoder, data, self.peer) {
            HeaderStep::NeedMore => Ok(false),
            HeaderStep::Invalid(why) => Err(why),
            HeaderStep::Done { client, payload } => {
                (self.header, self.peer, self.phase, self.last_active) = (None, client, Phase::Open, now);
                if payload < data.len() {
                    let rest = &data[payload..];
                    self.counts.read(rest.len()); // the header's bytes are not the client's
                    let (whole, start) = self.split_frames(rest);
                    self.pending.push(&start);
                    self.pending.push(&rest[..whole]);
                }
                Ok(true)
            }
        }
    }

    /// Its PROXY header is not whole yet (even while closing): it was never served.
    pub(super) fn awaiting_header(&self) -> bool {
        self.header.is_some()
    }

    /// Bytes (received, sent back, still owed).
    pub(super) fn byte_counts(&self) -> (u64, u64, usize) {
        (self.counts.bytes_in(), self.counts.bytes_out(), self.owed())
    }
}

/// For the trace: how much of a recv's `data` goes out, when not all of it does.
fn unframed(whole: usize, data: &[u8]) -> String {
    if whole == data.len() { String::new() } else { format!(" ({whole} bytes of whole frames)") }
}

/// The client's address, for a log line (TCP only: Unix clients are unnamed).
pub(super) fn peer_of(stream: &Stream) -> Peer {
    let addr = stream.is_tcp().then(|| stream.sock_ref().peer_addr().ok()?.as_socket()).flatten();
    Peer(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framing;
    use std::os::unix::net::UnixStream;

    /// A connection over one end of a socket pair (the other end is returned to keep it open).
    fn connection(max_pending: usize) -> (Connection, UnixStream) {
        framed(Framer::new(Framing::Raw, 0), max_pending)
    }

    fn framed(framer: Framer, cap: usize) -> (Connection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let stream = Stream::from_fd(ours.into(), false);
        (Connection::new(stream, Peer(None), framer, cap, false, Instant::now()), theirs)
    }

    /// Lines: the whole ones go out of the buffer; a line cut by the end of a recv waits,
    /// and goes out (start first) when the recv with its end arrives, behind what is owed.
    #[test]
    fn whole_lines_go_out_of_the_buffer_and_a_cut_line_waits_for_its_end() {
        let (mut conn, _peer) = framed(Framer::new(Framing::Line, 100), 100);
        let now = Instant::now();
        assert_eq!(conn.received(b"one\ntwo\nthr", 0, now), BufferUse::SendFromIt { len: 8 });
        assert_eq!(conn.recv_len(1000), Some(100 - 8 - 3), "the cut line counts against the cap");
        assert_eq!(conn.received(b"ee\nfo", 1, now), BufferUse::GiveBack, "a send is in flight");
        conn.sent_from_buffer(8, b"one\ntwo\n", now);
        assert_eq!(conn.next_send(), Some(&b"three\n"[..]));
        conn.sent_from_outbox(6, now);
        assert_eq!(conn.received(b"ur", 2, now), BufferUse::GiveBack, "no whole line");
        assert_eq!(conn.next_send(), None);
        conn.received_eof(); // the last line ends with the stream
        assert_eq!(conn.next_send(), Some(&b"four"[..]));
        conn.sent_from_outbox(4, now);
        assert!(conn.finished());
        assert_eq!(conn.take_io().frames, 4);
    }

    /// A frame over the limit: the frames before it are echoed, nothing more is received,
    /// and once they are out the connection is finished (nothing to linger for here: the
    /// other end read nothing, but sent nothing more either).
    #[test]
    fn a_frame_over_the_limit_refuses_the_connection_after_the_frames_before_it() {
        let (mut conn, _peer) = framed(Framer::new(Framing::Line, 8), 64);
        let now = Instant::now();
        assert_eq!(conn.received(b"ok\nthis line is too long", 0, now), BufferUse::SendFromIt { len: 3 });
        assert_eq!(conn.phase(), Phase::Refused);
        assert_eq!(conn.recv_len(64), None, "refused: no more recvs");
        assert!(!conn.finished(), "the echo of the frame before it is still out");
        conn.sent_from_buffer(3, b"ok\n", now);
        assert!(conn.finished());
    }

    /// A length frame cut short by EOF can never be whole: dropped, not echoed.
    #[test]
    fn a_length_frame_cut_by_eof_is_dropped() {
        let (mut conn, _peer) = framed(Framer::new(Framing::Length, 100), 200);
        let now = Instant::now();
        assert_eq!(
            conn.received(&[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 9, b'x'], 0, now),
            BufferUse::SendFromIt { len: 6 }
        );
        conn.sent_from_buffer(6, &[0, 0, 0, 2, b'h', b'i'], now);
        conn.received_eof();
        assert_eq!(conn.next_send(), None);
        assert!(conn.finished());
        assert_eq!(conn.take_io_at_close().bytes_unsent, 5, "the cut frame counts as unsent");
    }

    #[test]
    fn first_bytes_go_straight_out_of_the_buffer_and_the_rest_waits_in_order() {
        let (mut conn, _peer) = connection(100);
        let now = Instant::now();
        assert_eq!(conn.recv_len(64), Some(64));
        assert_eq!(conn.received(b"hello", 7, now), BufferUse::SendFromIt { len: 5 });
        assert_eq!(conn.sending(), Some(Sending::Provided { bid: 7, len: 5 }));
        assert_eq!(conn.received(b" world", 8, now), BufferUse::GiveBack);
        assert_eq!(conn.next_send(), None, "one send at a time");
        conn.sent_from_buffer(2, b"hello", now); // short: "llo" must go before " world"
        assert_eq!(conn.next_send(), Some(&b"llo"[..]));
        conn.sent_from_outbox(3, now);
        assert_eq!(conn.next_send(), Some(&b" world"[..]));
        conn.sent_from_outbox(6, now);
        assert_eq!(conn.next_send(), None);
        assert_eq!(conn.byte_counts(), (11, 11, 0));
        assert_eq!(conn.outbox.capacity(), 0, "nothing owed: no heap memory");
    }

    #[test]
    fn recvs_ask_for_no_more_than_the_room_under_the_cap() {
        let (mut conn, _peer) = connection(10);
        let now = Instant::now();
        conn.received(b"abcdef", 0, now); // 6 owed (in the provided send)
        assert_eq!(conn.recv_len(64), Some(4));
        conn.received(b"ghij", 1, now);
        assert_eq!(conn.recv_len(64), None, "at the cap: backpressure");
        conn.sent_from_buffer(0, b"abcdef", now); // the socket was full: all of it to the outbox
        assert_eq!(conn.recv_len(64), None);
        assert_eq!(conn.next_send(), Some(&b"abcdef"[..]));
        conn.sent_from_outbox(6, now);
        assert_eq!(conn.recv_len(64), Some(6), "draining reopens the window");
        conn.set_recv_armed(true);
        assert_eq!(conn.recv_len(64), None, "one recv at a time");
    }

    #[test]
    fn eof_finishes_only_after_the_echo() {
        let (mut conn, _peer) = connection(100);
        let now = Instant::now();
        conn.received(b"bye", 0, now);
        conn.received_eof();
        assert!(!conn.finished());
        assert_eq!(conn.recv_len(64), None);
        conn.sent_from_buffer(3, b"bye", now);
        assert!(conn.finished());
    }

    #[test]
    fn closing_waits_for_requests_in_flight_and_cancels_once() {
        let (mut conn, _peer) = connection(100);
        assert!(!conn.begin_close(), "nothing in flight: nothing to cancel");
        conn.set_recv_armed(true);
        assert!(conn.begin_close());
        assert!(!conn.begin_close(), "one cancel is enough");
        assert_eq!(conn.received(b"late", 3, Instant::now()), BufferUse::GiveBack);
        assert_eq!(conn.recv_len(64), None);
    }
}
