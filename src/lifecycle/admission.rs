//! Admission: what happens to a connection the moment it is accepted, in every model.
//!
//! At `--max-connections` the connection is accepted and closed at once, counted, and
//! logged through the throttle that keeps a flood of them from flooding the log,
//! rather than left in the kernel's accept queue: there its client would wait for a server
//! that never comes, and a readiness loop would be told "the listener is readable" again and
//! again. Every other connection gets the per-connection socket options (`net::options`),
//! and, in a blocking model, the idle timeout as socket timeouts (see `idle.rs`); a socket
//! that refuses them (most often: the client has reset it already) is closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use socket2::{SockRef, Socket};

use super::idle::set_socket_timeouts;
use crate::config::ServerConfig;
use crate::net::{Peer, SocketOptions};
use crate::stats::{ClientEvent, Stats};

/// The rules a freshly accepted connection passes before it is served.
#[derive(Debug, Clone)]
pub struct Admission {
    /// `--max-connections`: live connections in the whole process, across every worker and
    /// listener (counted by [`Stats::try_open`]).
    max_connections: usize,
    /// SO_SNDBUF, SO_RCVBUF, TCP_NODELAY, inline urgent data.
    options: SocketOptions,
    /// The blocking models' idle timeout (SO_RCVTIMEO / SO_SNDTIMEO); `None` for the loops,
    /// which keep idle deadlines themselves.
    socket_timeout: Option<Duration>,
    /// Where an admitted connection is counted open, and a refused one rejected.
    stats: Arc<Stats>,
    /// `--proxy-protocol`: a connection is served (and counted open) only once its PROXY
    /// header is whole; admitted, it only takes its place under the cap.
    header_first: bool,
}

impl Admission {
    /// The rules of `config`, for a loop (event loop, io-uring), counting refusals in `stats`.
    pub fn new(config: &ServerConfig, stats: Arc<Stats>) -> Admission {
        let options = SocketOptions::from_config(config);
        let header_first = config.proxy_protocol;
        Admission {
            max_connections: config.max_connections,
            options,
            socket_timeout: None,
            stats,
            header_first,
        }
    }

    /// The rules of `config` for a blocking model: the same, and the idle timeout becomes
    /// the socket's timeouts, because a thread asleep in `read` cannot look at a timer.
    pub fn blocking(config: &ServerConfig, stats: Arc<Stats>) -> Admission {
        Admission { socket_timeout: config.idle_timeout, ..Admission::new(config, stats) }
    }

    /// May the connection on `socket` be served? If so, it is counted open (the caller
    /// reports its close with [`Stats::connection_closed`], or [`Admission::not_served`] if
    /// it cannot be served after all); with `--proxy-protocol` it only takes its place under
    /// the cap until its header is whole (`crate::lifecycle::proxy_header`). If not, it has
    /// been logged (and counted if over the cap); the caller drops the socket, which closes
    /// it. `peer` is asked only for a log line (the io-uring model's accept does not return
    /// the peer's address, and looking it up costs a system call).
    pub fn admit(&self, socket: &Socket, tcp: bool, peer: impl FnOnce() -> Peer) -> bool {
        let prepared =
            self.options.apply(SockRef::from(socket), tcp).and_then(|()| match self.socket_timeout {
                Some(timeout) => set_socket_timeouts(socket, timeout),
                None => Ok(()),
            });
        if let Err(e) = prepared {
            debug!("accept: socket options for {} failed, closing: {e}", peer());
            return false;
        }
        let placed = match self.header_first {
            true => self.stats.try_reserve(self.max_connections),
            false => self.stats.try_open(self.max_connections),
        };
        if !placed {
            let max = self.max_connections;
            let detail = || format!("max-connections {max} reached: closing connection from {}", peer());
            self.stats.client_event(ClientEvent::MaxConnections, Instant::now(), detail);
        }
        placed
    }

    /// A connection [`Admission::admit`] let in cannot be served after all (it could not be
    /// registered, or given a thread): free its place, count it as rejected.
    pub fn not_served(&self) {
        match self.header_first {
            true => self.stats.reservation_failed(),
            false => self.stats.open_failed(),
        }
    }
}
