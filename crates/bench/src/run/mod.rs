//! The load generator's engines: open the connections, drive them all from mio event
//! loops, check every echoed byte against what was sent, time every message.
//!
//! - this file: the echo engine's plan, tallies and event loop (closed loop: `pipeline`
//!   messages in flight per connection; open loop: `--rate`, see [`crate::schedule`]),
//!   several loads at once on one timeline ([`run_together`], for the fairness scenario),
//!   and the watch over the generator itself (`generator`);
//! - `flow`: one connection's messages; `connect`: the connect phase;
//! - `idle`, `churn`, `udp`: the other modes, each on the same plan and window;
//! - `chaos`: the echo engine beside the `hostile` clients, with the server watched.

mod chaos;
mod churn;
mod connect;
mod flow;
mod generator;
mod hostile;
mod idle;
mod udp;
mod udp_io;

pub use chaos::{ChaosOptions, ChaosReport, run_chaos};
pub use churn::{ChurnReport, run_churn};
pub use generator::{Cpu, Delay, DelayKind, Generator};
pub use idle::{IdleReport, IdleSet, open_idle};
pub use udp::{UdpReport, run_udp};

use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::framing::{Framing, Sizes};
use crate::histogram::{Latency, RoundTrips};
use crate::intervals::{Interval, IntervalClock, IntervalLog};
use crate::pattern::{CHUNK, Pattern};
use crate::progress::Progress;
use crate::proxy::ProxyVersion;
use crate::schedule::{Pacing, RateReport, Schedule};
use crate::stream::Stream;
use crate::target::Target;
use crate::timer::Timer;
use connect::{connect_all, deal};
use flow::Flow;
use generator::on_threads;

/// Each load-generator thread's read buffer.
const READ_BUFFER: usize = 256 * 1024;
/// Events taken from the kernel per poll.
const EVENTS_CAPACITY: usize = 1024;
/// A message needing more than this is a mistake, not a benchmark.
const MAX_MESSAGE: usize = 64 << 20;
/// Open loop: how long after the window the echoes of messages due in it are still
/// waited for. Those still missing then are counted as unanswered.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Open loop: the most messages released between two polls.
const RELEASE_BATCH: usize = 1024;
/// `--connect-timeout`'s default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The token of a worker's timer (no connection has it: slab keys are small): the
/// schedule's, open loop; the scheduling-delay probe's, closed loop.
const TIMER: Token = Token(usize::MAX);
/// Closed loop: how often the probe timer fires; how late each firing is served is the
/// generator's scheduling delay.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// What load to put on a server.
#[derive(Debug, Clone)]
pub struct Load {
    /// Connections to open (UDP: sockets; churn: connections in flight at once).
    pub connections: usize,
    /// Bytes per message: one size, or a range drawn from message by message.
    pub sizes: Sizes,
    /// How messages are framed on the wire.
    pub framing: Framing,
    /// Closed loop: messages in flight per connection.
    pub pipeline: usize,
    /// Open loop: messages (churn: connections) per second over all connections, sent on
    /// schedule whatever the server does.
    pub rate: Option<f64>,
    /// Load before measuring starts, so connections and caches are warm.
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// Load-generator threads, each its own event loop over its share of the connections.
    pub threads: usize,
    /// Busy-poll instead of sleeping in `epoll_wait`: a round trip then does not include
    /// this process's own wake-up (tens of µs on a VM), at the price of a whole CPU.
    pub spin: bool,
    /// One connect (and its ping) gives up after this long; UDP: a datagram not answered
    /// within it is lost.
    pub connect_timeout: Duration,
    /// Begin each connection with a PROXY protocol header (`--proxy-protocol`).
    pub proxy: Option<ProxyVersion>,
    /// CPUs to pin the load-generator threads to, thread `i` on `pin[i % len]`; empty:
    /// not pinned.
    pub pin: Vec<usize>,
}

impl Load {
    /// A closed-loop, raw, fixed-size load with the defaults for everything else.
    pub fn closed(connections: usize, size: usize, pipeline: usize) -> Load {
        Load {
            connections,
            sizes: Sizes::fixed(size),
            framing: Framing::Raw,
            pipeline,
            rate: None,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            threads: 1,
            spin: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            proxy: None,
            pin: Vec::new(),
        }
    }

