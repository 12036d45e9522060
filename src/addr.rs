//! Listening addresses: what a user may type after `echoloop serve`.
//!
//! Parsing is kept apart from binding so that every accepted form is unit-tested without
//! touching the network, and so that an address that cannot even be parsed gets its own
//! clear error before any socket exists.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a server listens: a TCP socket address, a Unix domain stream socket path, or a UDP
/// socket address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT`, `[V6]:PORT`, or a bare `PORT` (which means `127.0.0.1:PORT`).
    Tcp(SocketAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `udp:HOST:PORT`, `udp:[V6]:PORT`, or `udp:PORT` (which means `udp:127.0.0.1:PORT`):
    /// datagrams, not a stream (RFC 862's UDP echo).
    Udp(SocketAddr),
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
        if let Some(rest) = s.strip_prefix("udp:") {
            return parse_socket_addr(rest).map(ListenAddr::Udp).map_err(error);
        }
        parse_socket_addr(s).map(ListenAddr::Tcp).map_err(error)
    }
}

/// `HOST:PORT`, `[V6]:PORT` or a bare `PORT` (on 127.0.0.1), for TCP and UDP alike.
fn parse_socket_addr(s: &str) -> Result<SocketAddr, &'static str> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let port = s.parse::<u16>().map_err(|_| "port must be 0..=65535")?;
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    parse_named_host(s)
}

/// `localhost:PORT` is the one host name we accept: resolving arbitrary names would make
/// the listening address depend on DNS, which an echo server for tests should not.
fn parse_named_host(s: &str) -> Result<SocketAddr, &'static str> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected HOST:PORT, [V6]:PORT, PORT, unix:PATH or udp:HOST:PORT");
    };
    let port = port.parse::<u16>().map_err(|_| "port must be a number in 0..=65535")?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    // `tcp:127.0.0.1:7` was told "an IPv6 address needs brackets".
    let prefix = host.split(':').next().unwrap_or_default();
    let scheme_like = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_alphabetic());
    if host.contains(':') && scheme_like && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err("unknown prefix: the only prefixes are unix: and udp: (TCP takes HOST:PORT)");
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err("an IPv6 address needs brackets, as in [::1]:7878");
    }
    Err("host must be an IP address or localhost")
}

impl ListenAddr {
    /// Port 0: the OS picks a free port, a different one at each bind.
    fn is_any_port(&self) -> bool {
        match self {
            ListenAddr::Tcp(addr) | ListenAddr::Udp(addr) => addr.port() == 0,
            ListenAddr::Unix(_) => false,
        }
    }
}

/// The first address in `addrs` that an earlier one already names: the same socket asked
/// for twice, which the second bind would refuse (or, for a Unix path, take over). Port 0
/// asks for a fresh port each time, so `127.0.0.1:0` twice is two listeners; and TCP and
/// UDP on one port are two services (`7` and `udp:7`), as inetd's echo was.
pub fn first_repeated(addrs: &[ListenAddr]) -> Option<&ListenAddr> {
    addrs
        .iter()
        .enumerate()
        .find(|&(i, addr)| !addr.is_any_port() && addrs[..i].contains(addr))
        .map(|(_, a)| a)
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenAddr::Udp(addr) => write!(f, "udp:{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `tcp:127.0.0.1:7` (a prefix we do not have) was answered "an IPv6
    /// address needs brackets"; an unbracketed IPv6 address still gets that answer.
    #[test]
    fn an_unknown_prefix_is_named_as_such() {
        for input in ["tcp:127.0.0.1:7", "http:localhost:80", "tcp:[::1]:7"] {
            let e = input.parse::<ListenAddr>().unwrap_err().to_string();
            assert!(e.contains("unknown prefix"), "{input}: {e}");
        }
        for input in ["::1:7", "dead::beef:7", "fe80::1:7"] {
            let e = input.parse::<ListenAddr>().unwrap_err().to_string();
            assert!(e.contains("needs brackets"), "{input}: {e}");
        }
    }

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

    fn udp(s: &str) -> SocketAddr {
        match s.parse::<ListenAddr>() {
            Ok(ListenAddr::Udp(addr)) => addr,
            other => panic!("{s} parsed as {other:?}"),
        }
    }

    #[test]
    fn udp_addresses_take_every_tcp_form() {
        assert_eq!(udp("udp:127.0.0.1:7"), "127.0.0.1:7".parse().unwrap());
        assert_eq!(udp("udp:[::1]:9000"), "[::1]:9000".parse().unwrap());
        assert_eq!(udp("udp:7878"), "127.0.0.1:7878".parse().unwrap());
        assert_eq!(udp("udp:0"), "127.0.0.1:0".parse().unwrap());
        assert_eq!(udp("udp:localhost:53"), "127.0.0.1:53".parse().unwrap());
        assert_eq!("udp:[::]:1".parse::<ListenAddr>().unwrap().to_string(), "udp:[::]:1");
    }

    #[test]
    fn bad_udp_addresses_say_why() {
        assert!(reason("udp:").contains("expected HOST:PORT"));
        assert!(reason("udp:70000").contains("0..=65535"));
        assert!(reason("udp:::1:80").contains("brackets"));
        assert!(reason("udp:example.com:7").contains("IP address or localhost"));
        assert!(reason("udp:unix:/tmp/x").contains("port"));
    }

    #[test]
    fn display_round_trips() {
        for s in ["127.0.0.1:1", "[::1]:2", "unix:rel/path.sock", "udp:127.0.0.1:3", "udp:[::1]:4"] {
            assert_eq!(s.parse::<ListenAddr>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn the_same_address_twice_is_found() {
        let addrs = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect::<Vec<ListenAddr>>();
        let repeated = |list: &[&str]| first_repeated(&addrs(list)).map(ToString::to_string);
        assert_eq!(repeated(&["7007", "udp:7007", "unix:/tmp/e.sock", "[::1]:7007"]), None);
        assert_eq!(repeated(&["127.0.0.1:0", "127.0.0.1:0", "udp:0", "udp:0"]), None, "port 0: fresh ports");
        assert_eq!(repeated(&["7007", "udp:7", "127.0.0.1:7007"]).as_deref(), Some("127.0.0.1:7007"));
        assert_eq!(repeated(&["udp:localhost:9", "udp:127.0.0.1:9"]).as_deref(), Some("udp:127.0.0.1:9"));
        assert_eq!(repeated(&["unix:a.sock", "1", "unix:a.sock"]).as_deref(), Some("unix:a.sock"));
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
