//! The load generator watching itself: its threads, their CPU, and whether it kept up.
//!
//! A load generator that is itself the bottleneck measures itself. So every report says
//! how busy each generator thread was over the window and how late the generator acted:
//! open loop, how long after its due time each message went out (*send lateness*); closed
//! loop, how long after firing a 10 ms probe timer was served (*scheduling delay*: the wait
//! a ready socket had too). A thread at ≥ 95 % of a CPU, or an open loop behind its
//! schedule, makes the run `valid: false`, with a warning naming the cause.
//!
//! Each thread's CPU time is read from outside, on its own CPU-time clock
//! (`pthread_getcpuclockid`), by the thread that watches the window, exactly at the
//! window's edges. A thread's clock dies with it, so a thread that finishes early waits
//! for the watcher's last reading before it exits.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Load, Plan};
use crate::histogram::RoundTrips;
use crate::intervals::{Interval, IntervalLog};
use crate::progress::Progress;
use crate::schedule::RateReport;
use crate::sys;

/// A generator thread at or above this share of a CPU was (nearly) saturated.
pub const SATURATED: f64 = 0.95;
/// A thread with no CPU-time clock of its own says so with this (CLOCK_REALTIME, which no
/// thread's CPU clock is).
const NO_CLOCK: libc::clockid_t = libc::CLOCK_REALTIME;
/// How long the watcher waits for the threads to name their clocks.
const CLOCK_WAIT: Duration = Duration::from_secs(1);

/// CPU use over the measured window, beside every report's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cpu {
    /// CPU the load generator used, in CPUs (1.0 = one core busy), over all its threads.
    pub client_cpu: f64,
    /// A load-generator thread was (nearly) saturated, so the server may be faster than
    /// shown.
    pub client_bound: bool,
    /// CPU the server used (with every process it started), in CPUs, when its PID was known.
    pub server_cpu: Option<f64>,
    /// The generator's own threads and lateness.
    pub generator: Generator,
}

/// How busy, and how late, the load generator was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generator {
    /// Each load-generator thread's CPU use over the window (1.0 = a whole CPU); `null` for
    /// a thread that could not be measured.
    pub thread_cpu: Vec<Option<f64>>,
    /// How late the generator acted; `null` when nothing was measured (or not in this mode).
    pub delay: Option<Delay>,
}

/// Quantiles of how late the generator acted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Delay {
    /// What was late.
    pub kind: DelayKind,
    /// The median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// The latest.
    pub max_us: f64,
    /// How many were measured.
    pub samples: u64,
}

/// What a [`Delay`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DelayKind {
    /// Open loop: each message's send after its due time.
    SendLateness,
    /// Closed loop: each 10 ms probe timer's service after it fired.
    SchedulingDelay,
}

impl Delay {
    /// The quantiles of `late`, or `None` if nothing was measured.
    pub fn new(kind: DelayKind, late: &RoundTrips) -> Option<Delay> {
        let samples = late.count();
        let l = late.latency();
        (samples > 0).then_some(Delay { kind, p50_us: l.p50_us, p99_us: l.p99_us, max_us: l.max_us, samples })
    }
}

/// Why a run does not measure the server alone: one sentence per cause (empty: valid).
pub fn warnings(cpu: &Cpu, rate: Option<&RateReport>) -> Vec<String> {
    let mut warnings = Vec::new();
    if cpu.client_bound {
        let busiest = cpu.generator.thread_cpu.iter().enumerate().filter_map(|(i, c)| Some((i, (*c)?)));
        let cause = match busiest.max_by(|a, b| a.1.total_cmp(&b.1)) {
            Some((i, share)) => {
                format!("load-generator thread {i} used {:.0}% of a CPU", (share * 100.0).floor())
            }
            None => format!("the load generator used {:.0}% of its CPUs", (cpu.client_cpu * 100.0).floor()),
        };
        warnings.push(format!(
            "{cause}: the generator may have set the pace, and the server may be faster than shown \
             (try --threads 2 with --pin, or a machine with more cores for the load)"
        ));
    }
    if let Some(r) = rate.filter(|r| r.behind) {
        warnings.push(format!(
            "the load generator fell behind its --rate schedule ({:.1}% of messages sent more than 1 ms late): \
             the load it offered was burstier or lower than asked, though latencies still count from the due \
             times (try --threads 2, a lower --rate, or a quieter machine)",
            r.late_fraction * 100.0
        ));
    }
    warnings
}

/// CPU time over the measured window.
pub struct Usage {
    /// The whole load-generator process.
    client: Duration,
    /// The server's process tree, when watched.
    server: Option<Duration>,
    /// Each worker thread, in the order of the shares.
    threads: Vec<Option<Duration>>,
    /// The wall time between the readings.
    window: Duration,
}

