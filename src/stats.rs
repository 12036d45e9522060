//! Counters every model keeps, the summary at the end, and what is reported while it runs.
//!
//! Each worker (one, unless `--workers`) owns one [`Stats`] of relaxed atomics. The models
//! add to them; other threads only read them: the live reporter ([`live`], the
//! `--stats-interval` / SIGUSR1 line) and whoever wants the [`Summary`] at the end
//! ([`ServerStats`]). Reading costs the hot path nothing, and writing costs it little.
//!
//! Every model counts the same way: in plain integers, an [`IoTally`], published to the
//! atomics with [`Stats::publish`]:
//!
//! - the loops (event loop, io-uring, UDP) count a whole turn into one tally (each
//!   connection is lent it while it is served, and keeps no counters of its own: an idle
//!   connection must stay small) and publish once per turn, so a turn costs a few atomic
//!   adds however many reads and writes it made;
//! - the blocking models keep a connection's counts in a [`ConnCounts`] (totals for its
//!   closing log line, and the part not yet handed over) and publish after each read and
//!   its echo, each a syscall anyway.
//!
//! What is counted is named for what it is. A read is not a message: without `--framing`
//! the count is of *reads* that returned data; with `--framing line|length` the reports
//! count *frames* instead (the echoed unit); a UDP echo counts *datagrams* ([`Counted`]).
//! Bytes *pending* (read but not yet written back) are never counted directly: they are
//! `read - echoed - unsent`, where `unsent` is what connections still held when they ended.
//!
//! Conditions a client can cause over and over (a connection over `--max-connections`, a
//! bad PROXY header, a frame over `--max-frame`) are counted like the rest, and logged
//! through a throttle ([`Stats::client_event`]), so that no client can flood the log.
//! Each serving loop also says when it is busy and when it waits ([`Stats::loop_busy`]),
//! so that a loop stuck in one turn can be seen from outside ([`ServerStats::stalled_for`]).
//!
//! - `live.rs`: the statistics line, the thread that logs it, and what asks for one now.
//! - `json.rs`: the summary as JSON (`--summary-json`).
//! - `throttle.rs`: the rate-limited log of what clients cause.

mod json;
mod live;
mod throttle;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use json::{ExitReason, write_summary_json};
pub use live::{Reporter, StatsRequests};
pub use throttle::ClientEvent;

use throttle::ClientEvents;

/// What a server's message count counts, and so what every report calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Counted {
    /// A byte stream without `--framing`: reads that returned data. (Not messages: one
    /// message may take several reads, and one read hold several messages.)
    #[default]
    Reads,
    /// `--framing line|length`: whole frames echoed.
    Frames,
    /// A UDP echo: datagrams received, each one whole.
    Datagrams,
}

impl Counted {
    /// The name in the statistics line: `reads`, `frames` or `datagrams`.
    pub fn name(self) -> &'static str {
        match self {
            Counted::Reads => "reads",
            Counted::Frames => "frames",
            Counted::Datagrams => "datagrams",
        }
    }
}

/// Live counters of one server (one worker, with `--workers`).
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    /// Refused at `--max-connections`.
    rejected: AtomicU64,
    /// Refused for a missing, malformed or late PROXY header.
    rejected_proxy_header: AtomicU64,
    /// Admitted, then not served after all: it could not be registered, or no thread could
    /// be started for it.
    rejected_failed: AtomicU64,
    /// Frames over `--max-frame` (each closed its connection).
    frames_too_large: AtomicU64,
    /// This slot's connections served now. (Its peak is no one's: the peaks reported are
    /// its worker's, its listener's and the process's, in `shared`.)
    active: AtomicU64,
    reads: AtomicU64,
    frames: AtomicU64,
    bytes_read: AtomicU64,
    bytes_echoed: AtomicU64,
    bytes_unsent: AtomicU64,
    datagrams_echoed: AtomicU64,
    dropped_reserved_port: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_send_failed: AtomicU64,
    /// The serving loop's current turn began at this many milliseconds after
    /// `throttle::epoch`, plus one; 0 while it waits for work (see [`Stats::loop_busy`]).
    busy_since: AtomicU64,
    /// The rate-limited log of [`ClientEvent`]s.
    client_events: ClientEvents,
    /// Places taken under `--max-connections` in the whole process, on every worker and
    /// listener: connections served, and those accepted but not served yet (their PROXY
    /// header comes first). One counter shared by every [`Stats`] of a [`ServerStats`].
    places: Arc<AtomicUsize>,
    /// The levels this slot is part of: its worker's, its listener's, the process's (the
    /// last, [`PROCESS`]). A slot made alone (`Stats::default()`) is its own process.
    shared: [Arc<Level>; 3],
}

/// Where the process's level is in [`Stats`]'s `shared`.
const PROCESS: usize = 2;

/// Connections served now and at most, over a set of slots: a worker's, a
/// listener's, the whole process's. Peaks do not add up (two clients one after the other
/// on two listeners were never two at once), so each set keeps its own.
#[derive(Debug, Default)]
struct Level {
    open: AtomicU64,
    peak: AtomicU64,
}

impl Level {
    fn enter(&self) {
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(open, Relaxed);
    }

    fn leave(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }
}

