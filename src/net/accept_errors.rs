//! What an `accept` error means, and what to do about it: shared by every model, because
//! every model accepts.
//!
//! An `accept` can fail for three different owners. The *connection* may be gone already
//! (the client reset it while it sat in the queue): skip it. A *signal* may have interrupted
//! the call: retry. Or the *process* is out of something (descriptors, memory): the
//! connection stays queued, and retrying at once would fail again and spin the CPU, so
//! accepting pauses for [`ACCEPT_BACKOFF`]. Such a condition can last for minutes, so
//! [`BackoffLog`] logs its first pause, then one reminder with a count every
//! [`REMINDER_EVERY`], and one line when accepting works again, instead of a warning for
//! every 100 ms pause.
//!
//! [`AcceptBackoff`] is that whole decision for one accept loop, as every model uses it:
//! it says what to do after an error, and keeps the pause and its log.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

/// How long accepting pauses after running out of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// While accepting keeps failing, how often a reminder is logged.
pub const REMINDER_EVERY: Duration = Duration::from_secs(10);

/// Whose problem an `accept` error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// A signal interrupted the call (EINTR): just call again.
    Interrupted,
    /// The connection died in the queue (ECONNABORTED, ECONNRESET, EPROTO): skip it.
    ConnectionGone,
    /// The process or system is out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM): the connection is still queued; pause, then try again.
    OutOfResources,
    /// Anything else: also pause and retry, rather than give up serving.
    Unexpected,
}

/// Sort an `accept` error (other than `WouldBlock`, which the non-blocking caller handles
/// as "queue empty") by what the caller should do.
pub fn classify_accept_error(e: &io::Error) -> AcceptError {
    match (e.kind(), e.raw_os_error()) {
        (ErrorKind::Interrupted, _) => AcceptError::Interrupted,
        (ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset, _) => AcceptError::ConnectionGone,
        (_, Some(libc::EPROTO)) => AcceptError::ConnectionGone,
        (_, Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) => AcceptError::OutOfResources,
        _ => AcceptError::Unexpected,
    }
}

/// What an accept loop does after an error (other than `WouldBlock`, "queue empty").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAcceptError {
    /// Nothing happened (a signal): accept again.
    Retry,
    /// That connection is gone (logged): accept the next one.
    Skip,
    /// Out of resources, or an error we do not know: stop accepting until the pause is over
    /// ([`AcceptBackoff::resume_due`]); the connection stays queued meanwhile.
    Pause,
}

/// One accept loop's back-off, the same in every model: what an error means, when a pause
/// ends, and the log of an episode of failures. Time is an argument.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Set while paused: accepting resumes at this instant.
    paused_until: Option<Instant>,
    /// The episode's log lines.
    log: BackoffLog,
}

impl AcceptBackoff {
    /// A connection was accepted: if accepting had been failing, say that it works again.
    pub fn accepted(&mut self, now: Instant) {
        self.log.accepted(now);
    }

    /// Accepting failed with `e` at `now`: what to do next. A pause is logged and lasts
    /// [`ACCEPT_BACKOFF`]; retrying at once would fail again at once and spin the CPU.
    pub fn failed(&mut self, e: &io::Error, now: Instant) -> AfterAcceptError {
        match classify_accept_error(e) {
            AcceptError::Interrupted => AfterAcceptError::Retry,
            AcceptError::ConnectionGone => {
                debug!("accept: skipped a connection: {e}");
                AfterAcceptError::Skip
            }
            AcceptError::OutOfResources | AcceptError::Unexpected => {
                self.log.pausing(e, now);
                self.paused_until = Some(now + ACCEPT_BACKOFF);
                AfterAcceptError::Pause
            }
        }
    }

    /// Paused: do not accept now.
    pub fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// When the pause ends, for the loop's wait timeout.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// True once, when the pause is over at `now` (due at `now` = over): accept again.
    pub fn resume_due(&mut self, now: Instant) -> bool {
        if self.paused_until.is_none_or(|until| until > now) {
            return false;
        }
        self.paused_until = None;
        // Debug, not info: while descriptors stay short this runs every pause, and the
        // back-off log already tells the operator when the episode starts and ends.
        debug!("accept: pause over, trying again");
        true
    }
}

