//! UDP echo (RFC 862, "UDP Based Echo Service"): each datagram goes back to its sender,
//! unchanged, empty ones included.
//!
//! ```text
//!   loop {
//!       poll(events, timeout = grace deadline)
//!       SOCKET writable -> send queued replies until WouldBlock
//!       SOCKET readable -> recv_from until WouldBlock (or the budget): send_to the sender,
//!                          or queue the reply if the kernel refuses (WouldBlock)
//!       WAKER           -> stop reading; flush the queue within the grace period
//!       interest: READABLE, plus WRITABLE only while replies are queued
//!   }
//! ```
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

use super::{WAKER, shutdown_waker, wait};
use crate::net::{interrupted, would_block};
use crate::shutdown::ShutdownHandle;
use crate::stats::{Datagrams, IoTally, Stats};

/// The UDP socket's token.
const SOCKET: Token = Token(0);

/// Source ports never answered: 0 (no real sender uses it) and the small services that
/// answer every datagram, so that two of them cannot be set answering each other.
const RESERVED_SOURCE_PORTS: [u16; 5] = [0, 7, 13, 17, 19];

/// One datagram: larger than the largest UDP payload (65,507 bytes over IPv4, 65,527 over
/// IPv6), so `recv_from` never truncates one.
const DATAGRAM_BUFFER: usize = 64 * 1024;

/// Datagrams received per readiness event before the loop polls again (for the waker's sake:
/// a flood must not keep a shutdown request waiting).
const DATAGRAMS_PER_EVENT: usize = 64;

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
    /// Where every datagram lands; replies sent at once go straight from here.
    buf: Box<[u8]>,
    /// Replies the kernel refused, oldest first. Non-empty iff WRITABLE is registered.
    queue: ReplyQueue,
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
    /// This turn's reads and bytes, published to `stats` once per turn, as the TCP loop does.
    tally: IoTally,
    /// This turn's datagrams echoed and dropped (by cause), published with `tally`.
    datagrams: Datagrams,
}