/// Reads and writes not yet added to a [`Stats`]: what one connection moved since it last
/// handed its counts over, or a loop turn's worth of those.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTally {
    /// Reads that returned data (for UDP: datagrams received).
    pub reads: u64,
    /// Whole frames echoed or queued for echoing (`--framing` only; 0 for a raw stream).
    pub frames: u64,
    /// Bytes read from clients.
    pub bytes_read: u64,
    /// Bytes written back to clients.
    pub bytes_echoed: u64,
    /// Bytes read but never written back: their connection ended first, or they were a
    /// frame refused or cut short, or a datagram dropped.
    pub bytes_unsent: u64,
}

impl IoTally {
    /// A read returned `n` bytes.
    pub fn read(&mut self, n: usize) {
        self.reads += 1;
        self.bytes_read += n as u64;
    }

    /// `n` whole frames were echoed (or queued for echoing).
    pub fn frames(&mut self, n: usize) {
        self.frames += n as u64;
    }

    /// The kernel took `n` bytes to send back.
    pub fn wrote(&mut self, n: usize) {
        self.bytes_echoed += n as u64;
    }

    /// Add `other` to this tally.
    pub fn add(&mut self, other: IoTally) {
        self.reads += other.reads;
        self.frames += other.frames;
        self.bytes_read += other.bytes_read;
        self.bytes_echoed += other.bytes_echoed;
        self.bytes_unsent += other.bytes_unsent;
    }
}

/// One connection's counts in a blocking model: running totals (for its closing log line,
/// and what it leaves unsent) and the part not yet handed over to the server's [`Stats`],
/// which the model takes as an [`IoTally`] with [`ConnCounts::take`]. (The loops' connections
/// count straight into their turn's tally instead.)
///
/// Kept small (40 bytes): the reads and frames not yet handed over fit a `u32`, because
/// hand-overs are one blocking read apart.
#[derive(Debug, Clone, Default)]
pub struct ConnCounts {
    /// Reads not yet handed over.
    reads: u32,
    /// Frames not yet handed over.
    frames: u32,
    /// Bytes read, not yet handed over.
    bytes_read: u64,
    /// Bytes written back, not yet handed over.
    bytes_echoed: u64,
    /// Bytes read from the client, in all.
    bytes_in: u64,
    /// Bytes written back to the client, in all.
    bytes_out: u64,
}

impl ConnCounts {
    /// A read returned `n` bytes.
    pub fn read(&mut self, n: usize) {
        self.reads += 1;
        self.bytes_read += n as u64;
        self.bytes_in += n as u64;
    }

    /// `n` whole frames were echoed (or queued for echoing).
    pub fn frames(&mut self, n: usize) {
        self.frames += n as u32; // at most one per byte read since the last hand-over
    }

    /// The kernel took `n` bytes to send back.
    pub fn wrote(&mut self, n: usize) {
        self.bytes_echoed += n as u64;
        self.bytes_out += n as u64;
    }

    /// What was moved since the last call, to publish.
    pub fn take(&mut self) -> IoTally {
        let tally = IoTally {
            reads: u64::from(self.reads),
            frames: u64::from(self.frames),
            bytes_read: self.bytes_read,
            bytes_echoed: self.bytes_echoed,
            bytes_unsent: 0,
        };
        (self.reads, self.frames, self.bytes_read, self.bytes_echoed) = (0, 0, 0, 0);
        tally
    }

    /// The connection has ended: what is left to publish, with every byte it read and never
    /// wrote back counted as unsent (pending echoes, a partial frame, a refused one).
    pub fn take_at_close(&mut self) -> IoTally {
        IoTally { bytes_unsent: self.unsent(), ..self.take() }
    }

    /// Bytes read from the client, in all.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes written back to the client, in all.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Bytes read and not (yet) written back.
    pub fn unsent(&self) -> u64 {
        self.bytes_in - self.bytes_out
    }
}

impl Stats {
    /// Count a freshly accepted connection as open, if fewer than `max` are open in the
    /// whole process (every worker, every listener); false, and nothing counted, if not.
    /// The check and the count are one atomic step, so workers accepting at the same
    /// moment cannot together pass the cap.
    pub fn try_open(&self, max: usize) -> bool {
        if !self.try_reserve(max) {
            return false;
        }
        self.connection_opened();
        true
    }

    /// Take a place under `max` for a connection that is not served yet (its PROXY header
    /// has to come first): it counts against `--max-connections`, not yet as accepted or
    /// open. Then [`Stats::connection_opened`] once it is served, or
    /// [`Stats::reservation_released`] if it never is.
    pub fn try_reserve(&self, max: usize) -> bool {
        let reserved = self.places.fetch_update(Relaxed, Relaxed, |taken| (taken < max).then_some(taken + 1));
        reserved.is_ok()
    }

    /// A connection with a place ([`Stats::try_reserve`]) is served from now on.
    pub fn connection_opened(&self) {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        self.shared.iter().for_each(|level| level.enter());
    }

    /// A connection with a place ([`Stats::try_reserve`]) will never be served: free the
    /// place. (Why it was refused is counted by the caller.)
    pub fn reservation_released(&self) {
        self.places.fetch_sub(1, Relaxed);
    }

    /// A served connection closed. (Its bytes were counted as they moved, with
    /// [`Stats::publish`]; what it still held goes in as `bytes_unsent`.)
    pub fn connection_closed(&self) {
        self.active.fetch_sub(1, Relaxed);
        self.shared.iter().for_each(|level| level.leave());
        self.places.fetch_sub(1, Relaxed);
    }

