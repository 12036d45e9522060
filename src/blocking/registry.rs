//! The open connections of a blocking server, so a stop request can reach their sockets.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use slab::Slab;

use crate::net::BlockingStream;

/// After the grace period, `shutdown(SHUT_RDWR)` makes every blocked call return at once;
/// this is how long we then wait for the connection threads to notice and leave.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The open connections of one server, so that a stop request can reach their sockets while
/// their threads sleep in `read` or `write`.
///
/// Each socket is shared (`Arc`) between its connection and this registry, so it is closed
/// when both let go; [`Registered`] lets go of both at once, under the lock, so a socket
/// found here is always open and always the connection it was registered as.
#[derive(Debug, Default)]
pub struct LiveConnections {
    /// The open sockets; the slab key is the connection id in logs.
    sockets: Mutex<Slab<Arc<BlockingStream>>>,
    /// Notified whenever a connection leaves, so [`LiveConnections::drain`] can wait.
    left: Condvar,
    /// Set by the first [`LiveConnections::begin_shutdown`]; a waker may run twice.
    stopping: AtomicBool,
    /// When the grace period of a stop ends (set by [`LiveConnections::begin_shutdown`]).
    grace_ends: OnceLock<Instant>,
}

impl LiveConnections {
    /// Add a connection; it stays until the returned guard is dropped.
    pub fn register(live: &Arc<LiveConnections>, stream: BlockingStream) -> Registered {
        let stream = Arc::new(stream);
        let id = live.lock().insert(Arc::clone(&stream));
        Registered { id, stream: Some(stream), live: Arc::clone(live) }
    }

    /// Open connections right now (the `--max-connections` count).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Once per server: log that shutdown began, and `shutdown(SHUT_RD)` every connection,
    /// so a thread blocked in `read` sees 0 and stops; writes still work, so echoes already
    /// read are finished. A connection registered after this sees the stop request before
    /// its first read.
    pub fn begin_shutdown(&self, grace: Duration) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.grace_ends.set(Instant::now() + grace); // set once, here
        info!("shutting down: {} connections open, flushing pending echoes for up to {grace:?}", self.len());
        self.shutdown_all(Shutdown::Read);
    }

    /// When the grace period of the stop under way ends; `None` before a stop.
    pub fn grace_ends(&self) -> Option<Instant> {
        self.grace_ends.get().copied()
    }

    /// `shutdown(SHUT_RDWR)` on every connection: blocked reads and writes fail at once.
    pub fn close_all(&self) {
        self.shutdown_all(Shutdown::Both);
    }

    fn shutdown_all(&self, how: Shutdown) {
        for (id, socket) in self.lock().iter() {
            // ENOTCONN when the client already reset it: nothing left to stop.
            if let Err(e) = socket.sock_ref().shutdown(how) {
                debug!("conn={id} shutdown({}): {e}", shut_name(how));
            }
        }
    }

    /// Wait until every connection has left, or `deadline`; true if they all left.
    pub fn wait_until_empty(&self, deadline: Instant) -> bool {
        let mut sockets = self.lock();
        while !sockets.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            sockets = self.left.wait_timeout(sockets, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    /// The end of a graceful stop, once reading has stopped: give the connections `grace` to
    /// finish their echoes, then shut down whatever is left and wait briefly for its threads.
    pub fn drain(&self, grace: Duration) {
        if self.wait_until_empty(Instant::now() + grace) {
            return;
        }
        warn!("grace period over: closing {} connections with echoes unsent", self.len());
        self.close_all();
        if !self.wait_until_empty(Instant::now() + CLOSE_WAIT) {
            warn!("{} connection threads still busy after shutdown(2): not waiting for them", self.len());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slab<Arc<BlockingStream>>> {
        // The slab stays consistent even if a thread panicked while holding the lock.
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One registered connection: its socket, and its place in [`LiveConnections`]. Dropping it
/// closes the socket and frees the place.
#[derive(Debug)]
pub struct Registered {
    /// The registry key, shown in logs as the connection id.
    pub id: usize,
    /// Always `Some` until dropped.
    stream: Option<Arc<BlockingStream>>,
    live: Arc<LiveConnections>,
}

impl Registered {
    /// The socket, for reading and writing.
    pub fn stream(&self) -> &BlockingStream {
        self.stream.as_deref().expect("present until dropped")
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        drop(self.stream.take()); // ours first, so the registry holds the last reference
        let mut sockets = self.live.lock();
        sockets.remove(self.id); // the last reference: the socket closes here, under the lock
        drop(sockets);
        self.live.left.notify_all();
    }
}

/// `how` as the system call names it, for a log line: `SHUT_RD`.
fn shut_name(how: Shutdown) -> &'static str {
    match how {
        Shutdown::Read => "SHUT_RD",
        Shutdown::Write => "SHUT_WR",
        Shutdown::Both => "SHUT_RDWR",
    }
}