impl Usage {
    /// As shares of the window, for `load`, whose workers are `threads` of the run's.
    pub fn cpu(&self, load: &Load, threads: Range<usize>) -> Cpu {
        let secs = self.window.as_secs_f64().max(1e-9);
        let share = |d: Duration| d.as_secs_f64() / secs;
        let client_cpu = share(self.client);
        let thread_cpu: Vec<Option<f64>> =
            self.threads.get(threads).unwrap_or_default().iter().map(|t| t.map(share)).collect();
        let saturated = if thread_cpu.iter().all(Option::is_some) && !thread_cpu.is_empty() {
            thread_cpu.iter().flatten().any(|c| *c >= SATURATED)
        } else {
            client_cpu >= SATURATED * load.threads as f64 // a thread unmeasured: the whole process
        };
        Cpu {
            client_cpu,
            // A spinning client is always at 100%: that says nothing about the server.
            client_bound: !load.spin && saturated,
            server_cpu: self.server.map(share),
            generator: Generator { thread_cpu, delay: None },
        }
    }

    /// [`Usage::cpu`] for a run with one load, on every thread.
    pub fn cpu_all(&self, load: &Load) -> Cpu {
        self.cpu(load, 0..self.threads.len())
    }
}

/// Interval statistics to collect while the run goes on: the threads' parts, and the log.
pub type Intervals<'a> = Option<(&'a Receiver<(u32, Interval)>, &'a mut IntervalLog)>;

/// Run one load-generator thread per share, `work(index, share, completed)` (thread
/// `index` pinned to `pin[index % len]` when `pin` is not empty), while this thread
/// watches the window: CPU times at its edges, the progress bar, and the intervals.
/// `completed` counts round trips for the progress bar. `Err` only if the interval log
/// could not be written (the threads' own results are in the list).
pub fn on_threads<S: Send, T: Send>(
    plan: &Plan,
    shares: Vec<S>,
    pin: &[usize],
    watch: Option<u32>,
    progress: &Progress,
    mut intervals: Intervals<'_>,
    work: impl Fn(usize, S, &AtomicU64) -> io::Result<T> + Sync,
) -> io::Result<(Vec<io::Result<T>>, Usage)> {
    let completed = AtomicU64::new(0);
    let clocks: Vec<OnceLock<libc::clockid_t>> = shares.iter().map(|_| OnceLock::new()).collect();
    let read = Latch::default();
    let (results, usage) = thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(w, share)| {
                let (work, completed, clock, read) = (&work, &completed, &clocks[w], &read);
                scope.spawn(move || {
                    // Each thread sets its own clock, once; a thread without one sets 0,
                    // which reads as "not measured".
                    let _ = clock.set(sys::thread_cpu_clock().unwrap_or(NO_CLOCK));
                    let result = pin_to(pin, w).and_then(|()| work(w, share, completed));
                    read.wait(); // keep this thread's CPU clock alive until the window is read
                    result
                })
            })
            .collect();
        let usage = watch_window(plan, watch, progress, &completed, &clocks, intervals.as_mut());
        read.open();
        let panicked = || Err(io::Error::other("a load-generator thread panicked"));
        (handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panicked())).collect(), usage)
    });
    progress.finish();
    let usage = usage?;
    if let Some((samples, log)) = intervals {
        // What the threads handed on after the window (the last interval, the drain's).
        for (index, part) in samples.try_iter() {
            log.accept(index, &part, progress)?;
        }
        log.finish(progress)?;
    }
    Ok((results, usage))
}

/// Pin the calling worker thread, when asked.
fn pin_to(pin: &[usize], w: usize) -> io::Result<()> {
    match pin.get(w % pin.len().max(1)) {
        Some(&cpu) => sys::pin_current_thread(cpu).map_err(|e| {
            io::Error::new(e.kind(), format!("pinning load-generator thread {w} to CPU {cpu}: {e}"))
        }),
        None => Ok(()),
    }
}

/// The calling thread (not a worker) watches the run: it reads CPU times at the window's
/// edges, moves the progress bar, and collects the intervals as the threads hand them on.
fn watch_window(
    plan: &Plan,
    watch: Option<u32>,
    progress: &Progress,
    completed: &AtomicU64,
    clocks: &[OnceLock<libc::clockid_t>],
    mut intervals: Option<&mut (&Receiver<(u32, Interval)>, &mut IntervalLog)>,
) -> io::Result<Usage> {
    progress.measuring(plan.end - plan.start);
    let mut wait = |deadline: Instant| -> io::Result<()> {
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            let slice = left.min(Duration::from_millis(100));
            match intervals.as_mut() {
                Some((samples, log)) => match samples.recv_timeout(slice) {
                    Ok((index, part)) => log.accept(index, &part, progress)?,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
                },
                None => thread::sleep(slice),
            }
            let now = Instant::now();
            progress.tick(now - plan.start, now >= plan.measure_from, completed.load(Ordering::Relaxed));
        }
        Ok(())
    };
    let thread_times = || -> Vec<Option<Duration>> {
        clocks.iter().map(|c| c.get().copied().filter(|c| *c != NO_CLOCK).and_then(sys::clock_time)).collect()
    };
    wait(plan.measure_from)?;
    // With no warm-up the window opens as the threads start: wait (briefly) until each has
    // said which clock is its own.
    let named_by = Instant::now() + CLOCK_WAIT;
    while clocks.iter().any(|c| c.get().is_none()) && Instant::now() < named_by {
        thread::yield_now();
    }
    let (started, client0, server0, threads0) =
        (Instant::now(), sys::own_cpu_time(), watch.and_then(sys::tree_cpu_time), thread_times());
    wait(plan.end)?;
    let (client1, server1, threads1) =
        (sys::own_cpu_time(), watch.and_then(sys::tree_cpu_time), thread_times());
    let threads =
        threads0.iter().zip(&threads1).map(|(a, b)| Some(b.as_ref()?.saturating_sub((*a)?))).collect();
    Ok(Usage {
        client: client1.saturating_sub(client0),
        server: server0.zip(server1).map(|(a, b)| b.saturating_sub(a)),
        threads,
        window: started.elapsed(),
    })
}

