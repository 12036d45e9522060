//! Accepting connections: until `WouldBlock`, within `--max-connections`, and backing off
//! when the process runs out of file descriptors.
//!
//! The listener is registered edge-triggered like everything else in mio, so one READABLE
//! event may stand for many queued connections: accept until `WouldBlock`. When `accept`
//! fails for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the connection
//! stays in the kernel's queue; retrying at once would fail again and spin the CPU. So we
//! pause accepting for `ACCEPT_BACKOFF` and let the timer in the loop call us again
//! (`crate::net` sorts the errors and keeps the back-off log, for every model).

use std::time::Instant;

use log::{debug, warn};
use mio::Token;

use super::EventLoop;
use super::connection::{Connection, READ};
use crate::net::{ACCEPT_BACKOFF, AcceptError, Peer, Stream, classify_accept_error, would_block};

impl EventLoop {
    /// The listener is readable: accept every queued connection.
    pub(super) fn accept_ready(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() {
            return; // backing off; the timer resumes us
        }
        loop {
            let Some(listener) = &self.listener else { return };
            let error = match listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_backoff.accepted(now);
                    self.admit(stream, peer, now);
                    continue;
                }
                Err(e) if would_block(&e) => return, // queue empty: drained
                Err(e) => e,
            };
            match classify_accept_error(&error) {
                AcceptError::Interrupted => continue, // a signal: retry
                AcceptError::ConnectionGone => debug!("accept: skipped a connection: {error}"),
                AcceptError::OutOfResources | AcceptError::Unexpected => {
                    // The connection is still queued, so the listener stays readable; the
                    // timer in the loop calls us again after the pause.
                    self.accept_backoff.pausing(&error, now);
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
            debug!("accept: socket options for {peer} failed, closing: {e}");
            return;
        }
        // Key first, register, then insert: if registering fails there is nothing to undo.
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key());
        if let Err(e) = self.poll.registry().register(&mut stream, token, READ) {
            warn!("accept: cannot register {peer}: {e}");
            return;
        }
        let (framer, cap) = (self.config.framer(), self.config.connection_cap());
        entry.insert(Connection::new(stream, token, peer, framer, cap, now));
        if let Some(timers) = &mut self.idle {
            timers.start(token, now);
        }
        self.stats.connection_opened();
        debug!("token={} opened peer={peer} (open: {})", token.0, self.connections.len());
    }
}
