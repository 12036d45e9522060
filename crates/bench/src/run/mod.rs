//! The load generator's engines: open the connections, drive them all from mio event
//! loops, check every echoed byte against what was sent, time every message.
//!
//! - this file: the echo engine's plan, tallies and event loop (closed loop: `pipeline`
//!   messages in flight per connection; open loop: `--rate`, see [`crate::schedule`]);
//! - `flow`: one connection's messages; `connect`: the connect phase;
//! - `idle`, `churn`, `udp`: the other modes, each on the same plan and window;
//! - `chaos`: the echo engine beside the `hostile` clients, with the server watched.

mod chaos;
mod churn;
mod connect;
mod flow;
mod hostile;
mod idle;
mod udp;
mod udp_io;

pub use chaos::{ChaosOptions, ChaosReport, run_chaos};
pub use churn::{ChurnReport, run_churn};
pub use idle::{IdleReport, open_idle};
pub use udp::{UdpReport, run_udp};

use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::framing::{Framing, Sizes};
use crate::histogram::{Latency, RoundTrips};
use crate::pattern::{CHUNK, Pattern};
use crate::progress::Progress;
use crate::schedule::{Pacing, RateReport, Schedule};
use crate::stream::Stream;
use crate::sys;
use crate::target::Target;
use crate::timer::Timer;
use connect::{connect_all, deal};
use flow::Flow;

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
/// The token of a worker's schedule timer (no connection has it: slab keys are small).
const TIMER: Token = Token(usize::MAX);

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
    /// CPU use over the window.
    #[serde(flatten)]
    pub cpu: Cpu,
}

impl EchoReport {
    /// No connection errors and no corrupted echoes.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.mismatches == 0
    }

    /// Open loop, and the generator fell behind its own schedule.
    pub fn is_behind(&self) -> bool {
        self.rate.is_some_and(|r| r.behind)
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
    let connected =
        connect_all(target, load.connections, load.framing.ping(), load.connect_timeout, progress);
    if connected.streams.is_empty() {
        return Err(connected.into_error());
    }
    let pattern = load.framing.pattern();
    let plan = Plan::starting_now(load);
    let shares = deal(connected.streams, load.threads);
    let workers = shares.len();
    let (tallies, usage) = on_threads(&plan, shares, watch, progress, |w, share, completed| {
        let schedule = plan.schedule(share.len(), w, workers);
        drive(&plan, &pattern, share, schedule, completed)
    });
    let mut total =
        Tally { errors: connected.failed as u64, first_error: connected.first_error, ..Tally::default() };
    for tally in tallies {
        // A worker that could not run (or panicked) counts as one error.
        total.merge(tally.unwrap_or_else(Tally::from_error));
    }
    Ok(EchoReport::new(target, load, connected.opened, &total, usage))
}

/// Run one load-generator thread per share, `work(index, share, completed)`, while this
/// thread watches the window (CPU times, the progress bar). `completed` counts round trips
/// for the progress bar.
fn on_threads<S: Send, T: Send>(
    plan: &Plan,
    shares: Vec<S>,
    watch: Option<u32>,
    progress: &Progress,
    work: impl Fn(usize, S, &AtomicU64) -> io::Result<T> + Sync,
) -> (Vec<io::Result<T>>, Usage) {
    let completed = AtomicU64::new(0);
    let results = thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(w, share)| {
                let (work, completed) = (&work, &completed);
                scope.spawn(move || work(w, share, completed))
            })
            .collect();
        let usage = watch_window(plan, watch, progress, &completed);
        let panicked = || Err(io::Error::other("a load-generator thread panicked"));
        (handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panicked())).collect(), usage)
    });
    progress.finish();
    results
}

impl EchoReport {
    fn new(target: &Target, load: &Load, connections: usize, total: &Tally, usage: Usage) -> EchoReport {
        let secs = load.duration.as_secs_f64();
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
            rate: load.rate.map(|asked| RateReport::new(asked, &total.pacing, total.measured, secs)),
            errors: total.errors,
            mismatches: total.mismatches,
            first_error: total.first_error.clone(),
            cpu: usage.cpu(load),
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
        let start = Instant::now();
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
}

impl Tally {
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
            self.round_trips.record(now.saturating_duration_since(at));
            self.outstanding = self.outstanding.saturating_sub(u64::from(plan.rate.is_some()));
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
        self.measured_bytes += other.measured_bytes;
        self.completed += other.completed;
        self.mismatches += other.mismatches;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.round_trips.merge(&other.round_trips);
        self.pacing.merge(&other.pacing);
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
/// progress bar.
fn drive(
    plan: &Plan,
    pattern: &Pattern,
    share: Vec<(u64, Stream)>,
    mut schedule: Option<Schedule>,
    completed: &AtomicU64,
) -> io::Result<Tally> {
    let mut poll = Poll::new()?;
    let mut flows = Vec::with_capacity(share.len());
    for (i, (id, mut stream)) in share.into_iter().enumerate() {
        // Registered once for both directions and never re-registered: edge-triggered
        // events only say "something changed", and each handler tries what it needs.
        poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        flows.push(Flow::new(stream, id));
    }
    let mut w = WorkerState {
        plan,
        pattern,
        buf: vec![0; READ_BUFFER],
        scratch: vec![0; CHUNK].into_boxed_slice(),
        tally: Tally::default(),
    };
    let mut timer = Timer::new()?;
    if schedule.is_some() {
        poll.registry().register(&mut timer, TIMER, Interest::READABLE)?;
    } else {
        for flow in &mut flows {
            if let Err(e) = flow.start(&mut w) {
                flow.close(&poll, &mut w);
                w.tally.connection_lost(&e);
            }
        }
    }
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    loop {
        if let Some(schedule) = &mut schedule {
            release_due(schedule, &mut flows, &poll, &mut w);
            arm_for_next(schedule, &timer, plan)?;
        }
        let Some(timeout) = plan.poll_timeout(Instant::now(), w.tally.outstanding) else { break };
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal; poll again
            result => result?,
        }
        let before = w.tally.completed;
        for event in events.iter() {
            if event.token() == TIMER {
                timer.clear(); // the due messages go out at the top of the loop
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
    Ok(w.tally)
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

/// CPU time spent over the measured window.
struct Usage {
    client: Duration,
    server: Option<Duration>,
}

/// CPU use over the measured window, beside every report's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cpu {
    /// CPU the load generator used, in CPUs (1.0 = one core busy).
    pub client_cpu: f64,
    /// The load generator was (nearly) saturated, so the server may be faster than shown.
    pub client_bound: bool,
    /// CPU the server used, in CPUs, when its PID was known.
    pub server_cpu: Option<f64>,
}

impl Usage {
    /// As shares of `load`'s measured window.
    fn cpu(&self, load: &Load) -> Cpu {
        let secs = load.duration.as_secs_f64();
        let client_cpu = self.client.as_secs_f64() / secs;
        Cpu {
            client_cpu,
            // A spinning client is always at 100%: that says nothing about the server.
            client_bound: !load.spin && client_cpu >= 0.95 * load.threads as f64,
            server_cpu: self.server.map(|cpu| cpu.as_secs_f64() / secs),
        }
    }
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