    /// A connection counted open by [`Stats::try_open`] could not be served after all (it
    /// could not be registered, or no thread could be started for it): count it as
    /// rejected (`failed`) instead.
    pub fn open_failed(&self) {
        self.accepted.fetch_sub(1, Relaxed);
        self.connection_closed();
        self.rejected_failed.fetch_add(1, Relaxed);
    }

    /// A connection with a place ([`Stats::try_reserve`]) could not be registered: free the
    /// place, count it as rejected (`failed`).
    pub fn reservation_failed(&self) {
        self.reservation_released();
        self.rejected_failed.fetch_add(1, Relaxed);
    }

    /// A client caused `event` at `now`: count it, and log it through the throttle
    /// (`detail`, who did what, is formatted only for a line that is written).
    pub fn client_event(&self, event: ClientEvent, now: Instant, detail: impl FnOnce() -> String) {
        let counter = match event {
            ClientEvent::MaxConnections => &self.rejected,
            ClientEvent::ProxyHeader => &self.rejected_proxy_header,
            ClientEvent::FrameTooLarge => &self.frames_too_large,
        };
        counter.fetch_add(1, Relaxed);
        self.client_events.log(event, now, detail);
    }

    /// The serving loop begins a turn at `now` (it has stopped waiting for work).
    pub fn loop_busy(&self, now: Instant) {
        self.busy_since.store(throttle::millis(now) + 1, Relaxed);
    }

    /// The serving loop waits for work (in `epoll_wait`, `io_uring_enter`, `accept`).
    pub fn loop_waiting(&self) {
        self.busy_since.store(0, Relaxed);
    }

    /// How long the serving loop has been in its current turn at `now`; `None` while it waits.
    fn busy_for(&self, now: Instant) -> Option<Duration> {
        let since = self.busy_since.load(Relaxed).checked_sub(1)?;
        Some(Duration::from_millis(throttle::millis(now).saturating_sub(since)))
    }

    /// Add `tally` to the counters and empty it: per loop turn (the loops) or per read and
    /// echo (the blocking models). An empty tally costs no atomic operation.
    pub fn publish(&self, tally: &mut IoTally) {
        let tally = std::mem::take(tally);
        // Order matters only to a reader that races us: bytes leave `pending` (echoed,
        // unsent) after they entered it (read), so a racing reader sees too much pending
        // for an instant rather than a negative amount.
        add_all([
            (&self.reads, tally.reads),
            (&self.frames, tally.frames),
            (&self.bytes_read, tally.bytes_read),
            (&self.bytes_echoed, tally.bytes_echoed),
            (&self.bytes_unsent, tally.bytes_unsent),
        ]);
    }

    /// Add what a UDP echo did with its datagrams, and empty `datagrams`.
    pub fn publish_datagrams(&self, datagrams: &mut Datagrams) {
        let d = std::mem::take(datagrams);
        add_all([
            (&self.datagrams_echoed, d.echoed),
            (&self.dropped_reserved_port, d.dropped_reserved_port),
            (&self.dropped_queue_full, d.dropped_queue_full),
            (&self.dropped_send_failed, d.dropped_send_failed),
        ]);
    }

    /// Connections open right now.
    #[cfg(test)]
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// A consistent-enough copy of every counter.
    fn sample(&self) -> Counters {
        // Loaded in the reverse order of `publish`'s adds: what left `pending` is loaded
        // before what entered it, so `pending` cannot come out negative.
        let bytes_unsent = self.bytes_unsent.load(Relaxed);
        let bytes_echoed = self.bytes_echoed.load(Relaxed);
        let bytes_read = self.bytes_read.load(Relaxed);
        Counters {
            accepted: self.accepted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            rejected_proxy_header: self.rejected_proxy_header.load(Relaxed),
            rejected_failed: self.rejected_failed.load(Relaxed),
            frames_too_large: self.frames_too_large.load(Relaxed),
            open: self.active.load(Relaxed),
            peak: self.shared[PROCESS].peak(), // replaced by the worker's or listener's (`ServerStats::sample`)
            reads: self.reads.load(Relaxed),
            frames: self.frames.load(Relaxed),
            bytes_read,
            bytes_echoed,
            pending: bytes_read.saturating_sub(bytes_echoed).saturating_sub(bytes_unsent),
            datagrams: Datagrams {
                echoed: self.datagrams_echoed.load(Relaxed),
                dropped_reserved_port: self.dropped_reserved_port.load(Relaxed),
                dropped_queue_full: self.dropped_queue_full.load(Relaxed),
                dropped_send_failed: self.dropped_send_failed.load(Relaxed),
            },
        }
    }
}

/// Add each amount to its counter, skipping zeros (an atomic add is not free).
fn add_all<const N: usize>(amounts: [(&AtomicU64, u64); N]) {
    for (counter, n) in amounts {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}

/// One worker's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    accepted: u64,
    rejected: u64,
    rejected_proxy_header: u64,
    rejected_failed: u64,
    frames_too_large: u64,
    open: u64,
    peak: u64,
    reads: u64,
    frames: u64,
    bytes_read: u64,
    bytes_echoed: u64,
    pending: u64,
    datagrams: Datagrams,
}

