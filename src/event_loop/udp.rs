//! UDP echo (RFC 862, "UDP Based Echo Service"): each datagram goes back to its sender,
//! unchanged, empty ones included.
//!
//! ```text
//!   loop {
//!       poll(events, timeout = grace deadline)
//!       SOCKET writable -> send queued replies, a batch per sendmmsg, until WouldBlock
//!       SOCKET readable -> recvmmsg until WouldBlock (or the budget): each batch's replies
//!                          go back in one sendmmsg, or into the queue if the kernel
//!                          refuses (WouldBlock)
//!       WAKER           -> stop reading; flush the queue within the grace period
//!       interest: READABLE, plus WRITABLE only while replies are queued
//!   }
//! ```
//!
//! A batch is up to `--udp-batch` messages (64 by default) per system call, each with its
//! own sender ([`crate::net::Receiver`], [`crate::net::Sender`]): with many clients, one
//! `recvmmsg` and one `sendmmsg` answer them all, where `recv_from` and `send_to` would
//! cost two calls per datagram. And with `--udp-offload on` (the default) a message may be
//! a *train*: datagrams of one size from one sender that the kernel kept together (GRO);
//! its reply is the same train, sent as one message that the kernel splits again (GSO).
//! Every datagram of a train is still a datagram here: counted, guarded and queued one by
//! one, and its reply is its own bytes, to its own sender.
//!
//! The same loop as TCP's, with the same rules (drain to `WouldBlock`, ask for WRITABLE
//! only while something waits, stop through the waker), over one socket instead of a slab of
//! connections: a datagram is a whole message, so there is no stream to reassemble, no
//! per-client state and no EOF. It lives beside the TCP loop because it *is* that loop; it
//! has a file and a type of its own because it shares none of its state.
//!
//! Two things differ from TCP:
//!
//! - **Nothing pushes back.** UDP has no flow control: when the kernel refuses a reply
//!   (`send_to` says `WouldBlock`, its send buffer full), the reply waits in a bounded queue;
//!   when that is full, the *oldest* reply is dropped and counted (newer ones are worth more
//!   to a client measuring round trips, and a client that floods us loses its own replies).
//! - **Reflection.** An echo answers anyone, to whatever source address a datagram claims.
//!   Two echo services (or an echo and a chargen, RFC 864) that are sent one spoofed datagram
//!   "from" each other answer each other forever: the classic echo/chargen loop (CERT
//!   CA-1996-01, "UDP Port Denial-of-Service Attack"). So datagrams from source port 0 (not a
//!   real sender) or from the ports of the small services that answer every datagram (7 echo,
//!   13 daytime, 17 qotd, 19 chargen) are dropped and counted, never answered, as inetd's
//!   built-in services learned to do.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::SockAddr;

use super::{WAKER, shutdown_waker, wait};
use crate::config::ServerConfig;
use crate::net::{BATCH, Message, Offload, Receiver, Sender, Sent, interrupted, would_block};
use crate::shutdown::ShutdownHandle;
use crate::stats::{Datagrams, IoTally, Stats};

/// The UDP socket's token.
const SOCKET: Token = Token(0);

/// Receive calls (each up to a batch) per readiness event before the loop polls again (for
/// the waker's sake: a flood must not keep a shutdown request waiting).
const RECEIVES_PER_EVENT: usize = 4;

/// The reply queue's bounds: whichever is reached first. 1024 replies absorb a burst; the
/// byte bound keeps 1024 large datagrams from holding 64 MiB.
const QUEUE_DATAGRAMS: usize = 1024;
const QUEUE_BYTES: usize = 4 << 20;

/// A UDP echo server: one socket, one poll, one queue.
pub struct UdpEcho {
    /// The readiness queue: the socket and the waker are registered here.
    poll: Poll,
    /// The one socket every datagram arrives on and every reply leaves from.
    socket: mio::net::UdpSocket,
    /// Where each batch lands; replies sent at once go straight from its slots.
    rx: Receiver,
    /// Sends replies, a batch per call, trains whole where the kernel splits them.
    tx: Sender,
    /// Replies the kernel refused, and this turn's counts.
    out: Outbox,
    /// The interest the registry holds now, so we reregister only on a change.
    registered: Interest,
    /// The receive budget ran out with datagrams perhaps still queued in the kernel: an
    /// edge-triggered poll will not report them again, so come back without waiting.
    unfinished: bool,
    /// Set when shutdown begins: queued replies may flush until then.
    grace_deadline: Option<Instant>,
    /// Keeps the waker alive; the shutdown handle holds a closure that fires it.
    _waker: Arc<Waker>,
    shutdown: ShutdownHandle,
    grace: Duration,
    /// The server's counters, as every model keeps them: each datagram is a read, then
    /// echoed or dropped (unsent); the live line and the summary read them.
    stats: Arc<Stats>,
}

