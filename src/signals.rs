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
    const HANDLED: [libc::c_int; 3] = [SIGINT, SIGTERM, SIGUSR1];
    // signal-hook-registry installs its handler (sigaction) a moment before it records what
    // the handler should do; a signal delivered in between finds nothing recorded and is
    // dropped (its source says so). A SIGTERM sent right after start was lost that way about
    // once in 5000 starts, and the server ran on until killed. So the signals stay blocked
    // while the handlers are installed: one sent meanwhile waits, pending in the kernel, and
    // is delivered to a complete handler when we unblock them. Unblocking (rather than
    // restoring the old mask) also lets in a SIGTERM our parent left blocked for us (the mask
    // survives exec): a process that cannot be stopped gracefully helps nobody.
    set_mask(libc::SIG_BLOCK, &HANDLED)?;
    let installed = signal_hook::iterator::Signals::new(HANDLED);
    set_mask(libc::SIG_UNBLOCK, &HANDLED)?;
    let mut signals = installed?;
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

/// Block or unblock (`how`) `signals` in the calling thread.
fn set_mask(how: libc::c_int, signals: &[libc::c_int]) -> io::Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; sigaddset then changes only that
    // set, for signal numbers that exist (ours are constants).
    let set = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for &signal in signals {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        set.assume_init()
    };
    // SAFETY: `set` is initialised; a null old-mask pointer asks for no copy of the old mask.
    match unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) } {
        0 => Ok(()),
        error => Err(io::Error::from_raw_os_error(error)),
    }
}
