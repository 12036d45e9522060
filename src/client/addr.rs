//! The server `echoloop client` talks to: any address `serve` takes ([`ListenAddr`]), or a
//! host name and port, resolved when connecting (`echo.example:7`, `udp:echo.example:7`).
//!
//! A server's listening address never resolves names (it should not depend on DNS); a
//! client's target has to, or it could only reach IP addresses. A name that resolves to
//! several addresses is tried address by address, in the resolver's order, as `nc` does.
//! A failure is one line naming the address as typed, and saying what happened: name not
//! found, refused, unreachable, or timed out after `--connect-timeout`.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use crate::addr::{AddrParseError, ListenAddr};
use crate::net::{self, BlockingStream};

/// Where `echoloop client` connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// An IP address and port, `unix:PATH`, or `udp:` with an IP address: as `serve` takes them.
    Known(ListenAddr),
    /// `NAME:PORT`, or `udp:NAME:PORT`: resolved when connecting.
    Named {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
        /// A UDP echo service, not a stream.
        udp: bool,
    },
}

impl FromStr for ServerAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<ServerAddr, AddrParseError> {
        let listen_error = match s.parse::<ListenAddr>() {
            Ok(addr) => return Ok(ServerAddr::Known(addr)),
            Err(e) => e,
        };
        let (udp, rest) = s.strip_prefix("udp:").map_or((false, s), |rest| (true, rest));
        match rest.rsplit_once(':') {
            Some((host, port)) if is_host_name(host) => match port.parse::<u16>() {
                Ok(port) => Ok(ServerAddr::Named { host: host.to_string(), port, udp }),
                Err(_) => Err(listen_error),
            },
            _ => Err(listen_error),
        }
    }
}

/// Letters, digits, `-`, `_` and dots, in labels of 1 to 63 characters; not an IPv4
/// address's digits and dots (a mistyped one should say so, not be looked up).
fn is_host_name(host: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    host.len() <= 253
        && host.trim_end_matches('.').split('.').all(label)
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Known(addr) => write!(f, "{addr}"),
            ServerAddr::Named { host, port, udp: true } => write!(f, "udp:{host}:{port}"),
            ServerAddr::Named { host, port, udp: false } => write!(f, "{host}:{port}"),
        }
    }
}

impl ServerAddr {
    /// The UDP service's address, resolved (the first the resolver gives); `None` for a
    /// stream address.
    pub fn udp(&self) -> Option<io::Result<SocketAddr>> {
        match self {
            ServerAddr::Known(ListenAddr::Udp(addr)) => Some(Ok(*addr)),
            ServerAddr::Named { host, port, udp: true } => Some(self.resolve(host, *port).map(|all| all[0])),
            _ => None,
        }
    }

    /// Connect a stream: each address a name stands for in turn, each connect bounded by
    /// `timeout`, until one accepts.
    pub fn connect(&self, timeout: Duration) -> io::Result<BlockingStream> {
        let candidates = match self {
            ServerAddr::Known(addr) => vec![addr.clone()],
            ServerAddr::Named { host, port, .. } => {
                self.resolve(host, *port)?.into_iter().map(ListenAddr::Tcp).collect()
            }
        };
        let mut first_failure = None;
        for candidate in &candidates {
            match net::connect(candidate, timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    first_failure.get_or_insert(e);
                }
            }
        }
        let e = first_failure.unwrap_or_else(|| io::Error::other("no address to try"));
        Err(io::Error::new(e.kind(), format!("cannot connect to {self}: {}", failure(&e, timeout))))
    }

    /// Every address `host` stands for; "name not found" in one line if none.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let not_found = |why: String| {
            io::Error::new(ErrorKind::NotFound, format!("cannot connect to {self}: name not found ({why})"))
        };
        let found: Vec<SocketAddr> =
            (host, port).to_socket_addrs().map_err(|e| not_found(e.to_string()))?.collect();
        if found.is_empty() {
            return Err(not_found("the resolver returned no address".into()));
        }
        Ok(found)
    }
}

/// What a failed connect means: refused, unreachable, timed out; otherwise the system's
/// own words (which `net::connect` has already put after the address it tried).
fn failure(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => {
            "refused: nothing listens there, or a firewall rejects the connection".into()
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable: no route to it".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("timed out after --connect-timeout {}s: no answer", timeout.as_secs_f64())
        }
        ErrorKind::NotFound => "no such socket file".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(host: &str, port: u16, udp: bool) -> ServerAddr {
        ServerAddr::Named { host: host.into(), port, udp }
    }

    #[test]
    fn addresses_serve_takes_are_kept_and_names_are_named() {
        assert_eq!("127.0.0.1:7".parse(), Ok(ServerAddr::Known("127.0.0.1:7".parse().unwrap())));
        assert_eq!("unix:/tmp/e.sock".parse::<ServerAddr>().unwrap().to_string(), "unix:/tmp/e.sock");
        assert_eq!("echo.example:7".parse(), Ok(named("echo.example", 7, false)));
        assert_eq!("udp:echo.example:7".parse(), Ok(named("echo.example", 7, true)));
        assert_eq!(named("h", 9, true).to_string(), "udp:h:9");
        for bad in ["1.2.3:7", "bad host:7", "host:port", "::1:80", "host:70000"] {
            assert!(bad.parse::<ServerAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_say_what_happened() {
        let t = Duration::from_secs(2);
        assert!(failure(&ErrorKind::ConnectionRefused.into(), t).starts_with("refused"));
        assert!(failure(&ErrorKind::HostUnreachable.into(), t).starts_with("unreachable"));
        assert!(failure(&ErrorKind::NetworkUnreachable.into(), t).starts_with("unreachable"));
        assert_eq!(
            failure(&ErrorKind::TimedOut.into(), t),
            "timed out after --connect-timeout 2s: no answer"
        );
    }

    #[test]
    fn a_refused_connection_is_one_line_naming_the_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: ServerAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let error = addr.connect(Duration::from_secs(2)).err().unwrap().to_string();
        let want = format!(
            "cannot connect to 127.0.0.1:{port}: refused: nothing listens there, or a firewall rejects"
        );
        assert!(error.starts_with(&want), "{error}");
    }
}
