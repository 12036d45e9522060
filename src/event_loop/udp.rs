//! UDP echo (RFC 862, "UDP Based Echo Service"): each datagram goes back to its sender,
//! unchanged, empty ones included.
//!
//! ```text
//!   UDP token readable -> recvmmsg until WouldBlock, a short batch, or the budget: each
//!                         batch's replies go back in one sendmmsg, or into the queue if
//!                         the kernel refuses (WouldBlock)
//!   UDP token writable -> send queued replies, a batch per sendmmsg, until WouldBlock
//!   shutdown           -> stop reading; flush the queue within the grace period
//!   interest: READABLE, plus WRITABLE only while replies are queued
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
//! A UDP socket is one more source of events in the loop (`mod.rs`), beside the stream
//! listeners and their connections, with the same rules (drain to `WouldBlock`, ask for
//! WRITABLE only while something waits, stop through the waker): a datagram is a whole
//! message, so there is no stream to reassemble, no per-client state and no EOF. It has a
//! file and a type of its own because it shares none of a connection's state.
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
//!   built-in services learned to do (`lifecycle::admit_datagram`, which the blocking
//!   models' UDP thread obeys too).

use std::collections::VecDeque;
use std::io;

use log::{debug, trace, warn};
use mio::{Interest, Registry, Token};
use socket2::SockAddr;

use crate::config::ServerConfig;
use crate::lifecycle::admit_datagrams;
use crate::net::{BATCH, Message, Offload, Receiver, Sender, Sent, interrupted, would_block};
use crate::stats::{Datagrams, IoTally, Stats};

/// Receive calls (each up to a batch) per readiness event before the loop moves on (for the
/// waker's sake, and the other sockets': a flood must not keep them waiting).
const RECEIVES_PER_EVENT: usize = 4;

/// The reply queue's bounds: whichever is reached first. 1024 replies absorb a burst; the
/// byte bound keeps 1024 large datagrams from holding 64 MiB.
const QUEUE_DATAGRAMS: usize = 1024;
const QUEUE_BYTES: usize = 4 << 20;

/// One UDP socket of the loop and the replies it owes.
#[derive(Debug)]
pub struct UdpPort {
    /// The socket every datagram of this listener arrives on and every reply leaves from.
    socket: mio::net::UdpSocket,
    /// Where each batch lands; replies sent at once go straight from its slots.
    rx: Receiver,
    /// Sends replies, a batch per call, trains whole where the kernel splits them.
    tx: Sender,
    /// Replies the kernel refused, oldest first. Non-empty iff WRITABLE is registered.
    queue: ReplyQueue,
    /// The interest the registry holds now, so we reregister only on a change.
    registered: Interest,
    /// False once shutting down: no more datagrams are taken.
    reading: bool,
    /// The receive budget ran out with datagrams perhaps still queued in the kernel: an
    /// edge-triggered poll will not report them again, so come back without waiting.
    unfinished: bool,
    /// This turn's datagrams echoed and dropped (by cause), published with the tally.
    datagrams: Datagrams,
}

impl UdpPort {
    /// Take a bound UDP socket, make it non-blocking, turn on the kernel's help with trains
    /// if `config` asks (and the kernel has it), and register it as `token`.
    pub fn new(
        socket: std::net::UdpSocket,
        config: &ServerConfig,
        registry: &Registry,
        token: Token,
    ) -> io::Result<UdpPort> {
        socket.set_nonblocking(true)?;
        let wanted = if config.udp_offload { Offload::BOTH } else { Offload::NONE };
        let offload = Offload::enable(&socket, wanted);
        let mut socket = mio::net::UdpSocket::from_std(socket);
        registry.register(&mut socket, token, Interest::READABLE)?;
        Ok(UdpPort {
            socket,
            rx: Receiver::new(config.udp_batch),
            tx: Sender::new(offload),
            queue: ReplyQueue::new(QUEUE_DATAGRAMS, QUEUE_BYTES),
            registered: Interest::READABLE,
            reading: true,
            unfinished: false,
            datagrams: Datagrams::default(),
        })
    }

    /// The socket may be ready (an event, or the budget ran out last turn): send what is
    /// queued, then receive and answer, a batch at a time; count in `tally`. Then ask for
    /// what it needs next.
    pub fn serve(
        &mut self,
        writable: bool,
        tally: &mut IoTally,
        registry: &Registry,
        token: Token,
    ) -> io::Result<()> {
        if writable {
            self.flush_queue(tally);
        }
        self.unfinished = self.reading && self.receive(tally);
        self.update_interest(registry, token)
    }

    /// True if the last receive stopped at its budget: serve it again after the next poll.
    pub fn unfinished(&self) -> bool {
        self.unfinished
    }

