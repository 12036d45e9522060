//! Stop requests: one `ShutdownHandle` that signals, tests and benches all use.
//!
//! A stop request must reach a thread that is blocked somewhere: an event loop inside
//! `Poll::poll`, an acceptor inside `accept(2)`. So the handle is a flag that anyone can read
//! plus a list of *wakers*, one per blocked thread, each of which knows how to interrupt its
//! own blocking call (a `mio::Waker` for a poll loop, for instance). Signals are turned into
//! an ordinary call to [`ShutdownHandle::shutdown`] by a small thread from `signal-hook`, so no
//! code runs inside a signal handler.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use log::{info, warn};

type Wake = Box<dyn Fn() + Send + Sync>;

/// A cloneable handle that asks a running server to stop gracefully.
#[derive(Clone, Default)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    requested: AtomicBool,
    wakers: Mutex<Vec<Wake>>,
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

    fn wakers(&self) -> std::sync::MutexGuard<'_, Vec<Wake>> {
        // A panicking waker must not stop every later shutdown: ignore poisoning.
        self.inner.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Turn SIGINT and SIGTERM into [`ShutdownHandle::shutdown`], from a background thread.
    /// A second signal while shutting down exits at once with status 130.
    pub fn shutdown_on_signals(&self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let handle = self.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in signals.forever() {
                if handle.is_requested() {
                    warn!("second signal {signal}: exiting without waiting for the grace period");
                    std::process::exit(130);
                }
                info!("signal {signal}: shutting down");
                handle.shutdown();
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
