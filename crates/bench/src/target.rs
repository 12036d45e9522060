//! The server a load goes to: `HOST:PORT`, `[V6]:PORT`, a bare `PORT` (127.0.0.1),
//! `localhost:PORT`, `unix:PATH`, or any TCP form after `udp:` for an RFC 862 UDP echo
//! service.
//!
//! The bench knows nothing of the server it loads, so it has its own address type. It is
//! smaller than a server's listening address: a target is only ever connected to, so port 0
//! (which only means something to `bind`) is refused here, and [`Target::is_local`] carries
//! the rule that load goes to this machine only.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// The default target of `echoloop bench`: where `echoloop serve` listens by default.
pub const DEFAULT_TARGET: &str = "127.0.0.1:7878";

/// What a server serves: streams (TCP, or a Unix socket) or datagrams (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// A byte stream: TCP.
    #[default]
    Stream,
    /// RFC 862 over UDP.
    Datagram,
}

/// An echo server to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP server.
    Tcp(SocketAddr),
    /// A Unix domain stream socket.
    Unix(PathBuf),
    /// A UDP echo service (datagrams, not a stream).
    Udp(SocketAddr),
}

impl Target {
    /// Loopback or a Unix socket: a target the load generator may put load on.
    pub fn is_local(&self) -> bool {
        match self {
            Target::Tcp(addr) | Target::Udp(addr) => addr.ip().is_loopback(),
            Target::Unix(_) => true,
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let invalid = |why: &str| format!("invalid target '{s}': {why}");
        if let Some(path) = s.strip_prefix("unix:") {
            return match path {
                "" => Err(invalid("unix: needs a path, as in unix:/tmp/echo.sock")),
                _ => Ok(Target::Unix(PathBuf::from(path))),
            };
        }
        let (udp, rest) = match s.strip_prefix("udp:") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let expected = "expected HOST:PORT, [V6]:PORT, PORT, unix:PATH or udp:HOST:PORT";
        let addr = tcp_addr(rest).ok_or_else(|| invalid(expected))?;
        match addr.port() {
            0 => Err(invalid("port 0 cannot be connected to")),
            _ if udp => Ok(Target::Udp(addr)),
            _ => Ok(Target::Tcp(addr)),
        }
    }
}

/// The TCP forms: a bare port and `localhost:PORT` mean 127.0.0.1; otherwise an IP
/// address (IPv6 in brackets) and a port. No other name is resolved: a benchmark's target
/// should not depend on DNS.
fn tcp_addr(s: &str) -> Option<SocketAddr> {
    let loopback = |port: &str| port.parse::<u16>().ok().map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
    match s.split_once(':') {
        None => loopback(s),
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => loopback(port),
        Some(_) => s.parse().ok(),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Udp(addr) => write!(f, "udp:{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Target, String> {
        s.parse()
    }

    fn tcp(s: &str) -> Target {
        Target::Tcp(s.parse().unwrap())
    }

    #[test]
    fn every_tcp_form_parses() {
        assert_eq!(parse("127.0.0.1:7878"), Ok(tcp("127.0.0.1:7878")));
        assert_eq!(parse("[::1]:9000"), Ok(tcp("[::1]:9000")));
        assert_eq!(parse("7878"), Ok(tcp("127.0.0.1:7878")));
        assert_eq!(parse("localhost:80"), Ok(tcp("127.0.0.1:80")));
        assert_eq!(parse("LocalHost:80"), Ok(tcp("127.0.0.1:80")));
        assert_eq!(parse(DEFAULT_TARGET), Ok(tcp("127.0.0.1:7878")));
    }

    #[test]
    fn udp_targets_take_every_tcp_form() {
        let udp = |s: &str| Target::Udp(s.parse().unwrap());
        assert_eq!(parse("udp:127.0.0.1:7"), Ok(udp("127.0.0.1:7")));
        assert_eq!(parse("udp:[::1]:9000"), Ok(udp("[::1]:9000")));
        assert_eq!(parse("udp:7878"), Ok(udp("127.0.0.1:7878")));
        assert_eq!(udp("[::1]:9000").to_string(), "udp:[::1]:9000");
        assert!(udp("[::1]:9000").is_local() && !udp("192.0.2.1:7").is_local());
        assert!(parse("udp:").is_err() && parse("udp:0").is_err());
    }

    #[test]
    fn unix_paths_parse_and_print_back() {
        let target = parse("unix:/tmp/x.sock").unwrap();
        assert_eq!(target, Target::Unix("/tmp/x.sock".into()));
        assert_eq!(target.to_string(), "unix:/tmp/x.sock");
        assert_eq!(tcp("[::1]:9000").to_string(), "[::1]:9000");
    }

    #[test]
    fn malformed_targets_say_why() {
        for (input, why) in [
            ("unix:", "needs a path"),
            ("7878x", "expected HOST:PORT"),
            ("70000", "expected HOST:PORT"),
            ("::1:80", "expected HOST:PORT"),
            ("example.com:80", "expected HOST:PORT"),
            ("localhost:", "expected HOST:PORT"),
            ("", "expected HOST:PORT"),
            ("0", "port 0"),
            ("127.0.0.1:0", "port 0"),
        ] {
            let error = parse(input).unwrap_err();
            assert!(error.contains(&format!("'{input}'")) && error.contains(why), "{input}: {error}");
        }
    }

    #[test]
    fn only_this_machine_is_local() {
        assert!(tcp("127.0.0.1:1").is_local());
        assert!(tcp("[::1]:1").is_local());
        assert!(Target::Unix("/tmp/x".into()).is_local());
        assert!(!tcp("192.0.2.1:1").is_local());
        assert!(!tcp("0.0.0.0:1").is_local());
    }
}