    /// Reject loads that cannot run, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.pipeline == 0 || self.threads == 0 {
            return Err("--connections, --pipeline and --threads must be at least 1".into());
        }
        let min = self.framing.min_size();
        if self.sizes.min < min || self.sizes.max > MAX_MESSAGE || self.sizes.min > self.sizes.max {
            return Err(format!(
                "--size must be between {min} and {} MiB bytes{}, and MIN-MAX in order",
                MAX_MESSAGE >> 20,
                if min == 0 { "" } else { " (0 only with --framing length)" }
            ));
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0 seconds".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("--connect-timeout must be more than 0 seconds".into());
        }
        match self.rate {
            Some(rate) if !(rate.is_finite() && rate > 0.0) => Err("--rate must be more than 0".into()),
            _ => Ok(()),
        }
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
    /// Bytes per message (the smallest, when sizes vary).
    pub size: usize,
    /// The largest message (equal to `size` unless `--size MIN-MAX`).
    pub size_max: usize,
    /// How messages were framed.
    pub framing: Framing,
    /// Closed loop: messages in flight per connection.
    pub pipeline: usize,
    /// Load-generator threads.
    pub threads: usize,
    /// Whether the load generator busy-polled.
    pub spin: bool,
    /// Seconds of warm-up.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Round trips measured: completed inside the window (closed loop), or due inside it
    /// and answered (open loop).
    pub msgs: u64,
    /// Round trips completed at any time, warm-up included (all of them verified).
    pub total_msgs: u64,
    /// `msgs` per second.
    pub msgs_per_s: f64,
    /// Echoed bytes of the measured messages (frames included), MiB per second.
    pub mib_per_s: f64,
    /// Round-trip quantiles over the measured messages; open loop, from each message's due
    /// time.
    pub latency: Latency,
    /// Open loop (`--rate`): the asked rate beside the achieved one.
    pub rate: Option<RateReport>,
    /// Connections that failed to open or were lost (reset, closed early, extra bytes).
    pub errors: u64,
    /// Messages that came back with at least one wrong byte.
    pub mismatches: u64,
    /// The first error, for the reader.
    pub first_error: Option<String>,
    /// CPU use over the window, and the generator's own lateness.
    #[serde(flatten)]
    pub cpu: Cpu,
    /// False when the load generator may have been the bottleneck: a thread of it used
    /// ≥ 95% of a CPU, or (open loop) it fell behind its schedule. `warnings` says which.
    pub valid: bool,
    /// Why the run is not valid, one sentence each; empty when it is.
    pub warnings: Vec<String>,
}

impl EchoReport {
    /// No connection errors and no corrupted echoes.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.mismatches == 0
    }
}

/// Put `load` on the server at `target` and measure it. `watch` is the server's PID, when
/// known, so that its CPU use (and its children's) over the window is reported too.
pub fn run_echo(
    target: &Target,
    load: &Load,
    watch: Option<u32>,
    progress: &Progress,
) -> io::Result<EchoReport> {
    run_echo_logged(target, load, watch, progress, None)
}

/// [`run_echo`], with the window cut into intervals written to `log`.
pub fn run_echo_logged(
    target: &Target,
    load: &Load,
    watch: Option<u32>,
    progress: &Progress,
    log: Option<&mut IntervalLog>,
) -> io::Result<EchoReport> {
    let mut reports = run_together(target, std::slice::from_ref(load), watch, progress, log)?;
    Ok(reports.remove(0))
}

