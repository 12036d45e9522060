//! The live statistics line: every `--stats-interval`, and at once when asked (SIGUSR1).
//!
//! ```text
//! stats: open=3 accepted=2 rejected=0 reads/s=10 bytes/s=12800 pending=0 peak=5 (reads=10 bytes=12800 in 1.000s)
//! ```
//!
//! `open`, `pending` (bytes read and not yet echoed) and `peak` are levels now; `accepted`,
//! `rejected` (at `--max-connections`, or for a bad PROXY header), `reads` and `bytes` count
//! what happened since the previous line (or since the start), over the time in
//! parentheses, from which the two rates are computed. With `--framing` the line counts
//! `frames` instead of `reads`, and `too_large=N` after `rejected` counts the frames over
//! `--max-frame`; a UDP echo counts `datagrams` (see [`super::Counted`]). With more than one worker, the line ends with each worker's
//! share: ` per-worker open=[1,2] accepted=[1,1] bytes/s=[6400,6400]`; with more than one
//! listener, with each listener's: ` per-listener 127.0.0.1:7 open=1 bytes/s=6400, udp:127.0.0.1:7
//! open=0 bytes/s=6400`. Under a service manager, each line is also the service's status
//! (`STATUS=`, shown by `systemctl status`).
//!
//! A thread of its own builds and logs the line, reading the workers' atomics, so the
//! serving threads never format anything or wait for the logger. A line on demand is asked
//! through [`StatsRequests`], a handle of its own: asking for statistics is not stopping.

use std::io;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info};

use super::{Counted, Counters, Sample, ServerStats};
use crate::notify::Notifier;

type Hook = Box<dyn Fn() + Send + Sync>;

/// A cloneable handle that asks a running server for a statistics line now, from any
/// thread: what SIGUSR1 does (see `crate::signals`), as `dd` prints its progress.
#[derive(Clone, Default)]
pub struct StatsRequests {
    /// What to do on a request: one hook per running reporter.
    hooks: Arc<Mutex<Vec<Hook>>>,
}

impl std::fmt::Debug for StatsRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsRequests").field("hooks", &self.hooks().len()).finish()
    }
}

impl StatsRequests {
    /// A handle no server listens to yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask for a statistics line now. Before a server runs, nobody has statistics to
    /// report, and the request is only logged.
    pub fn request(&self) {
        let hooks = self.hooks();
        if hooks.is_empty() {
            debug!("statistics requested, but no server is running yet");
        }
        for hook in hooks.iter() {
            hook();
        }
    }

    /// Register what to do on a request (the reporter thread's wake-up).
    fn on_request(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.hooks().push(Box::new(hook));
    }

