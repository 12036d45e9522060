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
use super::connection::Connection;
use super::op::Op;
use crate::lifecycle::ConnId;
use crate::net::{AfterAcceptError, StdListener, Stream, would_block};

impl UringLoop {
    /// Queue every listener's multishot accept that is not armed, unless paused; a closed
    /// listener (shutting down) is skipped.
    pub(super) fn arm_accepts(&mut self) -> io::Result<()> {
        if self.accept_backoff.is_paused() {
            return Ok(());
        }
        for (i, acceptor) in self.acceptors.iter_mut().enumerate() {
            let Some(listener) = acceptor.listener.as_ref().filter(|_| !acceptor.armed) else { continue };
            let fd = match listener {
                StdListener::Tcp(l) => l.as_raw_fd(),
                StdListener::Unix(l, _) => l.as_raw_fd(),
            };
            trace!("queue accept on LISTENER {} (multishot: a completion per connection)", acceptor.addr);
            self.ring.accept_multishot(fd, Op::Accept(i))?;
            acceptor.armed = true;
        }
        Ok(())
    }

    /// Cancel every armed multishot accept (its last completion says when it is gone).
    pub(super) fn cancel_accepts(&mut self) -> io::Result<()> {
        for (i, acceptor) in self.acceptors.iter().enumerate() {
            if acceptor.armed {
                trace!("queue cancel of the accept on LISTENER {}", acceptor.addr);
                self.ring.cancel(Op::Accept(i))?;
            }
        }
        Ok(())
    }

    /// One accept completion of listener `i`: a new connection, or an error that skips it
    /// or pauses us (out of descriptors, every listener pauses: the limit is the process's).
    pub(super) fn on_accept(&mut self, i: usize, result: i32, flags: u32, now: Instant) -> io::Result<()> {
        if !cqueue::more(flags) {
            self.acceptors[i].armed = false; // its last completion: arm again below if we may
        }
        if result >= 0 {
            self.accept_backoff.accepted(now);
            self.admit(i, result, now)?;
            return self.arm_accepts();
        }
        let e = io::Error::from_raw_os_error(-result);
        // Nothing to accept now, or our own cancel: no failure (the completion's trace names it).
        let failed = !(would_block(&e) || -result == libc::ECANCELED);
        if failed && self.accept_backoff.failed(&e, now) == AfterAcceptError::Pause {
            self.cancel_accepts()?; // the connection is still queued; accepting would fail again
        }
        self.arm_accepts()
    }

    /// Serve a descriptor freshly accepted on listener `i`, or close it at once if it may
    /// not be served (dropping the stream closes it). `--max-connections` counts the
    /// connections of the whole process (every listener, every worker): see `Admission`.
    fn admit(&mut self, i: usize, fd: RawFd, now: Instant) -> io::Result<()> {
        let acceptor = &self.acceptors[i];
        // SAFETY: `fd` was just accepted for us and nothing else owns it; the stream closes it.
        let stream = Stream::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }, acceptor.is_tcp);
        // Multishot accept returns no address; it costs a `getpeername`, so we ask only when
        // a log line will show it: a refusal, or debug logging (below, and in `close`).
        if !acceptor.admission.admit(&stream.sock_ref(), stream.is_tcp(), || stream.peer()) {
            return Ok(());
        }
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        // A listener's number fits in 16 bits: `UringLoop::new` refuses more listeners.
        let listener = u16::try_from(i).unwrap_or(u16::MAX);
        let (proxy, stamp) = (self.config.proxy_protocol, self.clock.stamp(now));
        let mut conn = Connection::new(stream, listener, proxy, self.cap, stamp);
        if let Some(timers) = &mut self.idle {
            timers.start(ConnId(key), now);
        }
        if let Some(timers) = &mut self.header_deadlines {
            timers.start(ConnId(key), now);
        }
        if self.stopping != super::Stopping::No {
            conn.stop_receiving(); // accepted in the moment before the cancel took effect
        }
        entry.insert(conn);
        let (acceptor, conn) = (&self.acceptors[i], &self.connections[key]);
        if self.header_deadlines.is_some() {
            // Served (and counted open) once its PROXY header is whole: `UringLoop::header_done`.
            debug!("fd={fd} accepted peer={} on {}: awaiting its PROXY header", conn.peer(), acceptor.addr);
        } else {
            let open = self.connections.len();
            debug!("fd={fd} opened peer={} on {} (open: {open})", conn.peer(), acceptor.addr);
        }
        self.advance(key)
    }
}
