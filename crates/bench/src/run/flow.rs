//! One connection's stream of messages: queue, send, check, complete.
//!
//! ## One message's life
//!
//! *queued* (it takes its place at the end of `unechoed`, with the time it counts from) →
//! *sent*, over as many writes as the kernel needs → *checked* as its echo arrives, however
//! the kernel splits it → *complete* once its last byte is checked: its round trip is
//! recorded, and (closed loop) the next message is queued in its place.
//!
//! A message's bytes are never stored: [`Framing::fill`] rebuilds any stretch of any message
//! from where it sits in the stream. In raw framing the bytes are the pattern itself, so a
//! write goes straight out of the pattern and a check is one `memcmp` against it.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::time::Instant;

use mio::Poll;
use mio::event::Event;

use super::{Plan, WorkerState};
use crate::framing::Framing;
use crate::pattern::{CHUNK, PERIOD};
use crate::stream::Stream;

/// A message in flight: where it sits in the stream, and when its round trip starts (when
/// it was queued, closed loop; when it was due, open loop).
#[derive(Debug, Clone, Copy)]
struct Message {
    start: u64,
    end: u64,
    at: Instant,
}

/// One connection's messages. Positions count bytes from the start of this connection's
/// stream (after the ping): invariant `checked <= sent <= queued`.
pub struct Flow {
    stream: Stream,
    /// Where this connection's stream starts in the pattern.
    origin: u64,
    /// Messages queued and not yet wholly echoed, oldest first. Closed loop: at most
    /// `pipeline`. Open loop: as many as the server is behind.
    unechoed: VecDeque<Message>,
    /// Index in `unechoed` of the first message not wholly sent.
    sending: usize,
    /// Bytes of whole messages queued so far.
    queued: u64,
    /// Bytes the kernel has taken.
    sent: u64,
    /// Bytes echoed back and compared.
    checked: u64,
    /// The message arriving now has had a wrong byte.
    corrupt: bool,
    /// This connection's random state, for message sizes.
    sizes: u64,
    /// False once the connection failed; its events are ignored from then on.
    pub open: bool,
}

impl Flow {
    /// Connection number `id`, whose place in the pattern and whose sizes follow from it.
    pub fn new(stream: Stream, id: u64) -> Flow {
        Flow {
            stream,
            origin: id.wrapping_mul(81_799) % PERIOD as u64,
            unechoed: VecDeque::new(),
            sending: 0,
            queued: 0,
            sent: 0,
            checked: 0,
            corrupt: false,
            sizes: id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            open: true,
        }
    }

    /// Closed loop: queue the first `pipeline` messages and send what the kernel takes.
    pub fn start(&mut self, w: &mut WorkerState<'_>) -> io::Result<()> {
        for _ in 0..w.plan.pipeline {
            self.queue(w.plan, w.plan.start);
        }
        self.send(w)
    }

    /// Queue one message whose round trip counts from `at`.
    pub fn queue(&mut self, plan: &Plan, at: Instant) {
        let size = plan.sizes.pick(&mut self.sizes);
        let end = self.queued + plan.framing.wire_len(size);
        self.unechoed.push_back(Message { start: self.queued, end, at });
        self.queued = end;
    }

