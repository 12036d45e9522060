//! What every model is handed to serve: the bound sockets, in the order the addresses were
//! given, each with its real address (for logs and reports) and the counters of what it
//! serves. One process serves them all, as inetd served `echo stream` and `echo dgram`.

use std::sync::Arc;

use crate::addr::ListenAddr;
use crate::net::ListenSocket;
use crate::stats::Stats;

/// One listener of a worker: a stream listener or a UDP socket, where it listens, and its
/// counters (this worker's share of this listener's counts).
#[derive(Debug)]
pub struct Listening {
    /// The socket, in blocking mode (each model sets the mode it needs).
    pub socket: ListenSocket,
    /// Its real bound address, as `listening on` printed it.
    pub addr: ListenAddr,
    /// Where what it serves is counted.
    pub stats: Arc<Stats>,
}
