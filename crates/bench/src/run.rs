//! The load generator's engine: open the connections, drive them all from mio event loops,
//! check every echoed byte against the [`Pattern`] it was cut from, time every message.
//!
//! ## One message's life
//!
//! *queued* (its slot in `queued_at` takes the time) → *sent*, over as many writes as the
//! kernel needs → *checked* as its echo arrives, however the kernel splits it → *complete*:
//! the round trip is recorded if it ended inside the measured window, and a new message is
//! queued in its place. So each connection keeps exactly `pipeline` messages in flight.
//!
//! Connections are opened one at a time, each pinged before the next ([`crate::stream`]
//! says why).

use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::histogram::{Latency, RoundTrips};
use crate::pattern::{CHUNK, PERIOD, Pattern};
use crate::progress::Progress;
use crate::stream::{self, Stream};
use crate::sys;
use crate::target::Target;

/// Each load-generator thread's read buffer.
const READ_BUFFER: usize = 256 * 1024;
/// Events taken from the kernel per poll.
const EVENTS_CAPACITY: usize = 1024;
/// The whole connect phase gives up after this long.
const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(20);
/// One connect, or one ping, gives up after this long.
const CONNECT_LIMIT: Duration = Duration::from_secs(3);
/// A message needing more than this is a mistake, not a benchmark.
const MAX_MESSAGE: usize = 64 << 20;

/// What load to put on a server.
#[derive(Debug, Clone)]
pub struct Load {
    /// Connections to open.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Load before measuring starts, so connections and caches are warm.
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// Load-generator threads, each its own event loop over its share of the connections.
    pub threads: usize,
    /// Busy-poll instead of sleeping in `epoll_wait`: a round trip then does not include
    /// this process's own wake-up (tens of µs on a VM), at the price of a whole CPU.
    pub spin: bool,
}

impl Load {
    /// Reject loads that cannot run, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.pipeline == 0 || self.threads == 0 {
            return Err("--connections, --pipeline and --threads must be at least 1".into());
        }
        if self.size == 0 || self.size > MAX_MESSAGE {
            return Err(format!("--size must be between 1 byte and {} MiB", MAX_MESSAGE >> 20));
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0 seconds".into());
        }
        Ok(())
    }
}

/// What one echo run measured. Counts are of whole messages.
#[derive(Debug, Clone, Serialize)]
pub struct EchoReport {
    /// The server's address.
    pub target: String,
    /// Connections asked for.
    pub requested: usize,
    /// Connections that were opened and answered their ping.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Load-generator threads.
    pub threads: usize,
    /// Whether the load generator busy-polled.
    pub spin: bool,
    /// Seconds of warm-up.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Round trips completed inside the measured window.
    pub msgs: u64,
    /// Round trips completed at any time, warm-up included (all of them verified).
    pub total_msgs: u64,
    /// `msgs` per second.
    pub msgs_per_s: f64,
    /// Echoed payload, MiB per second (one direction).
    pub mib_per_s: f64,
    /// Round-trip quantiles over the measured window.
    pub latency: Latency,
    /// Connections that failed to open or were lost (reset, closed early, extra bytes).
    pub errors: u64,
    /// Messages that came back with at least one wrong byte.
    pub mismatches: u64,
    /// The first error, for the reader.
    pub first_error: Option<String>,
    /// CPU the load generator used over the window, in CPUs (1.0 = one core busy).
    pub client_cpu: f64,
    /// The load generator was (nearly) saturated, so the server may be faster than shown.
    pub client_bound: bool,
    /// CPU the server used over the window, in CPUs, when its PID was known.
    pub server_cpu: Option<f64>,
}

impl EchoReport {
    /// No connection errors and no corrupted echoes.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.mismatches == 0
    }
}

/// What one idle run saw.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// The server's address.
    pub target: String,
    /// Connections asked for.
    pub requested: usize,
    /// Connections that were opened and answered their ping.
    pub connected: usize,
    /// Connections that could not be opened (or did not answer).
    pub failed: usize,
    /// Connections the server closed while they were held.
    pub dropped: usize,
    /// Connections still open at the end.
    pub held: usize,
    /// Seconds the connect phase took.
    pub connect_s: f64,
    /// Seconds they were held.
    pub duration_s: f64,
    /// The first error, for the reader.
    pub first_error: Option<String>,
}