/// Put several loads on the server at once, each on connections and threads of its own,
/// all on one timeline (the same warm-up and window, so their numbers describe the same
/// seconds): one report per load, in order. Every load must have the warm-up and duration
/// of the first.
pub fn run_together(
    target: &Target,
    loads: &[Load],
    watch: Option<u32>,
    progress: &Progress,
    mut log: Option<&mut IntervalLog>,
) -> io::Result<Vec<EchoReport>> {
    for load in loads {
        load.validate().map_err(|msg| io::Error::new(ErrorKind::InvalidInput, msg))?;
    }
    let mut connected = connect_loads(target, loads, progress)?;
    let start = Instant::now();
    let plans: Vec<Plan> = loads.iter().map(|load| Plan::new(load, start)).collect();
    let patterns: Vec<Pattern> = loads.iter().map(|load| load.framing.pattern()).collect();
    let (shares, counts) = deal_loads(loads, &mut connected);
    let workers = shares.len();
    let (sink, samples) = mpsc::channel();
    let timeline = &plans[0];
    if let Some(log) = log.as_deref_mut() {
        log.begin(timeline.measure_from, timeline.end, workers)?;
    }
    let every = log.as_deref().map(IntervalLog::every);
    let intervals = log.map(|log| (&samples, log));
    let (tallies, usage) =
        on_threads(timeline, shares, &loads[0].pin, watch, progress, intervals, |_, (l, w, share), done| {
            let plan = &plans[l];
            let schedule = plan.schedule(share.len(), w, counts[l]);
            let clock =
                every.map(|every| IntervalClock::new(every, plan.measure_from, plan.end, sink.clone()));
            drive(plan, &patterns[l], share, schedule, clock, done)
        })?;
    // The connections closed only now, after the window's CPU was read: a forking server's
    // children end with their connections, and would take their CPU time with them.
    let mut tallies = tallies.into_iter().map(|t| t.map(|(tally, _connections)| tally));
    let mut reports = Vec::with_capacity(loads.len());
    let mut first_thread = 0;
    for ((load, c), n) in loads.iter().zip(connected).zip(counts) {
        let mut total = Tally { errors: c.failed as u64, first_error: c.first_error, ..Tally::default() };
        // A worker that could not run (or panicked) counts as one error.
        tallies.by_ref().take(n).for_each(|t| total.merge(t.unwrap_or_else(Tally::from_error)));
        let threads = first_thread..first_thread + n;
        reports.push(EchoReport::new(target, load, c.opened, &total, usage.cpu(load, threads)));
        first_thread += n;
    }
    Ok(reports)
}

/// The connect phase of each load in turn; `Err` if a load could open none.
fn connect_loads(
    target: &Target,
    loads: &[Load],
    progress: &Progress,
) -> io::Result<Vec<connect::Connected>> {
    let mut connected = Vec::with_capacity(loads.len());
    for load in loads {
        let c = connect_all(
            target,
            load.connections,
            load.framing.ping(),
            load.proxy,
            load.connect_timeout,
            progress,
        );
        if c.streams.is_empty() {
            return Err(c.into_error());
        }
        connected.push(c);
    }
    Ok(connected)
}

/// One worker's part of a run of several loads: its load, its number within the load, and
/// its numbered connections.
type Share = (usize, usize, Vec<(u64, Stream)>);

/// A share for every worker of every load, and each load's number of workers.
fn deal_loads(loads: &[Load], connected: &mut [connect::Connected]) -> (Vec<Share>, Vec<usize>) {
    let mut shares = Vec::new();
    let mut counts = Vec::with_capacity(loads.len());
    for (l, (load, c)) in loads.iter().zip(connected).enumerate() {
        let dealt = deal(std::mem::take(&mut c.streams), load.threads);
        counts.push(dealt.len());
        shares.extend(dealt.into_iter().enumerate().map(|(w, share)| (l, w, share)));
    }
    (shares, counts)
}