/// The log of one accept loop's pauses: the first pause of an episode, a reminder with a
/// count every [`REMINDER_EVERY`], and the end of the episode. Time is an argument, so it is
/// tested without sleeping.
#[derive(Debug, Default)]
pub struct BackoffLog {
    /// Set while accepting keeps failing: when the episode began, when we last logged,
    /// and the pauses since then.
    episode: Option<Episode>,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    began: Instant,
    last_logged: Instant,
    pauses_since_log: u64,
    pauses: u64,
}

impl BackoffLog {
    /// Accepting failed with `e` (out of resources or unexpected) and pauses now.
    pub fn pausing(&mut self, e: &io::Error, now: Instant) {
        let what = match classify_accept_error(e) {
            AcceptError::OutOfResources => "out of resources",
            _ => "unexpected error",
        };
        let Some(episode) = &mut self.episode else {
            warn!("accept: {e} ({what}): pausing accepts for {ACCEPT_BACKOFF:?} at a time until it clears");
            self.episode = Some(Episode { began: now, last_logged: now, pauses_since_log: 1, pauses: 1 });
            return;
        };
        episode.pauses += 1;
        episode.pauses_since_log += 1;
        if now.duration_since(episode.last_logged) >= REMINDER_EVERY {
            warn!(
                "accept: still failing ({e}): {} pauses in the last {:.0?}",
                episode.pauses_since_log,
                now.duration_since(episode.last_logged)
            );
            episode.last_logged = now;
            episode.pauses_since_log = 0;
        } else {
            debug!("accept: {e}: pausing again");
        }
    }

    /// A connection was accepted: if accepting had been failing, say that it works again.
    pub fn accepted(&mut self, now: Instant) {
        if let Some(episode) = self.episode.take() {
            info!(
                "accept: accepting again after {:.1?} ({} pauses)",
                now.duration_since(episode.began),
                episode.pauses
            );
        }
    }

    /// Is an episode of failures under way?
    #[cfg(test)]
    pub fn is_failing(&self) -> bool {
        self.episode.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn errors_are_sorted_by_owner() {
        assert_eq!(classify_accept_error(&os(libc::EINTR)), AcceptError::Interrupted);
        assert_eq!(classify_accept_error(&os(libc::ECONNABORTED)), AcceptError::ConnectionGone);
        assert_eq!(classify_accept_error(&os(libc::EPROTO)), AcceptError::ConnectionGone);
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(classify_accept_error(&os(code)), AcceptError::OutOfResources, "{code}");
        }
        assert_eq!(classify_accept_error(&os(libc::EINVAL)), AcceptError::Unexpected);
    }

    #[test]
    fn a_pause_ends_once_and_only_when_due() {
        let t0 = Instant::now();
        let mut backoff = AcceptBackoff::default();
        assert_eq!(backoff.failed(&os(libc::EINTR), t0), AfterAcceptError::Retry);
        assert_eq!(backoff.failed(&os(libc::ECONNABORTED), t0), AfterAcceptError::Skip);
        assert!(!backoff.is_paused());
        assert_eq!(backoff.failed(&os(libc::EMFILE), t0), AfterAcceptError::Pause);
        assert_eq!(backoff.paused_until(), Some(t0 + ACCEPT_BACKOFF));
        assert!(!backoff.resume_due(t0 + ACCEPT_BACKOFF / 2));
        assert!(backoff.resume_due(t0 + ACCEPT_BACKOFF), "due at the deadline");
        assert!(!backoff.resume_due(t0 + ACCEPT_BACKOFF), "once");
        assert!(!backoff.is_paused());
    }

    #[test]
    fn an_episode_logs_first_then_reminders_then_its_end() {
        let t0 = Instant::now();
        let mut log = BackoffLog::default();
        log.pausing(&os(libc::EMFILE), t0);
        assert!(log.is_failing());
        for i in 1..=99 {
            log.pausing(&os(libc::EMFILE), t0 + ACCEPT_BACKOFF * i);
        }
        let episode = log.episode.expect("still failing");
        assert_eq!(episode.pauses, 100);
        // 99 pauses of 100 ms = 9.9 s: no reminder yet, so all are counted since the first log.
        assert_eq!(episode.last_logged, t0);
        log.pausing(&os(libc::EMFILE), t0 + REMINDER_EVERY);
        let episode = log.episode.expect("still failing");
        assert_eq!((episode.last_logged, episode.pauses_since_log), (t0 + REMINDER_EVERY, 0));
        log.accepted(t0 + REMINDER_EVERY * 2);
        assert!(!log.is_failing());
    }
}