impl IdleReport {
    /// Every connection asked for was opened and held to the end.
    pub fn is_clean(&self) -> bool {
        self.held == self.requested
    }
}

/// Put `load` on the server at `target` and measure it. `watch` is the server's PID, when
/// known, so that its CPU use over the window is reported too.
pub fn run_echo(
    target: &Target,
    load: &Load,
    watch: Option<u32>,
    progress: &Progress,
) -> io::Result<EchoReport> {
    load.validate().map_err(|msg| io::Error::new(ErrorKind::InvalidInput, msg))?;
    let connected = connect_all(target, load.connections, progress);
    if connected.streams.is_empty() {
        return Err(connected.into_error());
    }
    let pattern = Pattern::new();
    let plan = Plan::starting_now(load);
    let shares = deal(connected.streams, load.threads);
    let completed = AtomicU64::new(0);
    let (tallies, usage) = thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let (plan, pattern, completed) = (&plan, &pattern, &completed);
                scope.spawn(move || drive(plan, pattern, share, completed))
            })
            .collect();
        let usage = watch_window(&plan, watch, progress, &completed);
        let tallies: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(io::Error::other("a load-generator thread panicked"))))
            .collect();
        (tallies, usage)
    });
    progress.finish();
    let mut total =
        Tally { errors: connected.failed as u64, first_error: connected.first_error, ..Tally::default() };
    for tally in tallies {
        total.merge(tally.unwrap_or_else(Tally::from_error));
    }
    Ok(EchoReport::new(target, load, connected.opened, &total, usage))
}

impl EchoReport {
    fn new(target: &Target, load: &Load, connections: usize, total: &Tally, usage: Usage) -> EchoReport {
        let secs = load.duration.as_secs_f64();
        let client_cpu = usage.client.as_secs_f64() / secs;
        EchoReport {
            target: target.to_string(),
            requested: load.connections,
            connections,
            size: load.size,
            pipeline: load.pipeline,
            threads: load.threads,
            spin: load.spin,
            warmup_s: load.warmup.as_secs_f64(),
            duration_s: secs,
            msgs: total.measured,
            total_msgs: total.completed,
            msgs_per_s: total.measured as f64 / secs,
            mib_per_s: (total.measured as f64 * load.size as f64) / secs / f64::from(1 << 20),
            latency: total.round_trips.latency(),
            errors: total.errors,
            mismatches: total.mismatches,
            first_error: total.first_error.clone(),
            client_cpu,
            // A spinning client is always at 100%: that says nothing about the server.
            client_bound: !load.spin && client_cpu >= 0.95 * load.threads as f64,
            server_cpu: usage.server.map(|cpu| cpu.as_secs_f64() / secs),
        }
    }
}

/// Open `count` connections to `target` and hold them, for memory studies; [`IdleSet::hold`]
/// then watches them for a while.
pub fn open_idle(target: &Target, count: usize, progress: &Progress) -> io::Result<IdleSet> {
    let connected = connect_all(target, count, progress);
    if connected.streams.is_empty() {
        return Err(connected.into_error());
    }
    let poll = Poll::new()?;
    let mut streams = Vec::with_capacity(connected.streams.len());
    for (i, mut stream) in connected.streams.into_iter().enumerate() {
        // Only READABLE: an idle connection becomes readable only if the server closes it.
        poll.registry().register(&mut stream, Token(i), Interest::READABLE)?;
        streams.push(Some(stream));
    }
    Ok(IdleSet {
        target: target.to_string(),
        requested: count,
        failed: connected.failed,
        first_error: connected.first_error,
        connect_time: connected.elapsed,
        poll,
        streams,
    })
}

/// Connections held open and otherwise left alone.
pub struct IdleSet {
    target: String,
    requested: usize,
    failed: usize,
    first_error: Option<String>,
    connect_time: Duration,
    poll: Poll,
    /// `None` once the server has closed that connection.
    streams: Vec<Option<Stream>>,
}

impl IdleSet {
    /// Connections open right now (as far as we have seen).
    pub fn held(&self) -> usize {
        self.streams.iter().flatten().count()
    }

