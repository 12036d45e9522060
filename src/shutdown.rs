//! Stop requests: one `ShutdownHandle` that signals, tests and embedding programs all use.
//!
//! A stop request must reach a thread that is blocked somewhere: an event loop inside
//! `Poll::poll`, an acceptor inside `accept(2)`. So the handle is a flag that anyone can read
//! plus a list of *wakers*, one per blocked thread, each of which knows how to interrupt its
//! own blocking call (a `mio::Waker` for a poll loop, for instance). SIGINT and SIGTERM
//! become an ordinary call to [`ShutdownHandle::shutdown`] (see `signals.rs`).
//!
//! Asking for a statistics line (SIGUSR1) is not a stop: it has a handle of its own,
//! `StatsRequests` (`stats/live.rs`).
//!
//! A stop may be preceded by a *drain* (`--drain SECS`): the server goes on exactly as
//! before, but says it is leaving ([`ShutdownHandle::is_leaving`], which `/readyz` reports),
//! so a load balancer's health check takes it out of rotation before it stops accepting.
//! The drain ends when no connection is open, when its time is up, or at a second signal;
//! then the stop proper begins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

type Wake = Box<dyn Fn() + Send + Sync>;

/// How often a drain looks whether any connection is still open.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// A cloneable handle that asks a running server to stop gracefully.
#[derive(Clone, Default)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    requested: AtomicBool,
    /// A stop has begun: its drain, or the stop itself.
    leaving: AtomicBool,
    /// How a signal's stop drains first (`--drain`), once the server runs.
    drain: Mutex<Option<Drain>>,
    /// Who asked first, for the summary's exit reason.
    cause: OnceLock<StopCause>,
    wakers: Mutex<Vec<Wake>>,
}

/// `--drain`: how long at most, and how to count the connections still open.
struct Drain {
    period: Duration,
    open: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// Why a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT or SIGTERM (the signal number).
    Signal(i32),
    /// [`ShutdownHandle::shutdown`] was called (by a test, an embedding program, or a failing
    /// worker).
    Requested,
}

impl StopCause {
    /// `SIGINT`, `SIGTERM`, or `shutdown` for a call.
    pub fn name(self) -> String {
        match self {
            StopCause::Signal(libc::SIGINT) => "SIGINT".into(),
            StopCause::Signal(libc::SIGTERM) => "SIGTERM".into(),
            StopCause::Signal(n) => format!("signal {n}"),
            StopCause::Requested => "shutdown".into(),
        }
    }
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle").field("requested", &self.is_requested()).finish()
    }
}

impl ShutdownHandle {
    /// A handle nobody has triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the server to stop: set the flag, then wake every registered thread.
    /// Calling it again does nothing more.
    pub fn shutdown(&self) {
        self.shutdown_because(StopCause::Requested);
    }

    /// Ask the server to stop because of `cause` (the signal handler says which signal).
    pub(crate) fn shutdown_because(&self, cause: StopCause) {
        let _ = self.inner.cause.set(cause); // the first cause wins
        if self.inner.requested.swap(true, Ordering::SeqCst) {
            return;
        }
        for wake in self.wakers().iter() {
            wake();
        }
    }