/// What becomes of replies: the queue of those the kernel refused, and this turn's counts
/// (published to the shared statistics once per turn, as the TCP loop does). A type of its
/// own so that a batch's outcomes can be counted while the batch is still borrowed.
#[derive(Debug)]
struct Outbox {
    /// Replies the kernel refused, oldest first. Non-empty iff WRITABLE is registered.
    queue: ReplyQueue,
    /// This turn's reads and bytes: each datagram is a read, then echoed or unsent.
    tally: IoTally,
    /// This turn's datagrams echoed and dropped (by cause).
    datagrams: Datagrams,
}

impl UdpEcho {
    /// Take a bound UDP socket, make it non-blocking, turn on the kernel's help with trains
    /// if `config` asks (and the kernel has it), and register the socket and a waker that
    /// `shutdown` will fire. The loop counts its datagrams in `stats` as it goes.
    pub fn new(
        socket: std::net::UdpSocket,
        config: &ServerConfig,
        shutdown: &ShutdownHandle,
        stats: Arc<Stats>,
    ) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let wanted = if config.udp_offload { Offload::BOTH } else { Offload::NONE };
        let offload = Offload::enable(&socket, wanted);
        let mut socket = mio::net::UdpSocket::from_std(socket);
        let poll = Poll::new()?;
        poll.registry().register(&mut socket, SOCKET, Interest::READABLE)?;
        let waker = shutdown_waker(&poll, shutdown)?;
        Ok(UdpEcho {
            poll,
            socket,
            rx: Receiver::new(config.udp_batch),
            tx: Sender::new(offload),
            out: Outbox {
                queue: ReplyQueue::new(QUEUE_DATAGRAMS, QUEUE_BYTES),
                tally: IoTally::default(),
                datagrams: Datagrams::default(),
            },
            registered: Interest::READABLE,
            unfinished: false,
            grace_deadline: None,
            _waker: waker,
            shutdown: shutdown.clone(),
            grace: config.shutdown_grace,
            stats,
        })
    }

    /// The real bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Echo until a shutdown request has been carried out (the counts are in `stats`).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(16);
        debug!("UDP echo loop running");
        loop {
            self.publish_counts(); // before sleeping: a statistics line read meanwhile is current
            let timeout = self.poll_timeout(Instant::now());
            wait(&mut self.poll, &mut events, timeout)?;
            let now = Instant::now();
            let (mut readable, mut writable) = (std::mem::take(&mut self.unfinished), false);
            for event in events.iter() {
                match event.token() {
                    SOCKET => {
                        // Hints, as for TCP: an error flag just means "try", and the call says.
                        readable |= event.is_readable() || event.is_error();
                        writable |= event.is_writable() || event.is_error();
                    }
                    WAKER => self.begin_shutdown(now),
                    _ => {}
                }
            }
            if writable {
                self.flush_queue();
            }
            if readable && self.grace_deadline.is_none() {
                self.unfinished = self.receive();
            }
            if self.finished(now) {
                self.publish_counts();
                return Ok(());
            }
            self.update_interest()?;
        }
    }

    /// Add this turn's counts to the shared statistics.
    fn publish_counts(&mut self) {
        self.stats.publish(&mut self.out.tally);
        self.stats.publish_datagrams(&mut self.out.datagrams);
    }

    /// Receive and answer datagrams, a batch at a time, until `WouldBlock`; true if the
    /// budget ran out first.
    ///
    /// Edge-triggered: read until `WouldBlock`, or no new event is promised (mio Poll docs,
    /// "Draining readiness"). A short batch is such a promise: it emptied the socket's queue,
    /// and the next datagram to arrive raises a new event.
    fn receive(&mut self) -> bool {
        for _ in 0..RECEIVES_PER_EVENT {
            match self.rx.recv(&self.socket) {
                Ok(_) => {
                    self.answer_batch();
                    if self.rx.drained() {
                        trace!("udp short batch: drained");
                        return false;
                    }
                }
                Err(e) if would_block(&e) => {
                    trace!("udp recv WouldBlock: drained");
                    return false;
                }
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => {
                    // An error queued on the socket (an ICMP report, say): reading it
                    // cleared it, and datagrams may wait behind it.
                    debug!("udp recvmmsg: {e}");
                    continue;
                }
            }
        }
        trace!("udp receive budget spent: polling before reading on");
        true
    }

    /// Answer the batch just received: drop what comes from a reserved port, queue the
    /// replies behind those already queued (so they leave in the order datagrams came), and
    /// send the others at once, straight from the receive slots, in one call.
    fn answer_batch(&mut self) {
        let mut replies: Vec<Message<'_>> = Vec::with_capacity(BATCH);
        for message in self.rx.messages() {
            self.out.received(&message);
            if message.sent_from_reserved_port() {
                self.out.drop_reserved(&message);
            } else if !self.out.queue.is_empty() {
                self.out.refused(message);
            } else {
                replies.push(message);
            }
        }
        let out = &mut self.out;
        self.tx.send(&self.socket, &replies, |reply, sent| out.settle(reply, sent));
    }

    /// WRITABLE: send queued replies, oldest first, a batch per call, until the kernel
    /// refuses again.
    fn flush_queue(&mut self) {
        while !self.out.queue.is_empty() {
            // The outcomes are noted, then applied: the batch borrows the queue meanwhile.
            let mut outcomes: Vec<(usize, Sent)> = Vec::with_capacity(BATCH);
            let batch: Vec<Message<'_>> = self.out.queue.oldest(BATCH).collect();
            self.tx.send(&self.socket, &batch, |reply, sent| outcomes.push((reply.data.len(), sent)));
            let refused = outcomes.iter().any(|(_, sent)| matches!(sent, Sent::WouldBlock));
            for (len, sent) in outcomes {
                match sent {
                    Sent::WouldBlock => break, // the rest stays queued, for the next WRITABLE edge
                    Sent::Done => self.out.echoed(1, len),
                    Sent::Failed(e) => self.out.send_failed(1, len, &e),
                }
                self.out.queue.pop();
            }
            if refused {
                return;
            }
        }
    }

    /// READABLE unless shutting down; WRITABLE while replies are queued. The only place that
    /// calls `reregister`.
    fn update_interest(&mut self) -> io::Result<()> {
        let reading = self.grace_deadline.is_none();
        let interest = match (reading, !self.out.queue.is_empty()) {
            (true, true) => Interest::READABLE.add(Interest::WRITABLE),
            (true, false) => Interest::READABLE,
            (false, _) => Interest::WRITABLE, // not finished, so replies are queued
        };
        if interest != self.registered {
            trace!("udp interest {:?} -> {interest:?}", self.registered);
            self.poll.registry().reregister(&mut self.socket, SOCKET, interest)?;
            self.registered = interest;
        }
        Ok(())
    }

    /// Until the grace deadline, or at once if something is left to read.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.unfinished {
            return Some(Duration::ZERO);
        }
        self.grace_deadline.map(|deadline| deadline.saturating_duration_since(now))
    }

    /// Stop reading; queued replies may flush until the grace deadline.
    fn begin_shutdown(&mut self, now: Instant) {
        if !self.shutdown.is_requested() || self.grace_deadline.is_some() {
            return; // a stray wake-up, or shutdown already under way
        }
        self.grace_deadline = Some(now + self.grace);
        info!(
            "shutting down: {} replies queued, flushing them for up to {:?}",
            self.out.queue.len(),
            self.grace
        );
    }

    /// Shutting down, and the queue is empty or the grace period is over (what is still
    /// queued then is never sent: counted as unsent, so nothing shows as pending).
    fn finished(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.grace_deadline else { return false };
        let queue = &self.out.queue;
        if !queue.is_empty() && now >= deadline {
            warn!("grace period over: {} queued replies not sent", queue.len());
            self.out.tally.bytes_unsent += queue.bytes as u64;
        }
        queue.is_empty() || now >= deadline
    }
}

