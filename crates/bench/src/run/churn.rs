//! `--mode churn`: connect, echo one message (verified), close; again and again.
//!
//! What it measures is the cost of a connection's whole life on the server: accept,
//! register, the first read and write, and the close, which a long-lived connection pays
//! once and a short-lived one pays every time. `--connections` slots each run one
//! connection at a time; closed loop, a slot starts its next connection as soon as the last
//! one is done; with `--rate`, connections start on schedule (a due connection that finds
//! every slot busy waits, and its latency still counts from its due time). A connection's
//! latency is from its start (or due time) to its echo verified.
//!
//! Connects are non-blocking, so one thread drives every slot. The client closes first, so
//! its ports sit in TIME_WAIT: a fast churn can run out of ephemeral ports, and the error
//! then says so ([`crate::sys::connect_bottleneck`]).

use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::generator::{self, Usage, on_threads};
use super::{Cpu, EVENTS_CAPACITY, Load, Plan, TIMER, Tally};
use crate::framing::Framing;
use crate::histogram::Latency;
use crate::pattern::{CHUNK, PERIOD, Pattern};
use crate::progress::Progress;
use crate::schedule::{RateReport, Schedule};
use crate::stream::{self, Stream};
use crate::target::Target;
use crate::timer::Timer;

/// A slot whose connection failed waits this long before its next, so that a server that
/// refuses everything does not make the generator spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// A Unix socket server's backlog was full: try again this soon.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);
/// The longest a poll sleeps, so that connections past `--connect-timeout` are noticed.
const TIMEOUT_CHECK: Duration = Duration::from_millis(50);

/// What one churn run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    /// The server's address.
    pub target: String,
    /// Connections open at once, at most (`--connections`).
    pub concurrency: usize,
    /// Bytes of the one message each connection echoes (the smallest, when sizes vary).
    pub size: usize,
    /// The largest message.
    pub size_max: usize,
    /// How the message was framed.
    pub framing: Framing,
    /// Load-generator threads.
    pub threads: usize,
    /// Seconds of warm-up.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Connections measured: done inside the window (closed loop) or due inside it (open).
    pub connections: u64,
    /// Connections done at any time, warm-up included (every echo verified).
    pub total_connections: u64,
    /// `connections` per second.
    pub conns_per_s: f64,
    /// Connect + echo time, from each connection's start (open loop: its due time).
    pub latency: Latency,
    /// Open loop (`--rate`, connections per second): asked beside achieved.
    pub rate: Option<RateReport>,
    /// Connections that failed: refused, reset, closed early, timed out.
    pub errors: u64,
    /// Echoes with at least one wrong byte.
    pub mismatches: u64,
    /// The first error, for the reader.
    pub first_error: Option<String>,
    /// CPU use over the window.
    #[serde(flatten)]
    pub cpu: Cpu,
    /// False when the load generator may have been the bottleneck (see `warnings`).
    pub valid: bool,
    /// Why the run is not valid, one sentence each; empty when it is.
    pub warnings: Vec<String>,
}

impl ChurnReport {
    /// No failed connection and no corrupted echo.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.mismatches == 0
    }
}

/// Churn connections against `target` as `load` says (`connections` = slots).
pub fn run_churn(
    target: &Target,
    load: &Load,
    watch: Option<u32>,
    progress: &Progress,
) -> io::Result<ChurnReport> {
    load.validate().map_err(|msg| io::Error::new(ErrorKind::InvalidInput, msg))?;
    let pattern = load.framing.pattern();
    let plan = Plan::starting_now(load);
    let workers = load.threads.clamp(1, load.connections);
    let slots: Vec<usize> = (0..workers)
        .map(|w| load.connections / workers + usize::from(w < load.connections % workers))
        .collect();
    let (tallies, usage) =
        on_threads(&plan, slots, &load.pin, watch, progress, None, |w, slots, completed| {
            let schedule = plan.schedule(slots, w, workers);
            Churner::new(&plan, &pattern, target, w, slots)?.run(schedule, completed)
        })?;
    let mut total = Tally::default();
    for tally in tallies {
        total.merge(tally.unwrap_or_else(Tally::from_error));
    }
    Ok(ChurnReport::new(target, load, &total, usage))
}

impl ChurnReport {
    fn new(target: &Target, load: &Load, total: &Tally, usage: Usage) -> ChurnReport {
        let secs = load.duration.as_secs_f64();
        let rate = load.rate.map(|asked| RateReport::new(asked, &total.pacing, total.measured, secs));
        let cpu = usage.cpu_all(load);
        let warnings = generator::warnings(&cpu, rate.as_ref());
        ChurnReport {
            target: target.to_string(),
            concurrency: load.connections,
            size: load.sizes.min,
            size_max: load.sizes.max,
            framing: load.framing,
            threads: load.threads,
            warmup_s: load.warmup.as_secs_f64(),
            duration_s: secs,
            connections: total.measured,
            total_connections: total.completed,
            conns_per_s: total.measured as f64 / secs,
            latency: total.round_trips.latency(),
            rate,
            errors: total.errors,
            mismatches: total.mismatches,
            first_error: total.first_error.clone(),
            cpu,
            valid: warnings.is_empty(),
            warnings,
        }
    }
}