    /// Has a stop been requested?
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Has a stop begun, or the drain before it? (A server leaving should get no new
    /// connections: `/readyz` answers 503.)
    pub fn is_leaving(&self) -> bool {
        self.inner.leaving.load(Ordering::SeqCst) || self.is_requested()
    }

    /// A stop because of a signal drains first, for up to `period`, while `open()` says any
    /// connection is open (`--drain`; the server sets it when it runs).
    pub(crate) fn drain_first(&self, period: Duration, open: impl Fn() -> u64 + Send + Sync + 'static) {
        let drain = Drain { period, open: Box::new(open) };
        *self.inner.drain.lock().unwrap_or_else(PoisonError::into_inner) = Some(drain);
    }

    /// A graceful stop because of `cause` (a signal): after a drain if one was set, else at
    /// once. During a drain, it ends the drain: the stop begins now.
    pub(crate) fn stop_after_drain(&self, cause: StopCause) {
        if self.inner.leaving.swap(true, Ordering::SeqCst) {
            info!("{}: ending the drain now", cause.name());
            return self.shutdown_because(cause);
        }
        let drain = self.inner.drain.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(drain) = drain.filter(|d| !d.period.is_zero()) else { return self.shutdown_because(cause) };
        let handle = self.clone();
        let spawned = thread::Builder::new().name("drain".into()).spawn(move || handle.drain(&drain, cause));
        if let Err(e) = spawned {
            warn!("cannot start the drain: {e}; stopping now");
            self.shutdown_because(cause);
        }
    }

    /// The drain: wait until no connection is open, the period is over, or a stop was
    /// requested meanwhile; then stop.
    fn drain(&self, drain: &Drain, cause: StopCause) {
        let (start, open) = (Instant::now(), (drain.open)());
        info!(
            "{}: draining for up to {:?} with {open} connections open: /readyz answers 503, the rest goes on",
            cause.name(),
            drain.period
        );
        loop {
            let open = (drain.open)();
            if self.is_requested() {
                return;
            }
            if open == 0 {
                info!("drain over after {:.1?}: no connection open", start.elapsed());
                break;
            }
            if start.elapsed() >= drain.period {
                info!("drain over after {:?}: {open} connections still open", drain.period);
                break;
            }
            thread::sleep(DRAIN_CHECK);
        }
        self.shutdown_because(cause);
    }

    /// Why the stop was requested; `None` while none was.
    pub fn stop_cause(&self) -> Option<StopCause> {
        self.inner.cause.get().copied()
    }

    /// Register how to interrupt one blocked thread. If a stop was already requested the
    /// waker runs at once, so a request made before a thread starts waiting is not lost.
    pub fn add_waker(&self, wake: impl Fn() + Send + Sync + 'static) {
        self.wakers().push(Box::new(wake));
        if self.is_requested() {
            // Runs the new waker (and, harmlessly, any older ones) once more.
            for wake in self.wakers().iter() {
                wake();
            }
        }
    }

    fn wakers(&self) -> MutexGuard<'_, Vec<Wake>> {
        // A panicking waker must not stop every later shutdown: ignore poisoning.
        self.inner.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn wakes_each_waker_once() {
        let handle = ShutdownHandle::new();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        handle.add_waker(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!handle.is_requested());
        handle.shutdown();
        handle.clone().shutdown();
        assert!(handle.is_requested());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(handle.stop_cause(), Some(StopCause::Requested));
    }

    #[test]
    fn the_first_cause_is_kept() {
        let handle = ShutdownHandle::new();
        assert_eq!(handle.stop_cause(), None);
        handle.shutdown_because(StopCause::Signal(libc::SIGTERM));
        handle.shutdown();
        assert_eq!(handle.stop_cause().map(StopCause::name).as_deref(), Some("SIGTERM"));
    }

    #[test]
    fn a_drain_ends_when_no_connection_is_open() {
        let handle = ShutdownHandle::new();
        let open = Arc::new(AtomicUsize::new(2));
        let count = Arc::clone(&open);
        handle.drain_first(Duration::from_secs(30), move || count.load(Ordering::SeqCst) as u64);
        handle.stop_after_drain(StopCause::Signal(libc::SIGTERM));
        assert!(handle.is_leaving() && !handle.is_requested(), "draining: leaving, not stopping");
        thread::sleep(DRAIN_CHECK * 3);
        assert!(!handle.is_requested(), "two connections still open");
        open.store(0, Ordering::SeqCst);
        let start = Instant::now();
        while !handle.is_requested() {
            assert!(start.elapsed() < Duration::from_secs(5), "the drain never ended");
            thread::sleep(DRAIN_CHECK);
        }
        assert_eq!(handle.stop_cause(), Some(StopCause::Signal(libc::SIGTERM)));
    }

    #[test]
    fn a_second_signal_ends_the_drain_and_no_drain_stops_at_once() {
        let handle = ShutdownHandle::new();
        handle.drain_first(Duration::from_secs(30), || 5);
        handle.stop_after_drain(StopCause::Signal(libc::SIGTERM));
        assert!(!handle.is_requested());
        handle.stop_after_drain(StopCause::Signal(libc::SIGINT));
        assert!(handle.is_requested());
        let plain = ShutdownHandle::new();
        assert!(!plain.is_leaving());
        plain.stop_after_drain(StopCause::Signal(libc::SIGTERM));
        assert!(plain.is_requested() && plain.is_leaving());
    }

    #[test]
    fn late_waker_runs_at_once() {
        let handle = ShutdownHandle::new();
        handle.shutdown();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        handle.add_waker(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
