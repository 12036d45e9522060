//! Accepting: one multishot accept for the listener's whole life, within
//! `--max-connections`, pausing when the process runs out of descriptors.
//!
//! The readiness loop learns "a connection is queued" and calls `accept` until
//! `WouldBlock`. Here one request (`IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT`, Linux
//! 5.19) posts a completion per accepted connection, its result the new descriptor, each
//! flagged `IORING_CQE_F_MORE` while the request stays armed. A completion without that flag
//! is its last: after an error, or when the kernel decided to stop. Then we arm it again,
//! unless we are pausing: on EMFILE and its kin the connection stays in the kernel's queue,
//! and accepting again at once would fail again at once, so we wait [`ACCEPT_BACKOFF`]
//! (the loop's wait timeout wakes us), cancelling the request if it is still armed.

use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Instant;

use io_uring::cqueue;
use log::{debug, trace, warn};
use mio::Token;

use super::UringLoop;
use super::connection::Connection;
use super::op::Op;
use crate::net::{ACCEPT_BACKOFF, AcceptError, Peer, StdListener, Stream, classify_accept_error};

impl UringLoop {
    /// Queue the multishot accept, unless it is armed, paused, or the listener is closed.
    pub(super) fn arm_accept(&mut self) -> io::Result<()> {
        if self.accept_armed || self.accept_paused_until.is_some() {
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
        match (e.kind(), classify_accept_error(&e)) {
            (ErrorKind::WouldBlock, _) => trace!("accept: {e}: again"),
            _ if -result == libc::ECANCELED => trace!("accept cancelled"),
            (_, AcceptError::Interrupted) => trace!("accept: {e}: again"),
            (_, AcceptError::ConnectionGone) => debug!("accept: skipped a connection: {e}"),
            (_, AcceptError::OutOfResources | AcceptError::Unexpected) => {
                // The connection is still queued; accepting again at once would fail again.
                self.accept_backoff.pausing(&e, now);
                self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                self.cancel_accept()?;
            }
        }
        self.arm_accept()
    }

    /// Serve a freshly accepted descriptor, or close it at once if we are full.
    fn admit(&mut self, fd: RawFd, now: Instant) -> io::Result<()> {
        // SAFETY: `fd` was just accepted for us and nothing else owns it; the stream closes it.
        let stream = unsafe {
            if self.is_tcp {
                Stream::Tcp(mio::net::TcpStream::from_raw_fd(fd))
            } else {
                Stream::Unix(mio::net::UnixStream::from_raw_fd(fd))
            }
        };
        // Multishot accept returns no address; it costs a `getpeername`, so we ask only when
        // a log line will show it (TCP only: Unix clients are unnamed).
        let full = self.connections.len() >= self.config.max_connections;
        let logged = log::log_enabled!(log::Level::Debug) // here, and in `close` (mod.rs)
            || log::log_enabled!(target: "echoloop::io_uring", log::Level::Debug);
        let peer = if stream.is_tcp() && (full || logged) {
            Peer(stream.sock_ref().peer_addr().ok().and_then(|addr| addr.as_socket()))
        } else {
            Peer(None)
        };
        if full {
            warn!("max-connections {} reached: closing connection from {peer}", self.config.max_connections);
            self.stats.connection_rejected();
            return Ok(()); // dropping the stream closes it
        }
        if let Err(e) = self.socket_options.apply(stream.sock_ref(), stream.is_tcp()) {
            debug!("accept: socket options for {peer} failed, closing: {e}");
            return Ok(());
        }
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let mut conn = Connection::new(stream, peer, self.config.max_pending, now);
        if let Some(timers) = &mut self.idle {
            timers.start(Token(key), now);
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