impl UdpEcho {
    /// Take a bound UDP socket, make it non-blocking, and register it and a waker that
    /// `shutdown` will fire. The loop counts its datagrams in `stats` as it goes.
    pub fn new(
        socket: std::net::UdpSocket,
        grace: Duration,
        shutdown: &ShutdownHandle,
        stats: Arc<Stats>,
    ) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let mut socket = mio::net::UdpSocket::from_std(socket);
        let poll = Poll::new()?;
        poll.registry().register(&mut socket, SOCKET, Interest::READABLE)?;
        let waker = shutdown_waker(&poll, shutdown)?;
        Ok(UdpEcho {
            poll,
            socket,
            buf: vec![0; DATAGRAM_BUFFER].into_boxed_slice(),
            queue: ReplyQueue::new(QUEUE_DATAGRAMS, QUEUE_BYTES),
            registered: Interest::READABLE,
            unfinished: false,
            grace_deadline: None,
            _waker: waker,
            shutdown: shutdown.clone(),
            grace,
            stats,
            tally: IoTally::default(),
            datagrams: Datagrams::default(),
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
        self.stats.publish(&mut self.tally);
        self.stats.publish_datagrams(&mut self.datagrams);
    }

    /// Receive and answer datagrams until `WouldBlock`; true if the budget ran out first.
    ///
    /// Edge-triggered: read until `WouldBlock`, or no new event is promised (mio Poll docs,
    /// "Draining readiness"). Unlike a TCP stream, a short datagram says nothing about what
    /// else is queued, so only `WouldBlock` means drained.
    fn receive(&mut self) -> bool {
        for _ in 0..DATAGRAMS_PER_EVENT {
            let (n, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(received) => received,
                Err(e) if would_block(&e) => {
                    trace!("udp recv WouldBlock: drained");
                    return false;
                }
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => {
                    // An error queued on the socket (an ICMP report, say): reading it
                    // cleared it, and datagrams may wait behind it.
                    debug!("udp recv_from: {e}");
                    continue;
                }
            };
            trace!("udp recv n={n} from={from}");
            self.tally.reads += 1;
            self.tally.bytes_read += n as u64;
            if RESERVED_SOURCE_PORTS.contains(&from.port()) {
                debug!("udp: dropped a datagram from {from}: source port {} is never answered", from.port());
                self.datagrams.dropped_reserved_port += 1;
                self.tally.bytes_unsent += n as u64;
                continue;
            }
            self.reply(n, from);
        }
        trace!("udp receive budget spent: polling before reading on");
        true
    }

    /// Send the datagram in `buf[..n]` back to `to`: at once if no reply is queued ahead of
    /// it, else behind the queue, so replies leave in the order datagrams came.
    fn reply(&mut self, n: usize, to: SocketAddr) {
        if !self.queue.is_empty() {
            self.enqueue(to, n);
            return;
        }
        loop {
            match self.socket.send_to(&self.buf[..n], to) {
                Ok(_) => return self.sent(n, to), // a datagram goes whole or not at all
                Err(e) if would_block(&e) => return self.enqueue(to, n),
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => return self.send_failed(to, n, &e),
            }
        }
    }

    /// The kernel refused `buf[..n]` for now: copy it into the queue, pushing the oldest
    /// reply out if the queue is full.
    fn enqueue(&mut self, to: SocketAddr, n: usize) {
        let queued_before = self.queue.bytes;
        let dropped = self.queue.push(to, &self.buf[..n]);
        self.datagrams.dropped_queue_full += dropped as u64;
        self.tally.bytes_unsent += (queued_before + n - self.queue.bytes) as u64; // the dropped
        if dropped > 0 {
            debug!("udp reply queue full: dropped the {dropped} oldest replies");
        }
        trace!("udp send WouldBlock: queued n={n} to={to} (queued: {})", self.queue.len());
    }

    /// WRITABLE: send queued replies, oldest first, until the kernel refuses again.
    fn flush_queue(&mut self) {
        while let Some((to, data)) = self.queue.front() {
            match self.socket.send_to(data, to) {
                Ok(_) => {
                    let n = data.len();
                    self.queue.pop();
                    self.sent(n, to);
                }
                Err(e) if would_block(&e) => break, // the next WRITABLE edge
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => {
                    let n = data.len();
                    self.queue.pop();
                    self.send_failed(to, n, &e);
                }
            }
        }
    }

    fn sent(&mut self, n: usize, to: SocketAddr) {
        trace!("udp send n={n} to={to}");
        self.datagrams.echoed += 1;
        self.tally.bytes_echoed += n as u64;
    }

    /// `send_to` failed for good (no route, a message the kernel will not send): this one
    /// reply is lost, the echo goes on.
    fn send_failed(&mut self, to: SocketAddr, n: usize, e: &io::Error) {
        debug!("udp send_to {to}: {e}: reply dropped");
        self.datagrams.dropped_send_failed += 1;
        self.tally.bytes_unsent += n as u64;
    }

    /// READABLE unless shutting down; WRITABLE while replies are queued. The only place that
    /// calls `reregister`.
    fn update_interest(&mut self) -> io::Result<()> {
        let reading = self.grace_deadline.is_none();
        let interest = match (reading, !self.queue.is_empty()) {
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
        info!("shutting down: {} replies queued, flushing them for up to {:?}", self.queue.len(), self.grace);
    }

    /// Shutting down, and the queue is empty or the grace period is over (what is still
    /// queued then is never sent: counted as unsent, so nothing shows as pending).
    fn finished(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.grace_deadline else { return false };
        if !self.queue.is_empty() && now >= deadline {
            warn!("grace period over: {} queued replies not sent", self.queue.len());
            self.tally.bytes_unsent += self.queue.bytes as u64;
        }
        self.queue.is_empty() || now >= deadline
    }
}

/// Replies waiting for the kernel, oldest first, within a count and a byte bound; when full,
/// the oldest make room. Each reply's bytes are copied out of the shared buffer, exactly
/// sized, and freed when sent.
#[derive(Debug)]
struct ReplyQueue {
    replies: VecDeque<(SocketAddr, Box<[u8]>)>,
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
    fn push(&mut self, to: SocketAddr, data: &[u8]) -> usize {
        let mut dropped = 0;
        while !self.replies.is_empty()
            && (self.replies.len() >= self.max_datagrams || self.bytes + data.len() > self.max_bytes)
        {
            self.pop();
            dropped += 1;
        }
        self.bytes += data.len();
        self.replies.push_back((to, data.into()));
        dropped
    }

    /// The oldest reply.
    fn front(&self) -> Option<(SocketAddr, &[u8])> {
        self.replies.front().map(|(to, data)| (*to, &data[..]))
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

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let mut queue = ReplyQueue::new(3, 1000);
        for port in 1..=3 {
            assert_eq!(queue.push(addr(port), &[port as u8; 10]), 0);
        }
        assert_eq!(queue.push(addr(4), b"newest"), 1);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.front(), Some((addr(2), &[2u8; 10][..])));
    }

    #[test]
    fn the_byte_bound_drops_as_many_as_needed() {
        let mut queue = ReplyQueue::new(100, 100);
        for port in 1..=4 {
            queue.push(addr(port), &[0; 25]);
        }
        assert_eq!(queue.push(addr(5), &[1; 60]), 3, "75 + 60 > 100: three must go");
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
        queue.push(addr(9), b"");
        assert_eq!(queue.front(), Some((addr(9), &b""[..])));
    }
}