impl Counters {
    /// Both added up (the levels too: the open connections of two workers add up).
    fn plus(&self, other: &Counters) -> Counters {
        Counters {
            accepted: self.accepted + other.accepted,
            rejected: self.rejected + other.rejected,
            rejected_proxy_header: self.rejected_proxy_header + other.rejected_proxy_header,
            rejected_failed: self.rejected_failed + other.rejected_failed,
            frames_too_large: self.frames_too_large + other.frames_too_large,
            open: self.open + other.open,
            peak: self.peak.max(other.peak), // a set's own peak replaces it (`Level`)
            reads: self.reads + other.reads,
            frames: self.frames + other.frames,
            bytes_read: self.bytes_read + other.bytes_read,
            bytes_echoed: self.bytes_echoed + other.bytes_echoed,
            pending: self.pending + other.pending,
            datagrams: self.datagrams.plus(&other.datagrams),
        }
    }

    /// The count [`Counted`] names: reads (and datagrams, one per read) or frames.
    fn counted(&self, counted: Counted) -> u64 {
        match counted {
            Counted::Reads | Counted::Datagrams => self.reads,
            Counted::Frames => self.frames,
        }
    }
}

/// Every worker's counters for every listener, readable from any thread while the server
/// runs (for the live line) and after it ends (for the summary, even when `run` failed).
#[derive(Debug, Clone)]
pub struct ServerStats {
    /// One [`Stats`] per worker and listener: `slots[worker * listeners + listener]`.
    slots: Vec<Arc<Stats>>,
    /// Each listener's address (for the reports) and what its count counts.
    listeners: Vec<(String, Counted)>,
    /// What the total count counts: datagrams when every listener is UDP.
    counted: Counted,
    /// Each worker's, each listener's and the process's connections now and at most.
    worker_levels: Vec<Arc<Level>>,
    listener_levels: Vec<Arc<Level>>,
    process: Arc<Level>,
    started: Instant,
}

impl ServerStats {
    /// Fresh counters for `workers` workers of a server with one listener, counting `counted`.
    pub fn new(workers: usize, counted: Counted) -> ServerStats {
        ServerStats::with_listeners(workers, vec![(String::new(), counted)])
    }

    /// Fresh counters for `workers` workers, each serving every listener of `listeners`
    /// (its address, and what its count counts), from now.
    pub fn with_listeners(workers: usize, listeners: Vec<(String, Counted)>) -> ServerStats {
        throttle::epoch(); // the clock of the loops' turns starts before any turn
        let counted = match listeners.iter().find(|(_, counted)| *counted != Counted::Datagrams) {
            Some((_, stream)) => *stream,
            None => Counted::Datagrams,
        };
        let (places, process) = (Arc::default(), Arc::<Level>::default());
        let worker_levels: Vec<Arc<Level>> = (0..workers).map(|_| Arc::default()).collect();
        let listener_levels: Vec<Arc<Level>> = listeners.iter().map(|_| Arc::default()).collect();
        let slot = |worker: &Arc<Level>, listener: &Arc<Level>| {
            let shared = [Arc::clone(worker), Arc::clone(listener), Arc::clone(&process)];
            Arc::new(Stats { places: Arc::clone(&places), shared, ..Stats::default() })
        };
        ServerStats {
            slots: worker_levels
                .iter()
                .flat_map(|w| listener_levels.iter().map(move |l| slot(w, l)))
                .collect(),
            worker_levels,
            listener_levels,
            process,
            listeners,
            counted,
            started: Instant::now(),
        }
    }

    /// The counters of `worker` for `listener`, for the worker to add to.
    pub fn slot(&self, worker: usize, listener: usize) -> Arc<Stats> {
        Arc::clone(&self.slots[worker * self.listeners.len() + listener])
    }

    /// What the server has done since it was bound.
    pub fn summary(&self) -> Summary {
        let sample = self.sample();
        let framed = self.counted == Counted::Frames;
        let per_worker = sample.workers.iter().map(|counters| WorkerSummary::new(counters, framed)).collect();
        let combined = Summary::combine(per_worker, self.started.elapsed());
        let summary = Summary { peak_connections: self.process.peak(), ..combined };
        let udp = |i: &usize| self.listeners[*i].1 == Counted::Datagrams;
        let datagrams = (0..self.listeners.len())
            .filter(udp)
            .map(|i| sample.listeners[i].datagrams)
            .reduce(|sum, d| sum.plus(&d));
        let listeners = self
            .listeners
            .iter()
            .zip(&sample.listeners)
            .map(|((addr, counted), counters)| ListenerSummary {
                addr: addr.clone(),
                counts: WorkerSummary::new(counters, *counted == Counted::Frames),
                datagrams: (*counted == Counted::Datagrams).then_some(counters.datagrams),
            })
            .collect();
        Summary { datagrams, listeners, ..summary }
    }

    /// Connections open now, over every worker and listener (for `--drain`).
    pub fn open_connections(&self) -> u64 {
        self.process.open.load(Relaxed)
    }

    /// The longest any serving loop has been in its current turn at `now` (`None`: all wait).
    pub fn stalled_for(&self, now: Instant) -> Option<Duration> {
        self.slots.iter().filter_map(|stats| stats.busy_for(now)).max()
    }

