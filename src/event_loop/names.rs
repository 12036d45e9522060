//! How the trace names what the loop sees, so a student can follow one connection through
//! `RUST_LOG=echoloop=trace`: a connection is always `token=N` (its token, which is its slab
//! key), the reserved tokens go by their role (`WAKER`, and `LISTENER` with the address it
//! listens on) rather than as 18446744073709551614, and an event lists the readiness it
//! reports in words.
//!
//! Each name is a small `Display` value built inside the `trace!` call, so a disabled
//! trace formats nothing.

use std::fmt;

use mio::Token;
use mio::event::Event;

use super::listeners::{Endpoint, Source};

/// `token` as the trace names it, in a loop with these listeners: `WAKER`,
/// `LISTENER 127.0.0.1:7878` (a listener by its address), or `token=N` for a connection.
pub(super) fn token_name(token: Token, endpoints: &[Endpoint]) -> impl fmt::Display + '_ {
    TokenName { token, endpoints }
}

struct TokenName<'a> {
    token: Token,
    endpoints: &'a [Endpoint],
}

impl fmt::Display for TokenName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Source::of(self.token, self.endpoints.len()) {
            Source::Waker => f.write_str("WAKER"),
            Source::Listener(i) => write!(f, "LISTENER {}", self.endpoints[i].addr),
            Source::Connection(Token(key)) => write!(f, "token={key}"),
        }
    }
}

/// What `event` reports, as words: `readable, read-closed`. Flags are hints (the loop
/// learns the truth from `read` and `write`), so this says what the kernel said, nothing more.
pub(super) fn readiness(event: &Event) -> impl fmt::Display + '_ {
    Readiness(event)
}

struct Readiness<'a>(&'a Event);

impl fmt::Display for Readiness<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        let flags = [
            (e.is_readable(), "readable"),
            (e.is_writable(), "writable"),
            (e.is_read_closed(), "read-closed"),
            (e.is_write_closed(), "write-closed"),
            (e.is_error(), "error"),
            (e.is_priority(), "priority"),
        ];
        let mut set = flags.iter().filter(|(on, _)| *on).map(|(_, name)| name);
        match set.next() {
            None => f.write_str("nothing"),
            Some(first) => {
                f.write_str(first)?;
                set.try_for_each(|name| write!(f, ", {name}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::ListenAddr;
    use crate::config::ServerConfig;
    use crate::event_loop::listeners::{WAKER, listener_token};
    use crate::listening::Listening;
    use crate::net::{ListenSocket, StdListener};

    #[test]
    fn reserved_tokens_go_by_their_role_and_connections_by_their_token() {
        let poll = mio::Poll::new().unwrap();
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let listening = Listening {
            socket: ListenSocket::Stream(StdListener::Tcp(socket)),
            addr: ListenAddr::Tcp(addr),
            stats: Default::default(),
        };
        let config = ServerConfig::default();
        let endpoints = [Endpoint::new(listening, 0, &config, poll.registry()).unwrap()];
        assert_eq!(token_name(listener_token(0), &endpoints).to_string(), format!("LISTENER {addr}"));
        assert_eq!(token_name(WAKER, &endpoints).to_string(), "WAKER");
        assert_eq!(token_name(Token(7), &endpoints).to_string(), "token=7");
    }

    #[test]
    fn an_event_lists_the_readiness_it_reports() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), WAKER).unwrap();
        waker.wake().unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(5))).unwrap();
        let event = events.iter().next().expect("the waker's event");
        assert_eq!(format!("{} {}", token_name(event.token(), &[]), readiness(event)), "WAKER readable");
    }
}
