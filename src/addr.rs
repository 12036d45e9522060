//! Listening addresses: what a user may type after `echoloop serve`.
//!
//! Parsing is kept apart from binding so that every accepted form is unit-tested without
//! touching the network, and so that an address that cannot even be parsed gets its own
//! clear error before any socket exists.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a server listens: a TCP socket address or a Unix domain stream socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT`, `[V6]:PORT`, or a bare `PORT` (which means `127.0.0.1:PORT`).
    Tcp(SocketAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
}

/// The default address of `echoloop serve`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrParseError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid address '{}': {}", self.input, self.reason)
    }
}

impl std::error::Error for AddrParseError {}

impl FromStr for ListenAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason| AddrParseError { input: s.to_string(), reason };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(error("unix: needs a path, as in unix:/tmp/echo.sock"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let port = s.parse::<u16>().map_err(|_| error("port must be 0..=65535"))?;
            return Ok(ListenAddr::Tcp(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::Tcp(addr));
        }
        parse_named_host(s).map_err(error)
    }
}

/// `localhost:PORT` is the one host name we accept: resolving arbitrary names would make
/// the listening address depend on DNS, which an echo server for tests should not.
fn parse_named_host(s: &str) -> Result<ListenAddr, &'static str> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected HOST:PORT, [V6]:PORT, PORT or unix:PATH");
    };
    let port = port.parse::<u16>().map_err(|_| "port must be a number in 0..=65535")?;
    if host.eq_ignore_ascii_case("localhost") {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        return Ok(ListenAddr::Tcp(SocketAddr::new(ip, port)));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err("an IPv6 address needs brackets, as in [::1]:7878");
    }
    Err("host must be an IP address or localhost")
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> SocketAddr {
        match s.parse::<ListenAddr>() {
            Ok(ListenAddr::Tcp(addr)) => addr,
            other => panic!("{s} parsed as {other:?}"),
        }
    }

    fn reason(s: &str) -> String {
        s.parse::<ListenAddr>().unwrap_err().to_string()
    }

    #[test]
    fn host_and_port() {
        assert_eq!(tcp("127.0.0.1:7878"), "127.0.0.1:7878".parse().unwrap());
        assert_eq!(tcp("0.0.0.0:0"), "0.0.0.0:0".parse().unwrap());
    }

    #[test]
    fn bracketed_ipv6() {
        assert_eq!(tcp("[::1]:9000"), "[::1]:9000".parse().unwrap());
        assert_eq!(tcp("[::]:0"), "[::]:0".parse().unwrap());
    }

    #[test]
    fn bare_port_means_loopback() {
        assert_eq!(tcp("7878"), "127.0.0.1:7878".parse().unwrap());
        assert_eq!(tcp("0"), "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn localhost_is_loopback() {
        assert_eq!(tcp("localhost:80"), "127.0.0.1:80".parse().unwrap());
    }

    #[test]
    fn unix_path() {
        let addr: ListenAddr = "unix:/tmp/x.sock".parse().unwrap();
        assert_eq!(addr, ListenAddr::Unix("/tmp/x.sock".into()));
        assert_eq!(addr.to_string(), "unix:/tmp/x.sock");
    }

    #[test]
    fn display_round_trips() {
        for s in ["127.0.0.1:1", "[::1]:2", "unix:rel/path.sock"] {
            assert_eq!(s.parse::<ListenAddr>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        assert!(reason("").contains("expected HOST:PORT"));
        assert!(reason("unix:").contains("needs a path"));
        assert!(reason("70000").contains("0..=65535"));
        assert!(reason("127.0.0.1:99999").contains("port"));
        assert!(reason("::1:80").contains("brackets"));
        assert!(reason("example.com:80").contains("IP address or localhost"));
        assert!(reason("127.0.0.1").contains("expected HOST:PORT"));
        assert!(reason("1.2.3.4:x").contains("port"));
    }
}
