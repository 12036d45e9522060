//! The loop's listening sockets: stream listeners it accepts connections on, and UDP
//! sockets it answers datagrams on, side by side in one `mio::Poll`.
//!
//! Every socket needs a token of its own. Connections take slab keys, counting up from 0;
//! the waker takes the top of the range, and the listeners the tokens just below it,
//! counting down: listener 0 is `usize::MAX - 1`. The two ranges cannot meet (a slab of
//! 2^63 connections does not fit in memory), so a token says by itself what it stands for
//! ([`Source::of`]), and `dispatch` sends each event to the one place that handles it.

use std::io;
use std::sync::Arc;

use mio::{Interest, Registry, Token};

use super::udp::UdpPort;
use crate::addr::ListenAddr;
use crate::config::ServerConfig;
use crate::lifecycle::Admission;
use crate::listening::Listening;
use crate::net::{ListenSocket, Listener};
use crate::stats::{IoTally, Stats};

/// The token of the `mio::Waker` that a shutdown request fires.
pub const WAKER: Token = Token(usize::MAX);

/// Listener `i`'s token: counting down from just below the waker's.
pub fn listener_token(i: usize) -> Token {
    Token(usize::MAX - 1 - i)
}

/// What an event's token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The waker: a stop was requested.
    Waker,
    /// Listener `i` (of `listeners`): a stream listener or a UDP socket.
    Listener(usize),
    /// A connection: its slab key is the token.
    Connection(Token),
}

impl Source {
    /// What `token` stands for, in a loop with `listeners` listeners.
    pub fn of(token: Token, listeners: usize) -> Source {
        match usize::MAX - token.0 {
            0 => Source::Waker,
            below if below <= listeners => Source::Listener(below - 1),
            _ => Source::Connection(token),
        }
    }
}

/// One listening socket of the loop, where it listens, and what it has done this turn.
pub struct Endpoint {
    /// The socket itself.
    pub socket: Socket,
    /// Its address, for the logs.
    pub addr: ListenAddr,
    /// Its counters (this worker's share).
    pub stats: Arc<Stats>,
    /// This turn's reads and writes on it (its connections' or its datagrams'), published
    /// to `stats` once per turn.
    pub tally: IoTally,
    /// `--max-connections` and the socket options, refusals counted in `stats`.
    pub admission: Admission,
}

/// A stream listener or a UDP socket.
pub enum Socket {
    /// Accepts connections; `None` once shutting down (closed: no more are taken).
    Stream(Option<Listener>),
    /// Answers datagrams.
    Datagram(UdpPort),
}

impl Endpoint {
    /// Make `listening`'s socket non-blocking and register it as listener `i`.
    pub fn new(
        listening: Listening,
        i: usize,
        config: &ServerConfig,
        registry: &Registry,
    ) -> io::Result<Endpoint> {
        let token = listener_token(i);
        let socket = match listening.socket {
            ListenSocket::Stream(listener) => {
                let mut listener = listener.into_mio()?;
                registry.register(&mut listener, token, Interest::READABLE)?;
                Socket::Stream(Some(listener))
            }
            ListenSocket::Datagram(socket) => {
                Socket::Datagram(UdpPort::new(socket, config, registry, token)?)
            }
        };
        Ok(Endpoint {
            socket,
            addr: listening.addr,
            admission: Admission::new(config, Arc::clone(&listening.stats)),
            stats: listening.stats,
            tally: IoTally::default(),
        })
    }

    /// Add this turn's counts to the shared counters: a few relaxed atomic adds per turn
    /// (none when nothing moved), however many reads and writes the turn made.
    pub fn publish(&mut self) {
        self.stats.publish(&mut self.tally);
        if let Socket::Datagram(port) = &mut self.socket {
            port.publish(&self.stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_says_what_it_stands_for() {
        assert_eq!(Source::of(WAKER, 3), Source::Waker);
        assert_eq!(Source::of(listener_token(0), 3), Source::Listener(0));
        assert_eq!(Source::of(listener_token(2), 3), Source::Listener(2));
        assert_eq!(Source::of(listener_token(3), 3), Source::Connection(listener_token(3)));
        assert_eq!(Source::of(Token(0), 3), Source::Connection(Token(0)));
        assert_eq!(Source::of(Token(12_345), 1), Source::Connection(Token(12_345)));
    }
}