    /// Hold the connections for `duration`, counting those the server closes, then close
    /// them all (on drop).
    pub fn hold(mut self, duration: Duration) -> io::Result<IdleReport> {
        let connected = self.streams.len();
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let end = Instant::now() + duration;
        while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            match self.poll.poll(&mut events, Some(left)) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal; poll again
                result => result?,
            }
            for event in events.iter() {
                let slot = &mut self.streams[event.token().0];
                if slot.as_mut().is_some_and(server_closed) {
                    *slot = None; // dropping it closes our end too
                }
            }
        }
        let held = self.held();
        Ok(IdleReport {
            target: self.target,
            requested: self.requested,
            connected,
            failed: self.failed,
            dropped: connected - held,
            held,
            connect_s: self.connect_time.as_secs_f64(),
            duration_s: duration.as_secs_f64(),
            first_error: self.first_error,
        })
    }
}

/// Drain an idle connection that turned readable: did the server close it?
fn server_closed(stream: &mut Stream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an echo server has no reason to talk first; ignore it
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false, // drained, still open
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true, // reset
        }
    }
}

/// The outcome of the connect phase.
struct Connected {
    streams: Vec<Stream>,
    opened: usize,
    failed: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Connected {
    /// Not one connection opened: the first error says why.
    fn into_error(self) -> io::Error {
        let reason = self.first_error.unwrap_or_else(|| "no connection could be opened".into());
        io::Error::new(ErrorKind::ConnectionRefused, reason)
    }
}

/// Open `count` connections one at a time, each pinged before the next.
fn connect_all(target: &Target, count: usize, progress: &Progress) -> Connected {
    progress.connecting(count as u64);
    let start = Instant::now();
    let deadline = start + CONNECT_PHASE_LIMIT;
    let mut streams = Vec::with_capacity(count);
    let (mut failed, mut first_error) = (0, None);
    for _ in 0..count {
        let left = deadline.saturating_duration_since(Instant::now());
        let result = if left.is_zero() {
            let msg = format!("the connect phase took longer than {}s", CONNECT_PHASE_LIMIT.as_secs());
            Err(io::Error::new(ErrorKind::TimedOut, msg))
        } else {
            stream::connect(target, left.min(CONNECT_LIMIT))
        };
        match result {
            Ok(stream) => streams.push(stream),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        progress.connected_one();
    }
    Connected { opened: streams.len(), streams, failed, first_error, elapsed: start.elapsed() }
}

/// Deal connections round-robin to `threads` workers, each numbered (the number picks its
/// place in the pattern).
fn deal(streams: Vec<Stream>, threads: usize) -> Vec<Vec<(u64, Stream)>> {
    let workers = threads.clamp(1, streams.len().max(1));
    let mut shares: Vec<Vec<(u64, Stream)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, stream) in streams.into_iter().enumerate() {
        shares[i % workers].push((i as u64, stream));
    }
    shares
}

/// The timeline and message shape every worker follows.
struct Plan {
    size: u64,
    pipeline: usize,
    spin: bool,
    start: Instant,
    /// Round trips that end from here on are measured.
    measure_from: Instant,
    /// The run ends: no new messages, workers return.
    end: Instant,
}

impl Plan {
    fn starting_now(load: &Load) -> Plan {
        let start = Instant::now();
        let measure_from = start + load.warmup;
        Plan {
            size: load.size as u64,
            pipeline: load.pipeline,
            spin: load.spin,
            start,
            measure_from,
            end: measure_from + load.duration,
        }
    }

    fn is_measuring(&self, now: Instant) -> bool {
        now >= self.measure_from && now < self.end
    }

    /// How long the next poll may sleep; `None` once the run is over.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let left = self.end.checked_duration_since(now).filter(|d| !d.is_zero())?;
        Some(if self.spin { Duration::ZERO } else { left })
    }
}

/// What one worker counted; merged across workers at the end.
#[derive(Default)]
struct Tally {
    /// Round trips completed inside the measured window.
    measured: u64,
    /// Round trips completed at any time.
    completed: u64,
    /// Messages with at least one wrong byte.
    mismatches: u64,
    /// Connections lost.
    errors: u64,
    first_error: Option<String>,
    /// Round trips inside the window.
    round_trips: RoundTrips,
}

impl Tally {
    fn message_done(&mut self, plan: &Plan, now: Instant, round_trip: Duration, corrupt: bool) {
        self.completed += 1;
        self.mismatches += u64::from(corrupt);
        if plan.is_measuring(now) {
            self.measured += 1;
            self.round_trips.record(round_trip);
        }
    }