impl EchoReport {
    fn new(target: &Target, load: &Load, connections: usize, total: &Tally, cpu: Cpu) -> EchoReport {
        let secs = load.duration.as_secs_f64();
        let rate = load.rate.map(|asked| RateReport::new(asked, &total.pacing, total.measured, secs));
        let delay = match load.rate {
            Some(_) => Delay::new(DelayKind::SendLateness, &total.delay),
            None => Delay::new(DelayKind::SchedulingDelay, &total.delay),
        };
        let cpu = Cpu { generator: Generator { delay, ..cpu.generator }, ..cpu };
        let warnings = generator::warnings(&cpu, rate.as_ref());
        EchoReport {
            target: target.to_string(),
            requested: load.connections,
            connections,
            size: load.sizes.min,
            size_max: load.sizes.max,
            framing: load.framing,
            pipeline: load.pipeline,
            threads: load.threads,
            spin: load.spin,
            warmup_s: load.warmup.as_secs_f64(),
            duration_s: secs,
            msgs: total.measured,
            total_msgs: total.completed,
            msgs_per_s: total.measured as f64 / secs,
            mib_per_s: total.measured_bytes as f64 / secs / f64::from(1 << 20),
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

/// The timeline and message shape every worker follows.
struct Plan {
    sizes: Sizes,
    framing: Framing,
    pipeline: usize,
    /// Open loop: messages per second over all connections.
    rate: Option<f64>,
    /// All connections, over every worker (a worker's share of the rate follows from it).
    connections: usize,
    spin: bool,
    /// One connect and echo (churn), or one datagram's answer (UDP), gives up after this.
    connect_timeout: Duration,
    /// Churn: the PROXY header each new connection sends first.
    proxy: Option<ProxyVersion>,
    start: Instant,
    /// Round trips that end (closed loop) or are due (open loop) from here on are measured.
    measure_from: Instant,
    /// The run ends: no new messages.
    end: Instant,
    /// Open loop: the echoes of messages due in the window are waited for until here.
    drain_until: Instant,
}

impl Plan {
    fn starting_now(load: &Load) -> Plan {
        Plan::new(load, Instant::now())
    }

    fn new(load: &Load, start: Instant) -> Plan {
        let measure_from = start + load.warmup;
        let end = measure_from + load.duration;
        Plan {
            sizes: load.sizes,
            framing: load.framing,
            pipeline: load.pipeline,
            rate: load.rate,
            connections: load.connections,
            spin: load.spin,
            connect_timeout: load.connect_timeout,
            proxy: load.proxy,
            start,
            measure_from,
            end,
            drain_until: end + DRAIN_LIMIT,
        }
    }

    fn is_measuring(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }

    /// Open loop: worker `w` of `workers`, with `flows` connections, takes its share of the
    /// rate, its first tick offset so that the workers' ticks interleave.
    fn schedule(&self, flows: usize, w: usize, workers: usize) -> Option<Schedule> {
        let per_sec = self.rate? * flows as f64 / self.connections.max(1) as f64;
        let offset = Duration::from_secs_f64(w as f64 / workers as f64 / per_sec);
        Some(Schedule::new(self.start + offset, per_sec))
    }

    /// How long the next poll may sleep; `None` once the run is over. Open loop, the run
    /// goes on after `end` while echoes due in the window are outstanding.
    fn poll_timeout(&self, now: Instant, outstanding: u64) -> Option<Duration> {
        let until = match self.rate {
            Some(_) if now >= self.end && outstanding > 0 => self.drain_until,
            _ => self.end,
        };
        let left = until.checked_duration_since(now).filter(|d| !d.is_zero())?;
        Some(if self.spin { Duration::ZERO } else { left })
    }
}

/// What one worker counted; merged across workers at the end.
#[derive(Default)]
struct Tally {
    /// Round trips measured.
    measured: u64,
    /// Their bytes on the wire.
    measured_bytes: u64,
    /// Round trips completed at any time.
    completed: u64,
    /// Messages with at least one wrong byte.
    mismatches: u64,
    /// Connections lost.
    errors: u64,
    first_error: Option<String>,
    /// Measured round trips.
    round_trips: RoundTrips,
    /// Open loop: the schedule kept, or not.
    pacing: Pacing,
    /// Open loop: messages due in the window not answered yet.
    outstanding: u64,
    /// How late the generator acted in the window: open loop, each message's send after
    /// its due time; closed loop, each probe timer's service after it fired.
    delay: RoundTrips,
    /// With interval statistics: the counts since the last boundary.
    interval: Option<Interval>,
}

impl Tally {
    /// Record a measured round trip (in the interval too, with interval statistics).
    fn record(&mut self, round_trip: Duration) {
        self.round_trips.record(round_trip);
        if let Some(interval) = &mut self.interval {
            interval.round_trips.record(round_trip);
        }
    }

    /// `n` more messages were wholly sent inside the window.
    fn sent_in_window(&mut self, n: u64) {
        self.pacing.sent += n;
        if let Some(interval) = &mut self.interval {
            interval.sent += n;
        }
    }

    /// A message of `bytes` that counts from `at` came back whole at `now`.
    fn message_done(&mut self, plan: &Plan, now: Instant, at: Instant, bytes: u64, corrupt: bool) {
        self.completed += 1;
        self.mismatches += u64::from(corrupt);
        // Closed loop: what completes in the window. Open loop: what was due in it, late
        // or not, so that a stall at the window's end is not cut off.
        let measured = match plan.rate {
            None => plan.is_measuring(now),
            Some(_) => plan.is_measuring(at),
        };
        if measured {
            self.measured += 1;
            self.measured_bytes += bytes;
            self.record(now.saturating_duration_since(at));
            self.outstanding = self.outstanding.saturating_sub(u64::from(plan.rate.is_some()));
        }
    }

    fn connection_lost(&mut self, e: &io::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
        if let Some(interval) = &mut self.interval {
            interval.errors += 1;
        }
    }

    /// A worker that could not run at all counts as one error.
    fn from_error(e: io::Error) -> Tally {
        let mut tally = Tally::default();
        tally.connection_lost(&io::Error::new(e.kind(), format!("load-generator thread: {e}")));
        tally
    }

    fn merge(&mut self, other: Tally) {
        self.measured += other.measured;
        self.measured_bytes += other.measured_bytes;
        self.completed += other.completed;
        self.mismatches += other.mismatches;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.round_trips.merge(&other.round_trips);
        self.pacing.merge(&other.pacing);
        self.delay.merge(&other.delay);
    }
}

/// What every flow of one worker shares.
struct WorkerState<'a> {
    plan: &'a Plan,
    pattern: &'a Pattern,
    /// Where echoes are read into.
    buf: Vec<u8>,
    /// Where framed messages are rebuilt, for sending and for checking.
    scratch: Box<[u8]>,
    tally: Tally,
}

/// One load-generator thread: an event loop over its share of the connections, until the
/// plan's end (open loop: and the drain). `completed` is bumped after each poll, for the
/// progress bar; `clock`, with interval statistics, is told of every boundary. The
/// connections are returned open, for the caller to close once the window is read.
fn drive(
    plan: &Plan,
    pattern: &Pattern,
    share: Vec<(u64, Stream)>,
    mut schedule: Option<Schedule>,
    mut clock: Option<IntervalClock>,
    completed: &AtomicU64,
) -> io::Result<(Tally, Vec<Flow>)> {
    let mut poll = Poll::new()?;
    let mut flows = Vec::with_capacity(share.len());
    for (i, (id, mut stream)) in share.into_iter().enumerate() {
        // Registered once for both directions and never re-registered: edge-triggered
        // events only say "something changed", and each handler tries what it needs.
        poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        flows.push(Flow::new(stream, id));
    }
    let tally = Tally { interval: clock.as_ref().map(|_| Interval::default()), ..Tally::default() };
    let mut w = WorkerState {
        plan,
        pattern,
        buf: vec![0; READ_BUFFER],
        scratch: vec![0; CHUNK].into_boxed_slice(),
        tally,
    };
    let mut timer = Timer::new()?;
    poll.registry().register(&mut timer, TIMER, Interest::READABLE)?;
    let mut probe = Probe::new(&timer, schedule.is_none())?;
    if schedule.is_none() {
        for flow in &mut flows {
            if let Err(e) = flow.start(&mut w) {
                flow.close(&poll, &mut w);
                w.tally.connection_lost(&e);
            }
        }
    }
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    loop {
        let now = Instant::now();
        if let (Some(clock), Some(interval)) = (&mut clock, &mut w.tally.interval) {
            clock.roll(now, interval);
        }
        if let Some(schedule) = &mut schedule {
            release_due(schedule, &mut flows, &poll, &mut w);
            arm_for_next(schedule, &timer, plan)?;
        }
        let Some(timeout) = plan.poll_timeout(now, w.tally.outstanding) else { break };
        let boundary = clock.as_ref().and_then(IntervalClock::next_boundary);
        let timeout = boundary.map_or(timeout, |b| timeout.min(b.saturating_duration_since(now)));
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal; poll again
            result => result?,
        }
        let before = w.tally.completed;
        for event in events.iter() {
            if event.token() == TIMER {
                timer.clear(); // due messages go out at the top of the loop
                probe.fired(&timer, plan, &mut w.tally)?;
                continue;
            }
            let flow = &mut flows[event.token().0];
            if !flow.open {
                continue;
            }
            if let Err(e) = flow.on_event(event, &mut w) {
                flow.close(&poll, &mut w);
                w.tally.connection_lost(&e);
            }
        }
        completed.fetch_add(w.tally.completed - before, Ordering::Relaxed);
    }
    if schedule.is_some() {
        let now = Instant::now();
        flows.iter_mut().filter(|f| f.open).for_each(|f| f.give_up(now, &mut w));
    }
    if let Some(clock) = clock {
        clock.finish(w.tally.interval.take().unwrap_or_default());
    }
    Ok((w.tally, flows))
}

/// Closed loop: a timer that fires every [`PROBE_EVERY`]; how late the event loop gets to
/// it is how long a ready socket waits for this thread too (a busy loop, or a CPU the
/// thread has to wait for). Open loop, the schedule's own lateness says the same.
struct Probe {
    /// When the armed probe is due; `None` when there is no probe (open loop).
    due: Option<Instant>,
}

impl Probe {
    fn new(timer: &Timer, closed_loop: bool) -> io::Result<Probe> {
        if !closed_loop {
            return Ok(Probe { due: None });
        }
        timer.fire_in(PROBE_EVERY)?;
        Ok(Probe { due: Some(Instant::now() + PROBE_EVERY) })
    }