    fn hooks(&self) -> MutexGuard<'_, Vec<Hook>> {
        // A panicking hook must not stop every later request: ignore poisoning.
        self.hooks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the reporter thread is asked to do.
enum Request {
    /// Log a line now (SIGUSR1).
    Line,
    /// The server has stopped: end the thread.
    Stop,
}

/// The thread that logs statistics lines while a server runs. Dropping it stops the thread.
#[derive(Debug)]
pub struct Reporter {
    requests: Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Start logging a line every `interval` (if any) and whenever `on_demand` asks for one;
    /// each line is also sent to the service manager as the status, through `notifier`.
    pub fn start(
        stats: ServerStats,
        interval: Option<Duration>,
        on_demand: &StatsRequests,
        notifier: Notifier,
    ) -> io::Result<Reporter> {
        let (requests, inbox) = mpsc::channel();
        // The first line counts from here, before any connection is served (not from
        // whenever the new thread gets to run).
        let mut last = stats.sample();
        let thread = thread::Builder::new().name("stats".into()).spawn(move || {
            let mut next_tick = interval.map(|interval| last.at + interval);
            loop {
                let request = match next_tick {
                    Some(tick) => inbox.recv_timeout(tick.saturating_duration_since(Instant::now())),
                    None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match request {
                    Ok(Request::Line) => {}
                    Err(RecvTimeoutError::Timeout) => {
                        // Ticks keep their schedule, whatever SIGUSR1 lines came between.
                        next_tick = next_tick.zip(interval).map(|(tick, interval)| tick + interval);
                    }
                    Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let now = stats.sample();
                let line = line(&stats, &last, &now);
                info!("{line}");
                notifier.status(&line);
                last = now;
            }
        })?;
        let to_thread = requests.clone();
        on_demand.on_request(move || {
            if to_thread.send(Request::Line).is_err() {
                debug!("statistics requested after the server stopped");
            }
        });
        Ok(Reporter { requests, thread: Some(thread) })
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Stop); // fails only if the thread is gone already
        if let Some(thread) = self.thread.take() {
            let _ = thread.join(); // it only formats and logs: it ends at once
        }
    }
}

/// The statistics line of `stats` for the time between two samples.
fn line(stats: &ServerStats, last: &Sample, now: &Sample) -> String {
    let names: Vec<&str> = stats.listeners.iter().map(|(addr, _)| addr.as_str()).collect();
    line_of(stats.counted, &names, last, now)
}

/// The statistics line for the time between two samples, counting `counted`, naming each
/// listener by `names` (when there are several).
fn line_of(counted: Counted, names: &[&str], last: &Sample, now: &Sample) -> String {
    let elapsed = now.at.duration_since(last.at);
    let total = |s: &Sample| s.workers.iter().fold(Counters::default(), |sum, w| sum.plus(w));
    let (before, after) = (total(last), total(now));
    let count = after.counted(counted) - before.counted(counted);
    let bytes = after.bytes_echoed - before.bytes_echoed;
    let name = counted.name();
    let rejected = |c: &Counters| c.rejected + c.rejected_proxy_header + c.rejected_failed;
    // With --framing, the frames over --max-frame since the previous line, after `rejected`.
    let too_large = match counted {
        Counted::Frames => format!(" too_large={}", after.frames_too_large - before.frames_too_large),
        _ => String::new(),
    };
    let mut line = format!(
        "stats: open={} accepted={} rejected={}{too_large} {name}/s={} bytes/s={} pending={} peak={} \
         ({name}={count} bytes={bytes} in {:.3}s)",
        after.open,
        after.accepted - before.accepted,
        rejected(&after) - rejected(&before),
        per_second(count, elapsed),
        per_second(bytes, elapsed),
        after.pending,
        now.peak,
        elapsed.as_secs_f64(),
    );
    if now.workers.len() > 1 {
        let each = |f: &dyn Fn(&Counters, &Counters) -> u64| {
            let values: Vec<String> =
                last.workers.iter().zip(&now.workers).map(|(b, a)| f(b, a).to_string()).collect();
            values.join(",")
        };
        line += &format!(
            " per-worker open=[{}] accepted=[{}] bytes/s=[{}]",
            each(&|_, a| a.open),
            each(&|b, a| a.accepted - b.accepted),
            each(&|b, a| per_second(a.bytes_echoed - b.bytes_echoed, elapsed)),
        );
    }
    if names.len() > 1 {
        let each: Vec<String> = names
            .iter()
            .zip(last.listeners.iter().zip(&now.listeners))
            .map(|(name, (b, a))| {
                format!(
                    "{name} open={} bytes/s={}",
                    a.open,
                    per_second(a.bytes_echoed - b.bytes_echoed, elapsed)
                )
            })
            .collect();
        line += &format!(" per-listener {}", each.join(", "));
    }
    line
}

/// `count` over `elapsed`, rounded to a whole number per second.
fn per_second(count: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 { 0 } else { (count as f64 / secs).round() as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, workers: Vec<Counters>) -> Sample {
        let listeners = vec![workers.iter().fold(Counters::default(), |sum, w| sum.plus(w))];
        Sample { at, peak: listeners[0].peak, workers, listeners }
    }

    fn line(counted: Counted, last: &Sample, now: &Sample) -> String {
        line_of(counted, &[""], last, now)
    }

    #[test]
    fn several_listeners_each_have_their_share() {
        let t0 = Instant::now();
        let c = |open, bytes_echoed| Counters { open, bytes_echoed, ..Default::default() };
        let last = Sample { at: t0, peak: 0, workers: vec![c(0, 0)], listeners: vec![c(0, 0), c(0, 0)] };
        let now = Sample {
            at: t0 + Duration::from_secs(1),
            peak: 1,
            workers: vec![c(1, 30)],
            listeners: vec![c(1, 10), c(0, 20)],
        };
        let text = line_of(Counted::Reads, &["127.0.0.1:7", "udp:127.0.0.1:7"], &last, &now);
        assert!(
            text.ends_with(" per-listener 127.0.0.1:7 open=1 bytes/s=10, udp:127.0.0.1:7 open=0 bytes/s=20"),
            "{text}"
        );
    }

    #[test]
    fn one_worker_line_counts_the_interval() {
        let t0 = Instant::now();
        let before = Counters { accepted: 5, reads: 100, bytes_echoed: 1000, peak: 4, ..Default::default() };
        let after = Counters {
            accepted: 7,
            rejected: 1,
            open: 3,
            peak: 5,
            reads: 110,
            frames: 7,
            bytes_echoed: 13_800,
            pending: 64,
            rejected_proxy_header: 2,
            frames_too_large: 3,
            ..Default::default()
        };
        let (last, now) = (sample(t0, vec![before]), sample(t0 + Duration::from_secs(2), vec![after]));
        assert_eq!(
            line(Counted::Reads, &last, &now),
            "stats: open=3 accepted=2 rejected=3 reads/s=5 bytes/s=6400 pending=64 peak=5 \
             (reads=10 bytes=12800 in 2.000s)"
        );
        let framed = line(Counted::Frames, &last, &now);
        assert!(framed.contains(" frames/s=4 ") && framed.contains("(frames=7 bytes=12800 "), "{framed}");
        assert!(framed.contains(" rejected=3 too_large=3 "), "{framed}");
        let udp = line(Counted::Datagrams, &last, &now);
        assert!(udp.contains(" datagrams/s=5 ") && udp.contains("(datagrams=10 bytes=12800 "), "{udp}");
    }

    #[test]
    fn workers_are_summed_then_split() {
        let t0 = Instant::now();
        let w =
            |accepted, open, bytes_echoed| Counters { accepted, open, bytes_echoed, ..Default::default() };
        let text = line(
            Counted::Reads,
            &sample(t0, vec![w(0, 0, 0), w(0, 0, 0)]),
            &sample(t0 + Duration::from_millis(500), vec![w(1, 1, 100), w(3, 2, 300)]),
        );
        assert!(text.starts_with("stats: open=3 accepted=4 rejected=0 reads/s=0 bytes/s=800 "), "{text}");
        assert!(text.ends_with(" per-worker open=[1,2] accepted=[1,3] bytes/s=[200,600]"), "{text}");
    }

    #[test]
    fn a_request_reaches_every_hook() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let requests = StatsRequests::new();
        requests.request(); // nobody listening yet: only logged
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let c = Arc::clone(&count);
            requests.on_request(move || {
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
        requests.clone().request();
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_line_at_the_same_instant_has_no_rate() {
        assert_eq!(per_second(10, Duration::ZERO), 0);
        assert_eq!(per_second(3, Duration::from_millis(1500)), 2);
    }
}
