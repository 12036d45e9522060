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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

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
