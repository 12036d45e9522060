//! Accepting connections: until `WouldBlock`, admitted as every model admits them
//! (`crate::lifecycle::Admission`: `--max-connections`, socket options), and backing off
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
use super::listeners::Socket;
use crate::lifecycle::ConnId;
use crate::net::{AfterAcceptError, Peer, Stream, would_block};

impl EventLoop {
    /// Listener `i` is readable: accept every queued connection. (Out of descriptors, every
    /// listener pauses: the limit is the process's, not a listener's.)
    pub(super) fn accept_ready(&mut self, i: usize, now: Instant) {
        if self.accept_backoff.is_paused() {
            return; // backing off; the timer resumes us
        }
        loop {
            let Socket::Stream(Some(listener)) = &self.endpoints[i].socket else { return };
            let error = match listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_backoff.accepted(now);
                    self.admit(i, stream, peer, now);
                    continue;
                }
                Err(e) if would_block(&e) => return, // queue empty: drained
                Err(e) => e,
            };
            if self.accept_backoff.failed(&error, now) == AfterAcceptError::Pause {
                // The connection is still queued, so the listener stays readable; the timer
                // in the loop calls us again after the pause.
                return;
            }
            // A signal, or a connection that died in the queue: accept the next one.
        }
    }

    /// Serve a connection freshly accepted on listener `i`, or close it at once if it may
    /// not be served (dropping the stream closes it). `--max-connections` counts the
    /// connections of the whole process (every listener, every worker): see `Admission`.
    fn admit(&mut self, i: usize, mut stream: Stream, peer: Peer, now: Instant) {
        let endpoint = &self.endpoints[i];
        if !endpoint.admission.admit(&stream.sock_ref(), stream.is_tcp(), || peer) {
            return;
        }
        // Key first, register, then insert: if registering fails there is nothing to undo.
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key());
        if let Err(e) = self.poll.registry().register(&mut stream, token, READ) {
            warn!("accept: cannot register {peer}: {e}");
            endpoint.admission.not_served();
            return;
        }
        // A listener's number fits in 16 bits: `EventLoop::new` refuses more listeners.
        let listener = u16::try_from(i).unwrap_or(u16::MAX);
        let (proxy, stamp) = (self.config.proxy_protocol, self.clock.stamp(now));
        entry.insert(Connection::new(stream, listener, proxy, self.cap, stamp));
        if let Some(timers) = &mut self.idle {
            timers.start(ConnId(token.0), now);
        }
        if let Some(timers) = &mut self.header_deadlines {
            // Served (and counted open) once its PROXY header is whole: `EventLoop::header_done`.
            timers.start(ConnId(token.0), now);
            debug!("token={} accepted peer={peer} on {}: awaiting its PROXY header", token.0, endpoint.addr);
        } else {
            let open = self.connections.len();
            debug!("token={} opened peer={peer} on {} (open: {open})", token.0, endpoint.addr);
        }
    }
}
