//! Accepting: one multishot accept for the listener's whole life, admitted as every model
//! admits them (`crate::lifecycle::Admission`), pausing when the process runs out of
//! descriptors.
//!
//! The readiness loop learns "a connection is queued" and calls `accept` until
//! `WouldBlock`. Here one request (`IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT`, Linux
//! 5.19) posts a completion per accepted connection, its result the new descriptor, each
//! flagged `IORING_CQE_F_MORE` while the request stays armed. A completion without that flag
//! is its last: after an error, or when the kernel decided to stop. Then we arm it again,
//! unless we are pausing: on EMFILE and its kin the connection stays in the kernel's queue,
//! and accepting again at once would fail again at once, so we wait [`ACCEPT_BACKOFF`]
//! (the loop's wait timeout wakes us), cancelling the request if it is still armed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use io_uring::cqueue;
use log::{debug, trace};

use super::UringLoop;
use super::connection::{Connection, peer_of};
use super::op::Op;
use crate::lifecycle::ConnId;
use crate::net::{AfterAcceptError, Peer, StdListener, Stream, would_block};

impl UringLoop {
    /// Queue the multishot accept, unless it is armed, paused, or the listener is closed.
    pub(super) fn arm_accept(&mut self) -> io::Result<()> {
        if self.accept_armed || self.accept_backoff.is_paused() {
            return Ok(());
        }
        let Some(listener) = &self.listener else { return Ok(()) };
        let fd = match listener {
            StdListener::Tcp(l) => l.as_raw_fd(),
            StdListener::Unix(l, _) => l.as_raw_fd(),
        };
        self.ring.accept_multishot(fd)?;
        self.accept_armed = true;
        Ok(())
    }

    /// Cancel the multishot accept if it is armed (its last completion says when it is gone).
    pub(super) fn cancel_accept(&mut self) -> io::Result<()> {
        if !self.accept_armed {
            return Ok(());
        }
        self.ring.cancel(Op::Accept)
    }

    /// One accept completion: a new connection, or an error that skips it or pauses us.
    pub(super) fn on_accept(&mut self, result: i32, flags: u32, now: Instant) -> io::Result<()> {
        if !cqueue::more(flags) {
            self.accept_armed = false; // its last completion: arm again below if we may
        }
        if result >= 0 {
            self.accept_backoff.accepted(now);
            self.admit(result, now)?;
            return self.arm_accept();
        }
        let e = io::Error::from_raw_os_error(-result);
        if would_block(&e) || -result == libc::ECANCELED {
            trace!("accept: {e}"); // nothing to accept now, or our own cancel
        } else if self.accept_backoff.failed(&e, now) == AfterAcceptError::Pause {
            self.cancel_accept()?; // the connection is still queued; accepting would fail again
        }
        self.arm_accept()
    }

    /// Serve a freshly accepted descriptor, or close it at once if it may not be served
    /// (dropping the stream closes it).
    fn admit(&mut self, fd: RawFd, now: Instant) -> io::Result<()> {
        // SAFETY: `fd` was just accepted for us and nothing else owns it; the stream closes it.
        let stream = Stream::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }, self.is_tcp);
        // Multishot accept returns no address; it costs a `getpeername`, so we ask only when
        // a log line will show it: a refusal, or debug logging (here, and in `close`).
        let open = self.connections.len();
        if !self.admission.admit(open, &stream.sock_ref(), stream.is_tcp(), || peer_of(&stream)) {
            return Ok(());
        }
        let logged = log::log_enabled!(log::Level::Debug)
            || log::log_enabled!(target: "echoloop::io_uring", log::Level::Debug);
        let peer = if logged { peer_of(&stream) } else { Peer(None) };
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let mut conn = Connection::new(stream, peer, self.config.framer(), self.config.connection_cap(), now);
        if let Some(timers) = &mut self.idle {
            timers.start(ConnId(key), now);
        }
        if self.stopping != super::Stopping::No {
            conn.stop_receiving(); // accepted in the moment before the cancel took effect
        }
        entry.insert(conn);
        self.stats.connection_opened();
        debug!("key={key} opened peer={peer} (open: {})", self.connections.len());
        self.advance(key)
    }
}