/// One connection's life, in a slot.
struct Life {
    stream: Stream,
    /// Its latency counts from here (its start, or its due time).
    at: Instant,
    /// When it started, for `--connect-timeout`.
    started: Instant,
    /// Where its message sits in the pattern.
    origin: u64,
    /// The message's bytes on the wire.
    len: u64,
    connected: bool,
    sent: u64,
    checked: u64,
    corrupt: bool,
}

/// A slot: one connection at a time.
struct Slot {
    life: Option<Life>,
    /// A free slot starts nothing before this (after an error, or a full backlog).
    resume_at: Instant,
}

/// One load-generator thread's slots and their event loop.
struct Churner<'a> {
    plan: &'a Plan,
    pattern: &'a Pattern,
    target: &'a Target,
    poll: Poll,
    slots: Vec<Slot>,
    /// Counts connections, so that each echoes a different stretch of the pattern.
    serial: u64,
    /// Random state for message sizes.
    sizes: u64,
    scratch: Box<[u8]>,
    buf: Vec<u8>,
    tally: Tally,
}

impl<'a> Churner<'a> {
    fn new(
        plan: &'a Plan,
        pattern: &'a Pattern,
        target: &'a Target,
        w: usize,
        slots: usize,
    ) -> io::Result<Self> {
        let now = Instant::now();
        Ok(Churner {
            plan,
            pattern,
            target,
            poll: Poll::new()?,
            slots: (0..slots).map(|_| Slot { life: None, resume_at: now }).collect(),
            serial: w as u64 * 1_000_003,
            sizes: (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            scratch: vec![0; CHUNK].into_boxed_slice(),
            buf: vec![0; CHUNK],
            tally: Tally::default(),
        })
    }

    /// The event loop: start connections in free slots, serve events, time out the slow,
    /// until the end (and, open loop, the drain).
    fn run(mut self, mut schedule: Option<Schedule>, completed: &AtomicU64) -> io::Result<Tally> {
        let mut timer = Timer::new()?;
        if schedule.is_some() {
            self.poll.registry().register(&mut timer, TIMER, Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let now = Instant::now();
            self.start_free_slots(&mut schedule, now);
            self.time_out(now);
            let Some(timeout) = self.plan.poll_timeout(now, self.tally.outstanding) else { break };
            if let Some(next) = schedule.as_ref().map(Schedule::next_due).filter(|due| *due < self.plan.end) {
                timer.fire_in(next.saturating_duration_since(now))?;
            }
            match self.poll.poll(&mut events, Some(timeout.min(TIMEOUT_CHECK))) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal; poll again
                result => result?,
            }
            let before = self.tally.completed;
            for event in events.iter() {
                match event.token() {
                    TIMER => timer.clear(), // due connections start at the top of the loop
                    Token(slot) => self.on_event(slot),
                }
            }
            completed.fetch_add(self.tally.completed - before, Ordering::Relaxed);
        }
        self.give_up(schedule.as_mut());
        Ok(self.tally)
    }

    /// Start a connection in every free slot whose turn it is: closed loop, at once; open
    /// loop, one per due tick.
    fn start_free_slots(&mut self, schedule: &mut Option<Schedule>, now: Instant) {
        for slot in 0..self.slots.len() {
            let free = &self.slots[slot];
            if free.life.is_some() || free.resume_at > now {
                continue;
            }
            let at = match schedule {
                None if now < self.plan.end => now,
                None => return,
                Some(schedule) => {
                    let Some((_, due)) = schedule.take_due(now, self.plan.end) else { return };
                    let in_window = self.plan.is_measuring(due);
                    self.tally.pacing.taken(due, now, in_window);
                    self.tally.sent_in_window(u64::from(in_window));
                    self.tally.outstanding += u64::from(in_window);
                    due
                }
            };
            self.start(slot, at, now);
        }
    }

    /// Begin one connection in `slot`.
    fn start(&mut self, slot: usize, at: Instant, now: Instant) {
        let mut stream = match stream::connect_nonblocking(self.target, self.plan.connect_timeout) {
            Ok(stream) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // A Unix socket's backlog is full: the server is slow, not broken. Retry.
                self.slots[slot].resume_at = now + BACKLOG_RETRY;
                return self.unstarted(at);
            }
            Err(e) => {
                self.slots[slot].resume_at = now + ERROR_BACKOFF;
                self.tally.connection_lost(&e);
                return self.unstarted(at);
            }
        };
        if let Err(e) =
            self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            self.tally.connection_lost(&e);
            return self.unstarted(at);
        }
        self.serial += 1;
        let size = self.plan.sizes.pick(&mut self.sizes);
        self.slots[slot].life = Some(Life {
            stream,
            at,
            started: now,
            origin: self.serial.wrapping_mul(7_919) % PERIOD as u64,
            len: self.plan.framing.wire_len(size),
            connected: false,
            sent: 0,
            checked: 0,
            corrupt: false,
        });
    }

    /// A connection due in the window never got going: it is not outstanding any more.
    fn unstarted(&mut self, at: Instant) {
        if self.plan.rate.is_some() && self.plan.is_measuring(at) {
            self.tally.outstanding = self.tally.outstanding.saturating_sub(1);
        }
    }

    /// An event for `slot`: finish connecting, send, receive; end the life when its echo is
    /// whole or it failed.
    fn on_event(&mut self, slot: usize) {
        let Some(mut life) = self.slots[slot].life.take() else { return }; // stale event
        match self.advance(&mut life) {
            Ok(false) => self.slots[slot].life = Some(life),
            Ok(true) => {
                let now = Instant::now();
                let (at, len, corrupt) = (life.at, life.len, life.corrupt);
                self.end_life(life);
                self.tally.message_done(self.plan, now, at, len, corrupt);
            }
            Err(e) => self.fail(slot, life, &e),
        }
    }

    /// Move a life along as far as the socket allows; `Ok(true)` when its echo is complete.
    fn advance(&mut self, life: &mut Life) -> io::Result<bool> {
        if !life.connected {
            if !life
                .stream
                .connected()
                .map_err(|e| stream::connect_error(self.target, e, self.plan.connect_timeout))?
            {
                return Ok(false); // not yet: a WRITABLE event will come
            }
            life.connected = true;
            if let Some(version) = self.plan.proxy {
                life.stream.send_proxy_header(version)?;
            }
        }
        self.send(life)?;
        self.receive(life)?;
        Ok(life.checked == life.len)
    }

    /// Write the message until it is all out or the socket is full.
    fn send(&mut self, life: &mut Life) -> io::Result<()> {
        while life.sent < life.len {
            let len = (life.len - life.sent).min(CHUNK as u64) as usize;
            let out = &mut self.scratch[..len];
            self.plan.framing.fill(self.pattern, life.origin, (0, life.len), life.sent, out);
            match life.stream.write(out) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => life.sent += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()), // full; WRITABLE will come
                Err(e) if e.kind() == ErrorKind::Interrupted => {}            // a signal; retry
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Read and check the echo until the socket is drained or the echo is whole.
    fn receive(&mut self, life: &mut Life) -> io::Result<()> {
        while life.checked < life.len {
            let n = match life.stream.read(&mut self.buf) {
                Ok(0) => {
                    return Err(io::Error::new(ErrorKind::UnexpectedEof, "the server closed the connection"));
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()), // drained
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,     // a signal; retry
                Err(e) => return Err(e),
            };
            if life.checked + n as u64 > life.sent {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "the server sent back more than it was sent",
                ));
            }
            let want = &mut self.scratch[..n];
            self.plan.framing.fill(self.pattern, life.origin, (0, life.len), life.checked, want);
            life.corrupt |= self.buf[..n] != *want;
            life.checked += n as u64;
        }
        Ok(())
    }

    /// Close a life's connection (dropping it closes the socket).
    fn end_life(&mut self, mut life: Life) {
        let _ = self.poll.registry().deregister(&mut life.stream); // best effort: it is going away
    }

    /// A life failed: count it, close it, and rest the slot a little.
    fn fail(&mut self, slot: usize, life: Life, e: &io::Error) {
        let at = life.at;
        self.end_life(life);
        self.tally.connection_lost(e);
        self.unstarted(at);
        self.slots[slot].resume_at = Instant::now() + ERROR_BACKOFF;
    }

    /// Fail every life older than `--connect-timeout`.
    fn time_out(&mut self, now: Instant) {
        let limit = self.plan.connect_timeout;
        for slot in 0..self.slots.len() {
            let expired =
                self.slots[slot].life.as_ref().is_some_and(|l| now.duration_since(l.started) > limit);
            if let Some(life) = self.slots[slot].life.take_if(|_| expired) {
                let msg = format!("no connect and echo within {}s (--connect-timeout)", limit.as_secs_f64());
                self.fail(slot, life, &io::Error::new(ErrorKind::TimedOut, msg));
            }
        }
    }

    /// Open loop, at the end: connections due in the window that never finished (or never
    /// started, every slot being busy) count as unanswered, at their age now.
    fn give_up(&mut self, schedule: Option<&mut Schedule>) {
        let Some(schedule) = schedule else { return };
        let now = Instant::now();
        let lives = self.slots.iter().filter_map(|s| s.life.as_ref().map(|l| l.at));
        let never_started = std::iter::from_fn(|| schedule.take_due(now, self.plan.end).map(|(_, due)| due));
        for at in lives.chain(never_started).filter(|at| self.plan.is_measuring(*at)).collect::<Vec<_>>() {
            self.tally.pacing.unanswered += 1;
            self.tally.round_trips.record(now.saturating_duration_since(at));
        }
    }
}
