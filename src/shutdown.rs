//! Stop requests: one `ShutdownHandle` that signals, tests and embedding programs all use;
//! and the one place that handles signals (SIGINT, SIGTERM: stop; SIGUSR1: log a statistics
//! line now).
//!
//! A stop request must reach a thread that is blocked somewhere: an event loop inside
//! `Poll::poll`, an acceptor inside `accept(2)`. So the handle is a flag that anyone can read
//! plus a list of *wakers*, one per blocked thread, each of which knows how to interrupt its
//! own blocking call (a `mio::Waker` for a poll loop, for instance). Signals are turned into
//! an ordinary call to [`ShutdownHandle::shutdown`] by a small thread from `signal-hook`, so no
//! code runs inside a signal handler.
//!
//! SIGUSR1 asks for a statistics line at once (as `dd` prints its progress). It travels
//! through the same handle, because its handler must be installed as early as the others:
//! SIGUSR1's default action kills the process, so one that arrives while the server binds
//! must already find a handler. Whoever reports statistics registers with
//! [`ShutdownHandle::on_report`].

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use log::{debug, info, warn};

type Wake = Box<dyn Fn() + Send + Sync>;

/// A cloneable handle that asks a running server to stop gracefully.
#[derive(Clone, Default)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    requested: AtomicBool,
    /// Who asked first, for the summary's exit reason.
    cause: OnceLock<StopCause>,
    wakers: Mutex<Vec<Wake>>,
    /// Called on SIGUSR1 (or [`ShutdownHandle::request_report`]).
    report_hooks: Mutex<Vec<Wake>>,
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

    fn shutdown_because(&self, cause: StopCause) {
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

    /// Register what to do when a statistics line is asked for (SIGUSR1).
    pub fn on_report(&self, report: impl Fn() + Send + Sync + 'static) {
        self.report_hooks().push(Box::new(report));
    }

    /// Ask for a statistics line now, as SIGUSR1 does. Before a server runs, nobody has
    /// statistics to report, and the request is only logged.
    pub fn request_report(&self) {
        let hooks = self.report_hooks();
        if hooks.is_empty() {
            debug!("statistics requested, but no server is running yet");
        }
        for report in hooks.iter() {
            report();
        }
    }

    fn report_hooks(&self) -> MutexGuard<'_, Vec<Wake>> {
        self.inner.report_hooks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Handle signals from a background thread: SIGINT and SIGTERM become
    /// [`ShutdownHandle::shutdown`] (a second one while shutting down exits at once with
    /// status 130), SIGUSR1 becomes [`ShutdownHandle::request_report`].
    pub fn handle_signals(&self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
        let handle = self.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in signals.forever() {
                if signal == SIGUSR1 {
                    handle.request_report();
                    continue;
                }
                if handle.is_requested() {
                    warn!("second signal {signal}: exiting without waiting for the grace period");
                    std::process::exit(130);
                }
                info!("signal {signal}: shutting down");
                handle.shutdown_because(StopCause::Signal(signal));
            }
        })?;
        Ok(())
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
    fn report_requests_reach_every_hook() {
        let handle = ShutdownHandle::new();
        handle.request_report(); // nobody listening yet: only logged
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let c = count.clone();
            handle.on_report(move || {
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
        handle.clone().request_report();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(!handle.is_requested(), "a report is not a stop");
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