    /// Each listener's counters now (over every worker), for the metrics endpoint: its
    /// address as `listening on` printed it, and its totals.
    pub fn listener_totals(&self) -> Vec<(String, Totals)> {
        let sample = self.sample();
        let totals = |(addr, counted): &(String, Counted), c: &Counters| {
            let totals = Totals {
                accepted: c.accepted,
                rejected_max_connections: c.rejected,
                rejected_proxy_header: c.rejected_proxy_header,
                rejected_failed: c.rejected_failed,
                open: c.open,
                reads: c.reads,
                frames: (*counted == Counted::Frames).then_some(c.frames),
                frames_too_large: c.frames_too_large,
                bytes_read: c.bytes_read,
                bytes_echoed: c.bytes_echoed,
                pending: c.pending,
                datagrams: (*counted == Counted::Datagrams).then_some(c.datagrams),
            };
            (addr.clone(), totals)
        };
        self.listeners.iter().zip(&sample.listeners).map(|(listener, c)| totals(listener, c)).collect()
    }

    /// Every counter now, added up per worker and per listener.
    fn sample(&self) -> Sample {
        let slots: Vec<Counters> = self.slots.iter().map(|stats| stats.sample()).collect();
        let n = self.listeners.len();
        let sum = |counters: &mut dyn Iterator<Item = &Counters>| {
            counters.fold(Counters::default(), |sum, c| sum.plus(c))
        };
        let with_peak = |counters: Counters, level: &Arc<Level>| Counters { peak: level.peak(), ..counters };
        let workers = slots.chunks(n).map(|worker| sum(&mut worker.iter()));
        let listeners = (0..n).map(|i| sum(&mut slots.iter().skip(i).step_by(n)));
        Sample {
            at: Instant::now(),
            peak: self.process.peak(),
            workers: workers.zip(&self.worker_levels).map(|(c, level)| with_peak(c, level)).collect(),
            listeners: listeners.zip(&self.listener_levels).map(|(c, level)| with_peak(c, level)).collect(),
        }
    }
}

/// One listener's counters summed over the workers, at one moment: what `--metrics` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections refused at `--max-connections`.
    pub rejected_max_connections: u64,
    /// Connections refused for their PROXY header.
    pub rejected_proxy_header: u64,
    /// Connections admitted and then not served after all (not registered, no thread).
    pub rejected_failed: u64,
    /// Connections open now.
    pub open: u64,
    /// Reads that returned data.
    pub reads: u64,
    /// With `--framing`: whole frames echoed.
    pub frames: Option<u64>,
    /// Frames over `--max-frame`.
    pub frames_too_large: u64,
    /// Bytes read from clients.
    pub bytes_read: u64,
    /// Bytes written back.
    pub bytes_echoed: u64,
    /// Bytes read and not yet written back.
    pub pending: u64,
    /// A UDP listener's datagrams; `None` for a stream listener.
    pub datagrams: Option<Datagrams>,
}

/// Every counter at one moment: each worker's (over its listeners) and each listener's
/// (over the workers).
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// The most connections served at once in the whole process.
    peak: u64,
    workers: Vec<Counters>,
    listeners: Vec<Counters>,
}

/// What one listener did (over every worker), for the summary and `--summary-json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ListenerSummary {
    /// The address it listened on, as `listening on` printed it.
    pub addr: String,
    /// Its connections, reads (datagrams for UDP), frames and bytes.
    #[serde(flatten)]
    pub counts: WorkerSummary,
    /// What a UDP listener did with its datagrams; `None` for a stream listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagrams: Option<Datagrams>,
}

impl fmt::Display for ListenerSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        match &self.datagrams {
            Some(d) => write!(
                f,
                "{} {} datagrams ({} bytes), dropped {}",
                self.addr,
                d.echoed,
                c.bytes_echoed,
                d.dropped()
            ),
            None => write!(f, "{} {} connections, {} bytes", self.addr, c.connections, c.bytes_echoed),
        }
    }
}

/// What one worker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WorkerSummary {
    /// Connections served (accepted and not rejected).
    pub connections: u64,
    /// Connections accepted and closed without being served: at `--max-connections`, for
    /// their PROXY header, or for want of a thread.
    pub rejected: u64,
    /// Of `rejected`: for a missing, malformed or late PROXY header (`--proxy-protocol`).
    pub rejected_proxy_header: u64,
    /// Reads that returned data.
    pub reads: u64,
    /// With `--framing`: whole frames echoed; `None` for a raw stream, which has no frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    /// With `--framing`: frames over `--max-frame` (each closed its connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_too_large: Option<u64>,
    /// Bytes written back to clients.
    pub bytes_echoed: u64,
    /// The most connections open at once.
    pub peak_connections: u64,
}

impl WorkerSummary {
    fn new(c: &Counters, framed: bool) -> Self {
        WorkerSummary {
            connections: c.accepted,
            rejected: c.rejected + c.rejected_proxy_header + c.rejected_failed,
            rejected_proxy_header: c.rejected_proxy_header,
            reads: c.reads,
            frames: framed.then_some(c.frames),
            frames_too_large: framed.then_some(c.frames_too_large),
            bytes_echoed: c.bytes_echoed,
            peak_connections: c.peak,
        }
    }
}

