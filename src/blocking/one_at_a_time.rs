//! The blocking model: one connection at a time, served on the thread that accepts it.
//!
//! ```text
//!   loop {
//!       accept()                  // sleeps until a client connects
//!       loop { read -> write all } until the client closes
//!   }                             // only now is the next client accepted
//! ```
//!
//! The echo server "without goroutines": the first server of most socket tutorials. It is
//! correct for one client, and shows why the other models exist: while one client is
//! served, the kernel still completes other clients' TCP handshakes and queues them (up to
//! the listen backlog), so their `connect` succeeds and their bytes are buffered, but
//! nothing reads them until the current client leaves. One idle client stalls everyone;
//! `--idle-timeout` is the only thing that moves the queue along.
//!
//! It shares the echo, the accept loop and the shutdown plumbing with the thread-per-conn
//! model ([`super`]). One difference in shutdown: the only thread is busy with its
//! client, so a separate, short-lived thread enforces `--shutdown-grace`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use log::warn;

use super::accept::accept_until_shutdown;
use super::registry::LiveConnections;
use super::{Context, serve_connection};
use crate::net::StdListener;
use crate::notify::WatchdogTimer;
use crate::shutdown::ShutdownHandle;

/// Serve one connection at a time until a stop is requested and the current connection
/// has finished (or the grace period is over). (The watchdog is pinged between clients
/// only: a client held longer than the watchdog interval stops the pings.)
pub fn serve(listener: Arc<StdListener>, ctx: &Context, watchdog: Option<WatchdogTimer>) {
    accept_until_shutdown(&listener, &ctx.shutdown, &ctx.stats, watchdog, |stream, peer| {
        // At most one connection is ever open, so `--max-connections` (at least 1) never bites;
        // the socket options and the idle timeout are set as in every model.
        if let Some(conn) = ctx.admit(stream, peer) {
            serve_connection(conn, peer, ctx);
        }
    });
}

/// When a stop is requested, start a thread that gives the current connection `grace` to
/// finish its echo and then shuts its socket down, which ends a `write` blocked on a client
/// that never reads; the serving thread itself cannot, since it is the one blocked.
pub fn enforce_grace_on_shutdown(shutdown: &ShutdownHandle, live: &Arc<LiveConnections>, grace: Duration) {
    let live = Arc::downgrade(live);
    let started = AtomicBool::new(false);
    shutdown.add_waker(move || {
        if started.swap(true, Ordering::SeqCst) {
            return; // a waker may run twice; one timer is enough
        }
        let Some(live) = live.upgrade() else { return }; // `serve` has already returned
        let timer = Arc::clone(&live);
        let spawned = thread::Builder::new().name("shutdown-grace".into()).spawn(move || timer.drain(grace));
        if let Err(e) = spawned {
            warn!("cannot start the grace timer thread: {e}; closing the current connection now");
            live.close_all();
        }
    });
}