impl Outbox {
    /// A message came in: each of its datagrams is a read.
    fn received(&mut self, message: &Message<'_>) {
        trace!(
            "udp recv n={} datagrams={} from={:?}",
            message.data.len(),
            message.count(),
            message.peer_addr()
        );
        self.tally.reads += message.count() as u64;
        self.tally.bytes_read += message.data.len() as u64;
    }

    /// From a reserved port: never answered; each of its datagrams counted as dropped.
    fn drop_reserved(&mut self, message: &Message<'_>) {
        if let Some(from) = message.peer_addr() {
            let (port, count) = (from.port(), message.count());
            let what = if count == 1 { "a datagram".to_string() } else { format!("{count} datagrams") };
            debug!("udp: dropped {what} from {from}: source port {port} is never answered");
        }
        self.datagrams.dropped_reserved_port += message.count() as u64;
        self.tally.bytes_unsent += message.data.len() as u64;
    }

    /// What became of a reply handed to the kernel.
    fn settle(&mut self, reply: Message<'_>, sent: Sent) {
        match sent {
            Sent::Done => self.echoed(reply.count(), reply.data.len()),
            Sent::WouldBlock => self.refused(reply),
            Sent::Failed(e) => self.send_failed(reply.count(), reply.data.len(), &e),
        }
    }

