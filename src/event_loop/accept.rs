//! Accepting connections: until `WouldBlock`, within `--max-connections`, and backing off
//! when the process runs out of file descriptors.
//!
//! The listener is registered edge-triggered like everything else in mio, so one READABLE
//! event may stand for many queued connections: accept until `WouldBlock`. When `accept`
//! fails for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the connection
//! stays in the kernel's queue; retrying at once would fail again and spin the CPU. So we
//! pause accepting for [`ACCEPT_BACKOFF`] and let the timer in the loop call us again.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::Token;

use super::EventLoop;
use super::connection::Connection;
use super::connection::READ;
use crate::net::{Peer, Stream};

/// How long accepting pauses after running out of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Errors that mean "the system is out of something; the connection is still queued".
pub(crate) fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Errors that concern only the connection being accepted, which is gone: skip it.
pub(crate) fn connection_gone(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset)
        || e.raw_os_error() == Some(libc::EPROTO)
}

impl EventLoop {
    /// The listener is readable: accept every queued connection.
    pub(super) fn accept_ready(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() {
            return; // backing off; the timer resumes us
        }
        loop {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return, // queue empty
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: retry
                Err(e) if connection_gone(&e) => debug!("accept: skipped a connection: {e}"),
                Err(e) => {
                    let what = if out_of_resources(&e) { "out of resources" } else { "unexpected error" };
                    warn!("accept: {e} ({what}): pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Serve a freshly accepted connection, or close it at once if we are full.
    fn admit(&mut self, mut stream: Stream, peer: Peer, now: Instant) {
        if self.connections.len() >= self.config.max_connections {
            warn!("max-connections {} reached: closing connection from {peer}", self.config.max_connections);
            self.stats.connection_rejected();
            return; // dropping the stream closes it
        }
        if let Err(e) = self.socket_options.apply(stream.sock_ref(), stream.is_tcp()) {
            return debug!("accept: socket options for {peer} failed, closing: {e}");
        }
        // Key first, register, then insert: if registering fails there is nothing to undo.
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key());
        if let Err(e) = self.poll.registry().register(&mut stream, token, READ) {
            return warn!("accept: cannot register {peer}: {e}");
        }
        let mut conn = Connection::new(stream, token, peer, self.config.max_pending, now);
        if let Some((timeout, timers)) = &mut self.idle {
            conn.idle_deadline = Some(now + *timeout);
            timers.schedule(token, now + *timeout);
        }
        entry.insert(conn);
        self.stats.connection_opened();
        debug!("token={} opened peer={peer} (open: {})", token.0, self.connections.len());
    }
}
