//! Accepting in a blocking model, and making a stop request reach the threads that sleep in
//! `accept` and `read`: neither looks at a flag, so the request goes through their sockets.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::registry::LiveConnections;
use crate::net::{
    ACCEPT_BACKOFF, AcceptBackoff, AfterAcceptError, BlockingStream, Peer, StdListener, timed_out,
    would_block,
};
use crate::notify::WatchdogTimer;
use crate::shutdown::ShutdownHandle;
use crate::stats::Stats;

/// Accept connections until a stop is requested, handing each to `on_accept`.
///
/// `accept` blocks; the stop request interrupts it through [`wake_on_shutdown`]. An error is
/// the end only once a stop was requested; before that it is handled as the event loop does:
/// a connection that died in the queue is skipped, and running out of descriptors or memory
/// (the connection stays queued) pauses accepting for `ACCEPT_BACKOFF` instead of spinning.
///
/// With a `watchdog`, `accept` gives up every ping interval (SO_RCVTIMEO) and the loop pings
/// before it waits again: each ping says this thread still turns.
///
/// `stats` hears when the thread waits in `accept` and when it works (for `/livez`): in the
/// blocking model, serving a client is work, for as long as it lasts.
pub fn accept_until_shutdown(
    listener: &StdListener,
    shutdown: &ShutdownHandle,
    stats: &Stats,
    mut watchdog: Option<WatchdogTimer>,
    mut on_accept: impl FnMut(BlockingStream, Peer),
) {
    let mut backoff = AcceptBackoff::default();
    if let Some(interval) = watchdog.as_ref().map(WatchdogTimer::interval)
        && let Err(e) = listener.set_accept_timeout(Some(interval))
    {
        warn!("watchdog: cannot make accept wake up every {interval:?}: {e}; no pings");
        watchdog = None;
    }
    loop {
        if let Some(watchdog) = &mut watchdog {
            watchdog.tick(Instant::now());
        }
        stats.loop_waiting();
        let accepted = listener.accept_blocking();
        stats.loop_busy(Instant::now());
        let error = match accepted {
            Ok(_) if shutdown.is_requested() => return, // too late to serve: dropping it closes it
            Ok((stream, peer)) => {
                backoff.accepted(Instant::now());
                on_accept(stream, peer);
                continue;
            }
            Err(e) if shutdown.is_requested() => {
                debug!("accept woken for shutdown: {e}");
                return;
            }
            Err(e) if would_block(&e) || timed_out(&e) => continue, // the watchdog's wake-up
            Err(e) => e,
        };
        if backoff.failed(&error, Instant::now()) == AfterAcceptError::Pause {
            // The connection is still queued; retrying now would fail again at once.
            thread::sleep(ACCEPT_BACKOFF);
            backoff.resume_due(Instant::now());
        }
    }
}

/// Make a stop request reach the threads that sleep in `read` and `accept`: make every live
/// connection's `read` return 0, and wake the acceptor.
///
/// The waker holds weak references, so the listener still closes (and a Unix socket file is
/// still removed) when `serve` returns, however long the handle lives.
pub fn wake_on_shutdown(
    shutdown: &ShutdownHandle,
    listener: &Arc<StdListener>,
    live: &Arc<LiveConnections>,
    grace: Duration,
) {
    let listener = Arc::downgrade(listener);
    let live = Arc::downgrade(live);
    shutdown.add_waker(move || {
        // Connections first, so the acceptor wakes up to a server that has stopped reading.
        if let Some(live) = live.upgrade() {
            live.begin_shutdown(grace);
        }
        if let Some(listener) = listener.upgrade() {
            // A second wake-up finds the socket already shut down (ENOTCONN): harmless.
            if let Err(e) = listener.wake_acceptor() {
                debug!("waking the acceptor: {e}");
            }
        }
    });
}