    fn echoed(&mut self, count: usize, bytes: usize) {
        trace!("udp send n={bytes} datagrams={count}");
        self.datagrams.echoed += count as u64;
        self.tally.bytes_echoed += bytes as u64;
    }

    /// The kernel refused this reply for now (or replies wait ahead of it): copy each of its
    /// datagrams into the queue, pushing the oldest replies out if the queue is full.
    fn refused(&mut self, reply: Message<'_>) {
        for datagram in reply.datagrams() {
            let queued_before = self.queue.bytes;
            let dropped = self.queue.push(reply.peer, datagram);
            self.datagrams.dropped_queue_full += dropped as u64;
            self.tally.bytes_unsent += (queued_before + datagram.len() - self.queue.bytes) as u64; // the dropped
            if dropped > 0 {
                debug!("udp reply queue full: dropped the {dropped} oldest replies");
            }
        }
        trace!("udp send WouldBlock: queued {} datagrams (queued: {})", reply.count(), self.queue.len());
    }

    /// The send failed for good (no route, a message the kernel will not send): these
    /// replies are lost, the echo goes on.
    fn send_failed(&mut self, count: usize, bytes: usize, e: &io::Error) {
        debug!("udp send: {e}: {count} replies dropped");
        self.datagrams.dropped_send_failed += count as u64;
        self.tally.bytes_unsent += bytes as u64;
    }
}

/// Replies waiting for the kernel, oldest first, within a count and a byte bound; when full,
/// the oldest make room. Each reply's bytes are copied out of the shared buffer, exactly
/// sized, and freed when sent.
#[derive(Debug)]
struct ReplyQueue {
    replies: VecDeque<(SockAddr, Box<[u8]>)>,
    bytes: usize,
    max_datagrams: usize,
    max_bytes: usize,
}

impl ReplyQueue {
    fn new(max_datagrams: usize, max_bytes: usize) -> Self {
        ReplyQueue { replies: VecDeque::new(), bytes: 0, max_datagrams, max_bytes }
    }

    fn len(&self) -> usize {
        self.replies.len()
    }

    fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Queue a reply; drop the oldest ones until it fits, and return how many were dropped.
    /// (One datagram always fits in an empty queue: `max_bytes` exceeds any datagram.)
    fn push(&mut self, to: &SockAddr, data: &[u8]) -> usize {
        let mut dropped = 0;
        while !self.replies.is_empty()
            && (self.replies.len() >= self.max_datagrams || self.bytes + data.len() > self.max_bytes)
        {
            self.pop();
            dropped += 1;
        }
        self.bytes += data.len();
        self.replies.push_back((to.clone(), data.into()));
        dropped
    }

    /// The `max` oldest replies, oldest first.
    fn oldest(&self, max: usize) -> impl Iterator<Item = Message<'_>> {
        self.replies.iter().take(max).map(|(to, data)| Message::single(to, data))
    }

    /// Forget the oldest reply (sent, or dropped).
    fn pop(&mut self) {
        if let Some((_, data)) = self.replies.pop_front() {
            self.bytes -= data.len();
        }
        if self.replies.is_empty() {
            self.replies = VecDeque::new(); // a burst's memory goes back
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SockAddr {
        SockAddr::from(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The oldest reply: its port and bytes.
    fn front(queue: &ReplyQueue) -> Option<(u16, Vec<u8>)> {
        queue.oldest(1).next().map(|m| (m.peer_addr().unwrap().port(), m.data.to_vec()))
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let mut queue = ReplyQueue::new(3, 1000);
        for port in 1..=3 {
            assert_eq!(queue.push(&addr(port), &[port as u8; 10]), 0);
        }
        assert_eq!(queue.push(&addr(4), b"newest"), 1);
        assert_eq!(queue.len(), 3);
        assert_eq!(front(&queue), Some((2, vec![2u8; 10])));
        assert_eq!(queue.oldest(10).count(), 3);
    }

    #[test]
    fn the_byte_bound_drops_as_many_as_needed() {
        let mut queue = ReplyQueue::new(100, 100);
        for port in 1..=4 {
            queue.push(&addr(port), &[0; 25]);
        }
        assert_eq!(queue.push(&addr(5), &[1; 60]), 3, "75 + 60 > 100: three must go");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.bytes, 85);
        queue.pop();
        queue.pop();
        assert!(queue.is_empty());
        assert_eq!(queue.bytes, 0);
    }

    #[test]
    fn an_empty_datagram_is_a_reply_too() {
        let mut queue = ReplyQueue::new(2, 10);
        queue.push(&addr(9), b"");
        assert_eq!(front(&queue), Some((9, vec![])));
    }
}