/// What a server did, for the summary line, `--summary-json`, and tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Connections served (accepted and not rejected).
    pub connections: u64,
    /// Connections accepted and closed without being served: at `--max-connections`, for
    /// their PROXY header, or for want of a thread.
    pub rejected: u64,
    /// Of `rejected`: for a missing, malformed or late PROXY header (`--proxy-protocol`).
    pub rejected_proxy_header: u64,
    /// Reads that returned data (for UDP: datagrams received).
    pub reads: u64,
    /// With `--framing`: whole frames echoed; `None` for a raw stream.
    pub frames: Option<u64>,
    /// With `--framing`: frames over `--max-frame`; `None` for a raw stream.
    pub frames_too_large: Option<u64>,
    /// Bytes written back to clients.
    pub bytes_echoed: u64,
    /// The most connections open at once in the whole process (a worker's or a listener's
    /// own peak is in its [`WorkerSummary`]).
    pub peak_connections: u64,
    /// Each worker's share (one entry unless `--workers` > 1).
    pub per_worker: Vec<WorkerSummary>,
    /// From binding to the end.
    pub duration: Duration,
    /// What the UDP listeners did with their datagrams; `None` without one.
    pub datagrams: Option<Datagrams>,
    /// Each listener's share, in the order they were given.
    pub listeners: Vec<ListenerSummary>,
}

/// A UDP echo's datagram counts. Its echoed bytes are [`Summary::bytes_echoed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Datagrams {
    /// Datagrams sent back to their sender.
    pub echoed: u64,
    /// Dropped unanswered: sent from source port 0 or a small service's port (7, 13, 17, 19).
    pub dropped_reserved_port: u64,
    /// Dropped unanswered: the oldest reply, pushed out of a full reply queue.
    pub dropped_queue_full: u64,
    /// Dropped unanswered: `send_to` failed (not `WouldBlock`, which queues the reply).
    pub dropped_send_failed: u64,
}

impl Datagrams {
    /// Every datagram dropped, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_reserved_port + self.dropped_queue_full + self.dropped_send_failed
    }

    fn plus(&self, other: &Datagrams) -> Datagrams {
        Datagrams {
            echoed: self.echoed + other.echoed,
            dropped_reserved_port: self.dropped_reserved_port + other.dropped_reserved_port,
            dropped_queue_full: self.dropped_queue_full + other.dropped_queue_full,
            dropped_send_failed: self.dropped_send_failed + other.dropped_send_failed,
        }
    }
}

impl Summary {
    /// Add up the summaries of independent workers (of a stream server).
    pub fn combine(per_worker: Vec<WorkerSummary>, duration: Duration) -> Summary {
        let sum = |field: fn(&WorkerSummary) -> u64| per_worker.iter().map(field).sum();
        let frames = per_worker.iter().map(|w| w.frames).reduce(|a, b| Some(a? + b?)).flatten();
        Summary {
            connections: sum(|w| w.connections),
            rejected: sum(|w| w.rejected),
            rejected_proxy_header: sum(|w| w.rejected_proxy_header),
            reads: sum(|w| w.reads),
            frames,
            frames_too_large: frames.map(|_| sum(|w| w.frames_too_large.unwrap_or(0))),
            bytes_echoed: sum(|w| w.bytes_echoed),
            peak_connections: sum(|w| w.peak_connections),
            duration,
            per_worker,
            datagrams: None,
            listeners: Vec::new(),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.listeners.len() > 1 {
            return self.fmt_listeners(f);
        }
        if let Some(datagrams) = &self.datagrams {
            // Counts first, then what they count: "dropped 1: 1 sent from a reserved
            // source port" cannot be read as "from port 1".
            return write!(
                f,
                "summary: echoed {} datagrams ({} bytes), dropped {}: {} sent from a reserved source port \
                 (0, 7, 13, 17, 19), {} pushed out of the full reply queue, {} failed to send",
                datagrams.echoed,
                self.bytes_echoed,
                datagrams.dropped(),
                datagrams.dropped_reserved_port,
                datagrams.dropped_queue_full,
                datagrams.dropped_send_failed
            );
        }
        self.fmt_totals(f)?;
        if self.per_worker.len() > 1 {
            let counts: Vec<String> = self.per_worker.iter().map(|w| w.connections.to_string()).collect();
            write!(f, ", per worker [{}]", counts.join(", "))?;
        }
        Ok(())
    }
}

impl Summary {
    /// `summary: served ... rejected N`: what every server's summary line starts with.
    fn fmt_totals(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, counted) = match self.frames {
            Some(frames) => (frames, Counted::Frames),
            None => (self.reads, Counted::Reads),
        };
        write!(
            f,
            "summary: served {} connections, echoed {} bytes ({count} {}), peak {} concurrent connections, \
             rejected {}",
            self.connections,
            self.bytes_echoed,
            counted.name(),
            self.peak_connections,
            self.rejected
        )?;
        if self.rejected_proxy_header > 0 {
            write!(f, " ({} for their PROXY header)", self.rejected_proxy_header)?;
        }
        match self.frames_too_large.filter(|&n| n > 0) {
            Some(too_large) => write!(f, ", {too_large} frames over --max-frame"),
            None => Ok(()),
        }
    }