    /// The timer fired: record how late, in the window, and arm the next.
    fn fired(&mut self, timer: &Timer, plan: &Plan, tally: &mut Tally) -> io::Result<()> {
        let Some(due) = self.due else { return Ok(()) };
        let now = Instant::now();
        if now < due {
            return Ok(()); // an early or stale wake-up: the probe is still armed
        }
        if plan.is_measuring(due) {
            tally.delay.record(now - due);
        }
        timer.fire_in(PROBE_EVERY)?;
        self.due = Some(now + PROBE_EVERY);
        Ok(())
    }
}

/// Open loop: queue and send the messages due by now (at most [`RELEASE_BATCH`], so that
/// a generator far behind still reads its echoes in between), each on the connection whose
/// turn it is (round-robin, so each connection gets an even share of the rate).
fn release_due(schedule: &mut Schedule, flows: &mut [Flow], poll: &Poll, w: &mut WorkerState<'_>) {
    let now = Instant::now();
    for _ in 0..RELEASE_BATCH {
        let Some((tick, due)) = schedule.take_due(now, w.plan.end) else { return };
        let flow = &mut flows[(tick % flows.len() as u64) as usize];
        if !flow.open {
            continue; // a lost connection sends nothing more; its errors are counted
        }
        let in_window = w.plan.is_measuring(due);
        w.tally.pacing.taken(due, now, in_window);
        if in_window {
            w.tally.delay.record(now.saturating_duration_since(due));
        }
        w.tally.outstanding += u64::from(in_window);
        flow.queue(w.plan, due);
        if let Err(e) = flow.send(w) {
            flow.close(poll, w);
            w.tally.connection_lost(&e);
        }
    }
}

/// Arm the timer for the next due message, if it is due before the end.
fn arm_for_next(schedule: &Schedule, timer: &Timer, plan: &Plan) -> io::Result<()> {
    let next = schedule.next_due();
    if next < plan.end {
        timer.fire_in(next.saturating_duration_since(Instant::now()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_are_validated() {
        let load =
            Load { warmup: Duration::ZERO, duration: Duration::from_secs(1), ..Load::closed(1, 64, 1) };
        assert_eq!(load.validate(), Ok(()));
        assert!(Load { duration: Duration::ZERO, ..load.clone() }.validate().is_err());
        assert!(Load { sizes: Sizes::fixed(0), ..load.clone() }.validate().is_err());
        assert!(Load { sizes: Sizes { min: 9, max: 8 }, ..load.clone() }.validate().is_err());
        assert!(Load { pipeline: 0, ..load.clone() }.validate().is_err());
        assert!(Load { rate: Some(0.0), ..load.clone() }.validate().is_err());
        assert!(Load { connect_timeout: Duration::ZERO, ..load.clone() }.validate().is_err());
        // A zero-length frame is legal with a length prefix, not as a line.
        let empty = Load { sizes: Sizes { min: 0, max: 10 }, framing: Framing::Length, ..load.clone() };
        assert_eq!(empty.validate(), Ok(()));
        assert!(Load { framing: Framing::Line, ..empty }.validate().is_err());
    }

    #[test]
    fn the_rate_is_shared_by_connections_and_workers_interleave() {
        let load = Load { rate: Some(1000.0), warmup: Duration::ZERO, ..Load::closed(10, 64, 1) };
        let plan = Plan::starting_now(&load);
        // 4 of 10 connections: 400/s, a tick every 2.5 ms; the second of two workers
        // starts half a tick later.
        let first = plan.schedule(4, 0, 2).unwrap();
        let second = plan.schedule(4, 1, 2).unwrap();
        assert_eq!(first.due(1) - first.due(0), Duration::from_micros(2500));
        assert_eq!(second.due(0) - first.due(0), Duration::from_micros(1250));
        assert!(Plan::starting_now(&Load::closed(10, 64, 1)).schedule(4, 0, 1).is_none());
    }
}