    fn connection_lost(&mut self, e: &io::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    /// A worker that could not run at all counts as one error.
    fn from_error(e: io::Error) -> Tally {
        let mut tally = Tally::default();
        tally.connection_lost(&io::Error::new(e.kind(), format!("load-generator thread: {e}")));
        tally
    }

    fn merge(&mut self, other: Tally) {
        self.measured += other.measured;
        self.completed += other.completed;
        self.mismatches += other.mismatches;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.round_trips.merge(&other.round_trips);
    }
}

/// One connection's stream of messages. Positions count bytes from the start of this
/// connection's stream (after the ping): invariant `checked <= sent <= queued`, and
/// `queued - checked` is at most `pipeline` messages.
struct Flow {
    stream: Stream,
    /// Where this connection's stream starts in the pattern.
    origin: u64,
    /// Bytes of whole messages queued so far.
    queued: u64,
    /// Bytes the kernel has taken.
    sent: u64,
    /// Bytes echoed back and compared.
    checked: u64,
    /// The message arriving now has had a wrong byte.
    corrupt: bool,
    /// When message `m` was queued, at `m % pipeline`: allocated once, reused forever.
    queued_at: Box<[Instant]>,
    /// False once the connection failed; its events are ignored from then on.
    open: bool,
}

impl Flow {
    fn new(stream: Stream, id: u64, plan: &Plan) -> Flow {
        Flow {
            stream,
            origin: id.wrapping_mul(81_799) % PERIOD as u64,
            queued: 0,
            sent: 0,
            checked: 0,
            corrupt: false,
            queued_at: vec![plan.start; plan.pipeline].into_boxed_slice(),
            open: true,
        }
    }

    /// Queue the first `pipeline` messages and send what the kernel takes.
    fn start(&mut self, plan: &Plan, pattern: &Pattern) -> io::Result<()> {
        for _ in 0..plan.pipeline {
            self.queue(plan, plan.start);
        }
        self.send(pattern)
    }

    fn queue(&mut self, plan: &Plan, now: Instant) {
        let message = self.queued / plan.size;
        self.queued_at[(message % plan.pipeline as u64) as usize] = now;
        self.queued += plan.size;
    }

    /// One readiness event: receive if it may be readable, then send whatever is queued.
    /// Flags are hints; the `read` and `write` results are the truth.
    fn on_event(&mut self, event: &Event, w: &mut WorkerState<'_>) -> io::Result<()> {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.receive(w)?;
        }
        self.send(w.pattern)
    }

    /// Write queued bytes straight out of the pattern until all are sent or the socket's
    /// buffer is full. Edge-triggered: on `WouldBlock` we simply stop, because a WRITABLE
    /// event is due when the kernel frees space (mio Poll docs, "Draining readiness").
    fn send(&mut self, pattern: &Pattern) -> io::Result<()> {
        while self.sent < self.queued {
            let len = (self.queued - self.sent).min(CHUNK as u64) as usize;
            match self.stream.write(pattern.window(self.origin + self.sent, len)) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()), // full; WRITABLE will come
                Err(e) if e.kind() == ErrorKind::Interrupted => {}            // a signal; retry
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
            let now = Instant::now();
            let data = &w.buf[..n];
            self.check(data, now, w.pattern, w.plan, &mut w.tally)?;
            if n < w.buf.len() {
                return Ok(());
            }
        }
    }

    /// Compare echoed bytes with what was sent, message by message; complete each message
    /// whose last byte is here.
    fn check(
        &mut self,
        mut data: &[u8],
        now: Instant,
        pattern: &Pattern,
        plan: &Plan,
        tally: &mut Tally,
    ) -> io::Result<()> {
        if self.checked + data.len() as u64 > self.sent {
            return Err(io::Error::new(ErrorKind::InvalidData, "the server sent back more than it was sent"));
        }
        while !data.is_empty() {
            let left_in_message = (plan.size - self.checked % plan.size) as usize;
            let (part, rest) = data.split_at(data.len().min(left_in_message));
            self.corrupt |= !pattern.matches(self.origin + self.checked, part);
            self.checked += part.len() as u64;
            data = rest;
            if self.checked.is_multiple_of(plan.size) {
                self.complete(now, plan, tally);
            }
        }
        Ok(())
    }

    /// The message just checked is whole: record it and, before the end, queue the next.
    fn complete(&mut self, now: Instant, plan: &Plan, tally: &mut Tally) {
        let message = self.checked / plan.size - 1;
        let queued_at = self.queued_at[(message % plan.pipeline as u64) as usize];
        tally.message_done(
            plan,
            now,
            now.saturating_duration_since(queued_at),
            std::mem::take(&mut self.corrupt),
        );
        if now < plan.end {
            self.queue(plan, now);
        }
    }

    /// Give up on this connection: stop polling it and close it.
    fn close(&mut self, poll: &Poll) {
        self.open = false;
        let _ = poll.registry().deregister(&mut self.stream); // best effort: it is going away
        let _ = self.stream.shutdown(); // best effort too
    }
}