    /// Several listeners: the totals, then each listener's share.
    fn fmt_listeners(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_totals(f)?;
        if let Some(d) = &self.datagrams {
            write!(f, ", {} datagrams echoed and {} dropped", d.echoed, d.dropped())?;
        }
        let each: Vec<String> = self.listeners.iter().map(ToString::to_string).collect();
        write!(f, "; per listener: {}", each.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_tracks_the_high_water_mark() {
        let stats = Stats::default();
        assert!(stats.try_open(usize::MAX));
        assert!(stats.try_open(usize::MAX));
        stats.connection_closed();
        assert!(stats.try_open(usize::MAX));
        stats.connection_closed();
        stats.client_event(ClientEvent::MaxConnections, Instant::now(), String::new);
        stats.publish(&mut IoTally { reads: 2, bytes_read: 20, bytes_echoed: 15, ..IoTally::default() });
        let s = WorkerSummary::new(&stats.sample(), false);
        assert_eq!((s.connections, s.peak_connections, s.bytes_echoed, s.rejected), (3, 2, 15, 1));
        assert_eq!(stats.active(), 1);
    }

    /// What clients cause is counted by kind, and reaches the totals, the summary and its line.
    #[test]
    fn client_events_are_counted_by_kind() {
        let stats = ServerStats::new(1, Counted::Frames);
        let (worker, now) = (stats.slot(0, 0), Instant::now());
        for event in [ClientEvent::MaxConnections, ClientEvent::ProxyHeader, ClientEvent::ProxyHeader] {
            worker.client_event(event, now, String::new);
        }
        worker.client_event(ClientEvent::FrameTooLarge, now, String::new);
        let (_, totals) = stats.listener_totals().remove(0);
        assert_eq!(
            (totals.rejected_max_connections, totals.rejected_proxy_header, totals.frames_too_large),
            (1, 2, 1)
        );
        let summary = stats.summary();
        assert_eq!(
            (summary.rejected, summary.rejected_proxy_header, summary.frames_too_large),
            (3, 2, Some(1))
        );
        let line = summary.to_string();
        assert!(line.ends_with("rejected 3 (2 for their PROXY header), 1 frames over --max-frame"), "{line}");
    }

    /// A loop waiting is never stalled; one in a turn is, for as long as the turn lasts.
    #[test]
    fn a_loop_is_stalled_only_while_in_a_turn() {
        let stats = ServerStats::new(2, Counted::Reads);
        let now = Instant::now();
        assert_eq!(stats.stalled_for(now), None);
        stats.slot(0, 0).loop_busy(now);
        stats.slot(1, 0).loop_busy(now + Duration::from_secs(1));
        assert_eq!(stats.stalled_for(now + Duration::from_secs(3)), Some(Duration::from_secs(3)));
        stats.slot(0, 0).loop_waiting();
        assert_eq!(stats.stalled_for(now + Duration::from_secs(3)), Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_udp_summary_says_what_each_drop_count_counts() {
        let datagrams =
            Datagrams { echoed: 5, dropped_reserved_port: 2, dropped_queue_full: 3, dropped_send_failed: 0 };
        let summary = Summary { bytes_echoed: 50, datagrams: Some(datagrams), ..Summary::default() };
        assert_eq!(
            summary.to_string(),
            "summary: echoed 5 datagrams (50 bytes), dropped 5: 2 sent from a reserved source port \
             (0, 7, 13, 17, 19), 3 pushed out of the full reply queue, 0 failed to send"
        );
    }

    #[test]
    fn a_udp_servers_datagram_counts_reach_its_summary() {
        let stats = ServerStats::new(1, Counted::Datagrams);
        let worker = stats.slot(0, 0);
        worker.publish(&mut IoTally {
            reads: 3,
            bytes_read: 30,
            bytes_echoed: 20,
            bytes_unsent: 10,
            frames: 0,
        });
        let mut turn = Datagrams { echoed: 2, dropped_reserved_port: 1, ..Datagrams::default() };
        worker.publish_datagrams(&mut turn);
        assert_eq!(turn, Datagrams::default(), "published and emptied");
        let summary = stats.summary();
        assert_eq!(summary.datagrams.map(|d| (d.echoed, d.dropped())), Some((2, 1)));
        assert_eq!((summary.reads, summary.bytes_echoed), (3, 20));
        assert_eq!(ServerStats::new(1, Counted::Reads).summary().datagrams, None, "a stream server has none");
    }

    #[test]
    fn pending_is_read_minus_echoed_minus_unsent() {
        let stats = Stats::default();
        let mut tally = IoTally { reads: 3, bytes_read: 300, bytes_echoed: 100, ..IoTally::default() };
        stats.publish(&mut tally);
        assert_eq!(tally, IoTally::default(), "published and emptied");
        assert_eq!(stats.sample().pending, 200);
        stats.publish(&mut IoTally { bytes_echoed: 150, bytes_unsent: 50, ..IoTally::default() });
        assert_eq!(stats.sample().pending, 0);
    }

    #[test]
    fn a_connection_hands_over_what_moved_since_it_last_did() {
        let mut counts = ConnCounts::default();
        counts.read(10);
        counts.wrote(4);
        let first = counts.take();
        assert_eq!(first, IoTally { reads: 1, bytes_read: 10, bytes_echoed: 4, ..IoTally::default() });
        counts.read(20);
        counts.frames(2);
        counts.wrote(20);
        let mut turn = first;
        turn.add(counts.take());
        assert_eq!(turn, IoTally { reads: 2, frames: 2, bytes_read: 30, bytes_echoed: 24, bytes_unsent: 0 });
        assert_eq!(counts.take(), IoTally::default(), "nothing moved since");
        let last = counts.take_at_close();
        assert_eq!(last, IoTally { bytes_unsent: 6, ..IoTally::default() }, "read and never echoed");
        assert_eq!((counts.bytes_in(), counts.bytes_out()), (30, 24));
    }

    #[test]
    fn combined_summary_lists_workers_and_counts_reads() {
        let a = WorkerSummary { connections: 2, bytes_echoed: 7, peak_connections: 1, ..Default::default() };
        let b = WorkerSummary {
            connections: 3,
            bytes_echoed: 1,
            peak_connections: 2,
            rejected: 1,
            reads: 4,
            ..Default::default()
        };
        let summary = Summary::combine(vec![a, b], Duration::from_secs(1));
        assert_eq!((summary.reads, summary.frames), (4, None));
        assert_eq!(
            summary.to_string(),
            "summary: served 5 connections, echoed 8 bytes (4 reads), peak 3 concurrent connections, rejected 1, \
             per worker [2, 3]"
        );
    }

    #[test]
    fn with_framing_the_summary_counts_frames() {
        let stats = ServerStats::new(2, Counted::Frames);
        stats.slot(0, 0).publish(&mut IoTally { reads: 5, frames: 2, ..IoTally::default() });
        stats.slot(1, 0).publish(&mut IoTally { reads: 1, frames: 3, ..IoTally::default() });
        let summary = stats.summary();
        assert_eq!((summary.reads, summary.frames), (6, Some(5)));
        assert!(summary.to_string().contains("echoed 0 bytes (5 frames)"), "{summary}");
    }

    #[test]
    fn the_connection_cap_is_shared_by_every_worker_and_listener() {
        let stats =
            ServerStats::with_listeners(2, vec![("a".into(), Counted::Reads), ("b".into(), Counted::Reads)]);
        let (w0a, w1b) = (stats.slot(0, 0), stats.slot(1, 1));
        assert!(w0a.try_open(2) && w1b.try_open(2));
        assert!(!w0a.try_open(2) && !w1b.try_open(2), "a third connection anywhere is over the cap of 2");
        w0a.connection_closed();
        assert!(w1b.try_open(2), "a close on one worker frees a place for another");
        w1b.open_failed(); // could not be served after all: counted rejected, place freed
        assert!(w0a.try_open(2));
        let summary = stats.summary();
        assert_eq!((summary.connections, summary.rejected), (3, 1));
    }

    /// The peak is the process's: clients one after another on two listeners and two
    /// workers were never two at once, though each slot saw one.
    #[test]
    fn the_peak_is_the_most_open_at_once_in_the_whole_process() {
        let stats =
            ServerStats::with_listeners(2, vec![("a".into(), Counted::Reads), ("b".into(), Counted::Reads)]);
        for (worker, listener) in [(0, 0), (1, 1), (0, 1)] {
            let slot = stats.slot(worker, listener);
            assert!(slot.try_open(usize::MAX));
            slot.connection_closed();
        }
        let summary = stats.summary();
        assert_eq!((summary.connections, summary.peak_connections), (3, 1), "{summary}");
        assert!(summary.to_string().contains("peak 1 concurrent"), "{summary}");
        assert_eq!(summary.per_worker.iter().map(|w| w.peak_connections).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(summary.listeners.iter().map(|l| l.counts.peak_connections).collect::<Vec<_>>(), [1, 1]);
        let (w0, w1) = (stats.slot(0, 0), stats.slot(1, 1));
        assert!(w0.try_open(usize::MAX) && w1.try_open(usize::MAX));
        assert_eq!(stats.summary().peak_connections, 2, "two at once on two workers");
    }
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    /// Each listener's counts are its own, over every worker; the totals add them all up.
    #[test]
    fn listeners_are_counted_apart_and_together() {
        let listeners =
            vec![("127.0.0.1:7".to_string(), Counted::Reads), ("udp:127.0.0.1:7".into(), Counted::Datagrams)];
        let stats = ServerStats::with_listeners(2, listeners);
        assert!(stats.slot(0, 0).try_open(usize::MAX));
        assert!(stats.slot(1, 0).try_open(usize::MAX));
        stats.slot(1, 0).publish(&mut IoTally {
            reads: 1,
            bytes_read: 10,
            bytes_echoed: 10,
            ..IoTally::default()
        });
        stats.slot(0, 1).publish(&mut IoTally {
            reads: 3,
            bytes_read: 6,
            bytes_echoed: 6,
            ..IoTally::default()
        });
        stats.slot(0, 1).publish_datagrams(&mut Datagrams { echoed: 3, ..Datagrams::default() });
        let summary = stats.summary();
        assert_eq!((summary.connections, summary.bytes_echoed, summary.reads), (2, 16, 4));
        assert_eq!(summary.listeners.len(), 2);
        assert_eq!(
            (summary.listeners[0].counts.connections, summary.listeners[0].counts.bytes_echoed),
            (2, 10)
        );
        assert_eq!(summary.listeners[1].datagrams.map(|d| d.echoed), Some(3));
        assert_eq!(summary.per_worker.len(), 2);
        assert_eq!(
            summary.to_string(),
            "summary: served 2 connections, echoed 16 bytes (4 reads), peak 2 concurrent connections, rejected 0, \
             3 datagrams echoed and 0 dropped; per listener: 127.0.0.1:7 2 connections, 10 bytes, \
             udp:127.0.0.1:7 3 datagrams (6 bytes), dropped 0"
        );
    }
}