    /// One readiness event: receive if it may be readable, then send whatever is queued.
    /// Flags are hints; the `read` and `write` results are the truth.
    pub fn on_event(&mut self, event: &Event, w: &mut WorkerState<'_>) -> io::Result<()> {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.receive(w)?;
        }
        self.send(w)
    }

    /// Write queued bytes until all are sent or the socket's buffer is full. Edge-triggered:
    /// on `WouldBlock` we simply stop, because a WRITABLE event is due when the kernel
    /// frees space (mio Poll docs, "Draining readiness").
    pub fn send(&mut self, w: &mut WorkerState<'_>) -> io::Result<()> {
        while self.sent < self.queued {
            let len = (self.queued - self.sent).min(CHUNK as u64) as usize;
            let bytes = match w.plan.framing {
                Framing::Raw => w.pattern.window(self.origin + self.sent, len),
                Framing::Line | Framing::Length => {
                    self.compose(w, len);
                    &w.scratch[..len]
                }
            };
            match self.stream.write(bytes) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.sent_more(n, w),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()), // full; WRITABLE will come
                Err(e) if e.kind() == ErrorKind::Interrupted => {}            // a signal; retry
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Rebuild the next `len` unsent bytes, across as many messages as they span, into the
    /// worker's scratch buffer.
    fn compose(&self, w: &mut WorkerState<'_>, len: usize) {
        let (mut from, to) = (self.sent, self.sent + len as u64);
        for message in self.unechoed.range(self.sending..) {
            if from >= to {
                break;
            }
            let upto = message.end.min(to);
            let out = &mut w.scratch[(from - self.sent) as usize..(upto - self.sent) as usize];
            w.plan.framing.fill(w.pattern, self.origin, (message.start, message.end), from, out);
            from = upto;
        }
    }

    /// The kernel took `n` more bytes: count the messages now wholly sent.
    fn sent_more(&mut self, n: usize, w: &mut WorkerState<'_>) {
        self.sent += n as u64;
        let before = self.sending;
        while self.unechoed.get(self.sending).is_some_and(|m| m.end <= self.sent) {
            self.sending += 1;
        }
        if self.sending > before && w.plan.is_measuring(Instant::now()) {
            w.tally.sent_in_window((self.sending - before) as u64);
        }
    }

    /// Edge-triggered: read until the socket is drained. A read shorter than the buffer
    /// proves that (epoll(7): "if you call read(2) ... and read(2) returns a lower number of
    /// bytes, you can be sure of having exhausted the read I/O space"), which saves the
    /// extra `read` that would only say `WouldBlock`.
    fn receive(&mut self, w: &mut WorkerState<'_>) -> io::Result<()> {
        loop {
            let n = match self.stream.read(&mut w.buf) {
                Ok(0) => {
                    return Err(io::Error::new(ErrorKind::UnexpectedEof, "the server closed the connection"));
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()), // drained
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,     // a signal; retry
                Err(e) => return Err(e),
            };
            let data = std::mem::take(&mut w.buf);
            let checked = self.check(&data[..n], Instant::now(), w);
            w.buf = data;
            checked?;
            if n < w.buf.len() {
                return Ok(());
            }
        }
    }

    /// Compare echoed bytes with what was sent, message by message; complete each message
    /// whose last byte is here.
    fn check(&mut self, mut data: &[u8], now: Instant, w: &mut WorkerState<'_>) -> io::Result<()> {
        if self.checked + data.len() as u64 > self.sent {
            return Err(io::Error::new(ErrorKind::InvalidData, "the server sent back more than it was sent"));
        }
        while let Some(&message) = self.unechoed.front() {
            if data.is_empty() {
                break;
            }
            let left_in_message = (message.end - self.checked) as usize;
            let (part, rest) = data.split_at(data.len().min(left_in_message));
            self.corrupt |= !self.matches(message, part, w);
            self.checked += part.len() as u64;
            data = rest;
            if self.checked == message.end {
                self.complete(now, w);
            }
        }
        Ok(())
    }

    /// Does `part`, echoed from position `checked` on inside `message`, match what was sent?
    fn matches(&self, message: Message, part: &[u8], w: &mut WorkerState<'_>) -> bool {
        let framing = w.plan.framing;
        if framing == Framing::Raw {
            return w.pattern.matches(self.origin + self.checked, part);
        }
        let mut from = self.checked;
        part.chunks(CHUNK).all(|piece| {
            let want = &mut w.scratch[..piece.len()];
            framing.fill(w.pattern, self.origin, (message.start, message.end), from, want);
            from += piece.len() as u64;
            piece == want
        })
    }

    /// The oldest message is wholly echoed: record it and, closed loop before the end, queue
    /// the next.
    fn complete(&mut self, now: Instant, w: &mut WorkerState<'_>) {
        let Some(message) = self.unechoed.pop_front() else { return };
        // It was wholly sent (checked <= sent), so `sending` had moved past it.
        self.sending -= 1;
        let corrupt = std::mem::take(&mut self.corrupt);
        w.tally.message_done(w.plan, now, message.at, message.end - message.start, corrupt);
        if w.plan.rate.is_none() && now < w.plan.end {
            self.queue(w.plan, now);
        }
    }

    /// Open loop, at the end of the drain: count the messages due in the window that never
    /// came back, recording each at its age now (a lower bound on its latency, so that the
    /// quantiles cannot hide it).
    pub fn give_up(&mut self, now: Instant, w: &mut WorkerState<'_>) {
        for message in self.unechoed.drain(..).filter(|m| w.plan.is_measuring(m.at)) {
            w.tally.pacing.unanswered += 1;
            w.tally.record(now.saturating_duration_since(message.at));
        }
    }

    /// Give up on this connection: stop polling it and close it.
    pub fn close(&mut self, poll: &Poll, w: &mut WorkerState<'_>) {
        self.open = false;
        if w.plan.rate.is_some() {
            // Its messages due in the window will never be answered.
            let due = self.unechoed.iter().filter(|m| w.plan.is_measuring(m.at)).count() as u64;
            w.tally.outstanding = w.tally.outstanding.saturating_sub(due);
        }
        let _ = poll.registry().deregister(&mut self.stream); // best effort: it is going away
        let _ = self.stream.shutdown(); // best effort too
    }
}
