//! The one place that handles signals: SIGINT and SIGTERM stop the server gracefully,
//! SIGUSR1 asks for a statistics line now. Two requests, two handles: a [`ShutdownHandle`]
//! for stopping, [`StatsRequests`] for the line.
//!
//! A small thread from `signal-hook` turns each signal into an ordinary call on the right
//! handle, so no code of ours runs inside a signal handler. Install it before binding: a
//! SIGTERM that arrives while the server binds, or right after whoever reads
//! `listening on` sees it, must find the graceful handler; and SIGUSR1's default action
//! kills the process, so one that arrives early must find a handler too.

use std::io;

use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

use crate::shutdown::{ShutdownHandle, StopCause};
use crate::stats::StatsRequests;

/// Handle signals from a background thread: SIGINT and SIGTERM stop gracefully through
/// `stop`, after a drain if the server set one (`--drain`; a second signal ends the drain, and
/// one while shutting down exits at once with status 130); SIGUSR1 becomes
/// [`StatsRequests::request`] on `stats`.
pub fn handle_signals(stop: &ShutdownHandle, stats: &StatsRequests) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
    let (stop, stats) = (stop.clone(), stats.clone());
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            if signal == SIGUSR1 {
                stats.request();
                continue;
            }
            if stop.is_requested() {
                warn!("second signal {signal}: exiting without waiting for the grace period");
                std::process::exit(130);
            }
            if !stop.is_leaving() {
                info!("signal {signal}: shutting down");
            }
            stop.stop_after_drain(StopCause::Signal(signal)); // a drain first, with --drain
        }
    })?;
    Ok(())
}