/// What every flow of one worker shares.
struct WorkerState<'a> {
    plan: &'a Plan,
    pattern: &'a Pattern,
    buf: Vec<u8>,
    tally: Tally,
}

/// One load-generator thread: an event loop over its share of the connections, until the
/// plan's end. `completed` is bumped after each poll, for the progress bar.
fn drive(
    plan: &Plan,
    pattern: &Pattern,
    share: Vec<(u64, Stream)>,
    completed: &AtomicU64,
) -> io::Result<Tally> {
    let mut poll = Poll::new()?;
    let mut flows = Vec::with_capacity(share.len());
    for (i, (id, mut stream)) in share.into_iter().enumerate() {
        // Registered once for both directions and never re-registered: edge-triggered
        // events only say "something changed", and each handler tries what it needs.
        poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        flows.push(Flow::new(stream, id, plan));
    }
    let mut w = WorkerState { plan, pattern, buf: vec![0; READ_BUFFER], tally: Tally::default() };
    for flow in &mut flows {
        if let Err(e) = flow.start(plan, pattern) {
            flow.close(&poll);
            w.tally.connection_lost(&e);
        }
    }
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    while let Some(timeout) = plan.poll_timeout(Instant::now()) {
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal; poll again
            result => result?,
        }
        let before = w.tally.completed;
        for event in events.iter() {
            let flow = &mut flows[event.token().0];
            if !flow.open {
                continue;
            }
            if let Err(e) = flow.on_event(event, &mut w) {
                flow.close(&poll);
                w.tally.connection_lost(&e);
            }
        }
        completed.fetch_add(w.tally.completed - before, Ordering::Relaxed);
    }
    Ok(w.tally)
}

/// CPU time spent over the measured window.
struct Usage {
    client: Duration,
    server: Option<Duration>,
}

/// The calling thread (not a worker) sleeps through the run, reading CPU times at the
/// window's edges and moving the progress bar.
fn watch_window(plan: &Plan, watch: Option<u32>, progress: &Progress, completed: &AtomicU64) -> Usage {
    let total = plan.end - plan.start;
    progress.measuring(total);
    let tick = |now: Instant| {
        progress.tick(now - plan.start, now >= plan.measure_from, completed.load(Ordering::Relaxed));
    };
    sleep_until(plan.measure_from, tick);
    let (client0, server0) = (sys::own_cpu_time(), watch.and_then(sys::process_cpu_time));
    sleep_until(plan.end, tick);
    let client = sys::own_cpu_time().saturating_sub(client0);
    let server = server0.zip(watch.and_then(sys::process_cpu_time)).map(|(a, b)| b.saturating_sub(a));
    Usage { client, server }
}

/// Sleep until `deadline` in slices of at most 100 ms, calling `tick` after each.
fn sleep_until(deadline: Instant, tick: impl Fn(Instant)) {
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        thread::sleep(left.min(Duration::from_millis(100)));
        tick(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_are_validated() {
        let load = Load {
            connections: 1,
            size: 64,
            pipeline: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            threads: 1,
            spin: false,
        };
        assert_eq!(load.validate(), Ok(()));
        assert!(Load { duration: Duration::ZERO, ..load.clone() }.validate().is_err());
        assert!(Load { size: 0, ..load.clone() }.validate().is_err());
        assert!(Load { pipeline: 0, ..load }.validate().is_err());
    }
}