/// Closed until opened, then open for good.
#[derive(Default)]
struct Latch {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Latch {
    fn open(&self) {
        // A poisoned lock only means a waiter panicked; the flag is still ours to set.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        *open = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Pacing;

    fn usage(threads: Vec<Option<f64>>) -> Usage {
        let secs = |s: f64| Duration::from_secs_f64(s);
        Usage {
            client: secs(threads.iter().flatten().sum()),
            server: Some(secs(0.5)),
            threads: threads.into_iter().map(|t| t.map(secs)).collect(),
            window: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_saturated_thread_makes_the_run_client_bound() {
        let load = Load { threads: 2, ..Load::closed(10, 64, 1) };
        let cpu = usage(vec![Some(0.97), Some(0.2)]).cpu_all(&load);
        assert!(cpu.client_bound, "{cpu:?}");
        assert_eq!(cpu.server_cpu, Some(0.5));
        let said = warnings(&cpu, None);
        assert_eq!(said.len(), 1);
        assert!(said[0].starts_with("load-generator thread 0 used 97% of a CPU"), "{said:?}");
        // Half of two CPUs each is not saturated, though the process used a whole one.
        let calm = usage(vec![Some(0.5), Some(0.5)]).cpu_all(&load);
        assert!(!calm.client_bound && warnings(&calm, None).is_empty());
        // Spinning is always at 100%: it says nothing.
        let spin = Load { spin: true, ..load.clone() };
        assert!(!usage(vec![Some(1.0), Some(1.0)]).cpu_all(&spin).client_bound);
        // The threads of the second load of a run are its own.
        assert!(!usage(vec![Some(0.99), Some(0.1)]).cpu(&load, 1..2).client_bound);
    }

    #[test]
    fn an_unmeasured_thread_falls_back_to_the_whole_process() {
        let load = Load { threads: 1, ..Load::closed(10, 64, 1) };
        let mut u = usage(vec![None]);
        u.client = Duration::from_millis(990);
        assert!(u.cpu_all(&load).client_bound);
        assert!(warnings(&u.cpu_all(&load), None)[0].starts_with("the load generator used 99% of its CPUs"));
    }

    #[test]
    fn behind_its_schedule_is_a_warning_of_its_own() {
        let cpu = usage(vec![Some(0.3)]).cpu_all(&Load::closed(1, 64, 1));
        let mut pacing = Pacing { due: 100, late: 5, ..Pacing::default() };
        let behind = RateReport::new(100.0, &pacing, 100, 1.0);
        let said = warnings(&cpu, Some(&behind));
        assert!(said[0].contains("fell behind its --rate schedule (5.0%"), "{said:?}");
        pacing.late = 0;
        assert!(warnings(&cpu, Some(&RateReport::new(100.0, &pacing, 100, 1.0))).is_empty());
    }

    #[test]
    fn a_thread_is_read_from_outside_on_its_own_clock_while_it_waits() {
        let (clock, done) = (OnceLock::new(), Latch::default());
        let busy = Duration::from_millis(5);
        let burnt = thread::scope(|scope| {
            scope.spawn(|| {
                let own = sys::thread_cpu_clock().expect("a thread CPU clock");
                let _ = clock.set(own);
                while sys::clock_time(own).is_some_and(|t| t < busy) {} // burn 5 ms of CPU
                done.wait();
            });
            while clock.get().is_none() {
                thread::yield_now();
            }
            let own_clock = *clock.get().unwrap();
            let mut burnt = sys::clock_time(own_clock);
            while burnt.is_some_and(|t| t < busy) {
                thread::yield_now();
                burnt = sys::clock_time(own_clock);
            }
            done.open();
            burnt
        });
        // Read from this thread, on the other thread's clock: its CPU, not ours.
        assert!(burnt.is_some_and(|t| t >= busy), "{burnt:?}");
    }
}