    /// Replies still queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Add this turn's datagram counts to `stats`.
    pub fn publish(&mut self, stats: &Stats) {
        stats.publish_datagrams(&mut self.datagrams);
    }

    /// Shutting down: take no more datagrams; queued replies may still go.
    pub fn stop_reading(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.reading = false;
        self.unfinished = false;
        self.update_interest(registry, token)
    }

    /// Every queued reply has gone.
    pub fn flushed(&self) -> bool {
        self.queue.is_empty()
    }

    /// The grace period is over: what is still queued is never sent (counted as unsent, so
    /// nothing shows as pending).
    pub fn abandon(&mut self, tally: &mut IoTally) {
        if !self.queue.is_empty() {
            warn!("grace period over: {} queued replies not sent", self.queue.len());
            tally.bytes_unsent += self.queue.bytes as u64;
        }
    }

    /// Receive and answer datagrams, a batch at a time, until `WouldBlock`; true if the
    /// budget ran out first.
    ///
    /// Edge-triggered: read until `WouldBlock`, or no new event is promised (mio Poll docs,
    /// "Draining readiness"). A short batch is such a promise: it emptied the socket's queue,
    /// and the next datagram to arrive raises a new event.
    fn receive(&mut self, tally: &mut IoTally) -> bool {
        for _ in 0..RECEIVES_PER_EVENT {
            match self.rx.recv(&self.socket) {
                Ok(_) => {
                    self.answer_batch(tally);
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

    /// Answer the batch just received: drop what comes from a port never answered, queue the
    /// replies behind those already queued (so they leave in the order datagrams came), and
    /// send the others at once, straight from the receive slots, in one call.
    fn answer_batch(&mut self, tally: &mut IoTally) {
        let mut out = Outcomes { queue: &mut self.queue, datagrams: &mut self.datagrams, tally };
        let mut replies: Vec<Message<'_>> = Vec::with_capacity(BATCH);
        for message in self.rx.messages() {
            trace!(
                "udp recv n={} datagrams={} from={:?}",
                message.data.len(),
                message.count(),
                message.peer_addr()
            );
            let Some(from) = message.peer_addr() else { continue }; // not IP: cannot happen
            if !admit_datagrams(message.count(), message.data.len(), from, out.tally, out.datagrams) {
                continue;
            }
            if out.queue.is_empty() {
                replies.push(message);
            } else {
                out.refused(message);
            }
        }
        self.tx.send(&self.socket, &replies, |reply, sent| out.settle(reply, sent));
    }

    /// WRITABLE: send queued replies, oldest first, a batch per call, until the kernel
    /// refuses again.
    fn flush_queue(&mut self, tally: &mut IoTally) {
        while !self.queue.is_empty() {
            // The outcomes are noted, then applied: the batch borrows the queue meanwhile.
            let mut outcomes: Vec<(usize, Sent)> = Vec::with_capacity(BATCH);
            let batch: Vec<Message<'_>> = self.queue.oldest(BATCH).collect();
            self.tx.send(&self.socket, &batch, |reply, sent| outcomes.push((reply.data.len(), sent)));
            let refused = outcomes.iter().any(|(_, sent)| matches!(sent, Sent::WouldBlock));
            let mut out = Outcomes { queue: &mut self.queue, datagrams: &mut self.datagrams, tally };
            for (len, sent) in outcomes {
                match sent {
                    Sent::WouldBlock => break, // the rest stays queued, for the next WRITABLE edge
                    Sent::Done => out.echoed(1, len),
                    Sent::Failed(e) => out.send_failed(1, len, &e),
                }
                out.queue.pop();
            }
            if refused {
                return;
            }
        }
    }

    /// READABLE unless shutting down; WRITABLE while replies are queued. The only place that
    /// calls `reregister` for this socket.
    fn update_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = match (self.reading, !self.queue.is_empty()) {
            (true, true) => Interest::READABLE.add(Interest::WRITABLE),
            (true, false) => Interest::READABLE,
            (false, true) => Interest::WRITABLE,
            (false, false) => return Ok(()), // done: nothing more to hear about
        };
        if interest != self.registered {
            trace!("udp interest {:?} -> {interest:?}", self.registered); // the event line before names the socket
            registry.reregister(&mut self.socket, token, interest)?;
            self.registered = interest;
        }
        Ok(())
    }
}

/// What becomes of replies, counted as it happens: the queue for those the kernel refused,
/// and the counts. (Borrowed apart from the socket and the receive slots, so a batch's
/// outcomes can be counted while the batch is still borrowed.)
struct Outcomes<'a> {
    queue: &'a mut ReplyQueue,
    datagrams: &'a mut Datagrams,
    tally: &'a mut IoTally,
}

impl Outcomes<'_> {
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

    use std::net::SocketAddr;

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
