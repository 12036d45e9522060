//! UDP echo (RFC 862, "UDP Based Echo Service"): each datagram goes back to its sender,
//! unchanged, empty ones included.
//!
//! ```text
//!   UDP token readable -> recv_from until WouldBlock (or the budget): send_to the sender,
//!                         or queue the reply if the kernel refuses (WouldBlock)
//!   UDP token writable -> send queued replies until WouldBlock
//!   shutdown           -> stop reading; flush the queue within the grace period
//!   interest: READABLE, plus WRITABLE only while replies are queued
//! ```
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
use std::net::SocketAddr;

use log::{debug, trace, warn};
use mio::{Interest, Registry, Token};

use crate::lifecycle::admit_datagram;
use crate::net::{interrupted, would_block};
use crate::stats::{Datagrams, IoTally, Stats};

/// Datagrams received per readiness event before the loop polls again (for the waker's sake,
/// and the other sockets': a flood must not keep them waiting).
const DATAGRAMS_PER_EVENT: usize = 64;

/// The reply queue's bounds: whichever is reached first. 1024 replies absorb a burst; the
/// byte bound keeps 1024 large datagrams from holding 64 MiB.
const QUEUE_DATAGRAMS: usize = 1024;
const QUEUE_BYTES: usize = 4 << 20;

/// One UDP socket of the loop and the replies it owes.
#[derive(Debug)]
pub struct UdpPort {
    /// The socket every datagram of this listener arrives on and every reply leaves from.
    socket: mio::net::UdpSocket,
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
    /// Take a bound UDP socket, make it non-blocking, and register it as `token`.
    pub fn new(socket: std::net::UdpSocket, registry: &Registry, token: Token) -> io::Result<UdpPort> {
        socket.set_nonblocking(true)?;
        let mut socket = mio::net::UdpSocket::from_std(socket);
        registry.register(&mut socket, token, Interest::READABLE)?;
        Ok(UdpPort {
            socket,
            queue: ReplyQueue::new(QUEUE_DATAGRAMS, QUEUE_BYTES),
            registered: Interest::READABLE,
            reading: true,
            unfinished: false,
            datagrams: Datagrams::default(),
        })
    }

    /// The socket may be ready (an event, or the budget ran out last turn): send what is
    /// queued, then receive and answer, using the loop's shared `buf`; count in `tally`.
    /// Then ask for what it needs next.
    pub fn serve(
        &mut self,
        writable: bool,
        buf: &mut [u8],
        tally: &mut IoTally,
        registry: &Registry,
        token: Token,
    ) -> io::Result<()> {
        if writable {
            self.flush_queue(tally);
        }
        self.unfinished = self.reading && self.receive(buf, tally);
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

    /// Receive and answer datagrams until `WouldBlock`; true if the budget ran out first.
    ///
    /// Edge-triggered: read until `WouldBlock`, or no new event is promised (mio Poll docs,
    /// "Draining readiness"). Unlike a TCP stream, a short datagram says nothing about what
    /// else is queued, so only `WouldBlock` means drained.
    fn receive(&mut self, buf: &mut [u8], tally: &mut IoTally) -> bool {
        for _ in 0..DATAGRAMS_PER_EVENT {
            let (n, from) = match self.socket.recv_from(buf) {
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
            if admit_datagram(n, from, tally, &mut self.datagrams) {
                self.reply(&buf[..n], from, tally);
            }
        }
        trace!("udp receive budget spent: polling before reading on");
        true
    }

    /// Send `datagram` back to `to`: at once if no reply is queued ahead of it, else behind
    /// the queue, so replies leave in the order datagrams came.
    fn reply(&mut self, datagram: &[u8], to: SocketAddr, tally: &mut IoTally) {
        if !self.queue.is_empty() {
            return self.enqueue(to, datagram, tally);
        }
        loop {
            match self.socket.send_to(datagram, to) {
                Ok(_) => return self.sent(datagram.len(), to, tally), // whole or not at all
                Err(e) if would_block(&e) => return self.enqueue(to, datagram, tally),
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => return self.send_failed(to, datagram.len(), &e, tally),
            }
        }
    }

    /// The kernel refused `datagram` for now: copy it into the queue, pushing the oldest
    /// reply out if the queue is full.
    fn enqueue(&mut self, to: SocketAddr, datagram: &[u8], tally: &mut IoTally) {
        let queued_before = self.queue.bytes;
        let dropped = self.queue.push(to, datagram);
        self.datagrams.dropped_queue_full += dropped as u64;
        tally.bytes_unsent += (queued_before + datagram.len() - self.queue.bytes) as u64; // the dropped
        if dropped > 0 {
            debug!("udp reply queue full: dropped the {dropped} oldest replies");
        }
        trace!("udp send WouldBlock: queued n={} to={to} (queued: {})", datagram.len(), self.queue.len());
    }

    /// WRITABLE: send queued replies, oldest first, until the kernel refuses again.
    fn flush_queue(&mut self, tally: &mut IoTally) {
        while let Some((to, data)) = self.queue.front() {
            match self.socket.send_to(data, to) {
                Ok(_) => {
                    let n = data.len();
                    self.queue.pop();
                    self.sent(n, to, tally);
                }
                Err(e) if would_block(&e) => break, // the next WRITABLE edge
                Err(e) if interrupted(&e) => continue, // a signal: retry
                Err(e) => {
                    let n = data.len();
                    self.queue.pop();
                    self.send_failed(to, n, &e, tally);
                }
            }
        }
    }

    fn sent(&mut self, n: usize, to: SocketAddr, tally: &mut IoTally) {
        trace!("udp send n={n} to={to}");
        self.datagrams.echoed += 1;
        tally.bytes_echoed += n as u64;
    }

    /// `send_to` failed for good (no route, a message the kernel will not send): this one
    /// reply is lost, the echo goes on.
    fn send_failed(&mut self, to: SocketAddr, n: usize, e: &io::Error, tally: &mut IoTally) {
        debug!("udp send_to {to}: {e}: reply dropped");
        self.datagrams.dropped_send_failed += 1;
        tally.bytes_unsent += n as u64;
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
