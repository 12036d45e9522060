//! The server a load goes to. [`Address`] is what the user typed: `HOST:PORT`,
//! `[V6]:PORT`, a bare `PORT` (127.0.0.1), a host name and port, `unix:PATH`, or any of the
//! TCP forms after `udp:` for an RFC 862 UDP echo service. [`Target`] is where the
//! connections go once a name is resolved.
//!
//! The bench knows nothing of the server it loads, so it has its own address types. They
//! are smaller than a server's listening address: a target is only ever connected to, so
//! port 0 (which only means something to `bind`) is refused here. Any host is accepted: a
//! load generator that could only load its own machine would be a lab instrument. A name
//! is resolved once, before the first connection (a thousand connections must not mean a
//! thousand lookups), and all the connections of a run go to the same address.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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

/// An echo server's address as the user gave it, host names unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP server.
    Tcp(HostPort),
    /// A Unix domain stream socket.
    Unix(PathBuf),
    /// A UDP echo service.
    Udp(HostPort),
}

/// A host (an IP address or a name) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// An IP address, or a name to resolve.
    pub host: Host,
    /// Never 0.
    pub port: u16,
}

/// The host part of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP address, used as it is.
    Ip(IpAddr),
    /// A name, resolved by the system's resolver (`/etc/hosts`, DNS).
    Name(String),
}

/// An echo server to connect to: an address resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP server.
    Tcp(SocketAddr),
    /// A Unix domain stream socket.
    Unix(PathBuf),
    /// A UDP echo service (datagrams, not a stream).
    Udp(SocketAddr),
}

impl Address {
    /// The host name, when the address has one to resolve.
    pub fn name(&self) -> Option<&str> {
        match self {
            Address::Tcp(HostPort { host: Host::Name(name), .. })
            | Address::Udp(HostPort { host: Host::Name(name), .. }) => Some(name),
            _ => None,
        }
    }

    /// Where to connect. A name that resolves to several addresses (`localhost` to `::1`
    /// and `127.0.0.1`, say) is tried address by address, in the resolver's order, with
    /// one plain TCP connect each (closed at once): the first that accepts is the target.
    /// A UDP name takes the first address. Errors are one line naming the address and
    /// saying what happened: name not found, refused, unreachable, timed out.
    pub fn resolve(&self, timeout: Duration) -> io::Result<Target> {
        match self {
            Address::Unix(path) => Ok(Target::Unix(path.clone())),
            Address::Tcp(hp) => match hp.candidates(self)?.as_slice() {
                [one] => Ok(Target::Tcp(*one)),
                several => first_accepting(self, several, timeout).map(Target::Tcp),
            },
            Address::Udp(hp) => Ok(Target::Udp(hp.candidates(self)?[0])),
        }
    }
}

impl HostPort {
    /// The socket addresses the host stands for: itself, or what its name resolves to.
    fn candidates(&self, whole: &Address) -> io::Result<Vec<SocketAddr>> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        let not_found = |why: String| {
            io::Error::new(ErrorKind::NotFound, format!("cannot connect to {whole}: name not found ({why})"))
        };
        let found: Vec<SocketAddr> =
            (name.as_str(), self.port).to_socket_addrs().map_err(|e| not_found(e.to_string()))?.collect();
        if found.is_empty() {
            return Err(not_found("the resolver returned no address".into()));
        }
        Ok(found)
    }
}

/// The first of `addrs` that accepts a TCP connection within `timeout`; or the failure of
/// the first, with every address tried named.
fn first_accepting(whole: &Address, addrs: &[SocketAddr], timeout: Duration) -> io::Result<SocketAddr> {
    let mut first_failure = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(_) => return Ok(*addr), // the probe closes here; the run opens its own
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    let tried: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    let e = first_failure.unwrap_or_else(|| io::Error::other("no address to try"));
    let what = crate::stream::failure(&e, timeout);
    Err(io::Error::new(e.kind(), format!("cannot connect to {whole} (tried {}): {what}", tried.join(", "))))
}

impl FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Address, String> {
        let invalid = |why: &str| format!("invalid target '{s}': {why}");
        if let Some(path) = s.strip_prefix("unix:") {
            return match path {
                "" => Err(invalid("unix: needs a path, as in unix:/tmp/echo.sock")),
                _ => Ok(Address::Unix(PathBuf::from(path))),
            };
        }
        let (udp, rest) = match s.strip_prefix("udp:") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let hp = host_port(rest).map_err(invalid)?;
        if hp.port == 0 {
            return Err(invalid("port 0 cannot be connected to"));
        }
        Ok(if udp { Address::Udp(hp) } else { Address::Tcp(hp) })
    }
}

/// The forms a host and port take: a bare port (127.0.0.1), `IPv4:PORT`, `[IPv6]:PORT`,
/// `NAME:PORT`.
fn host_port(s: &str) -> Result<HostPort, &'static str> {
    const EXPECTED: &str = "expected HOST:PORT, [V6]:PORT, PORT, unix:PATH or udp:HOST:PORT";
    if let Ok(port) = s.parse::<u16>() {
        return Ok(HostPort { host: Host::Ip(Ipv4Addr::LOCALHOST.into()), port });
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(HostPort { host: Host::Ip(addr.ip()), port: addr.port() });
    }
    let (host, port) = s.rsplit_once(':').ok_or(EXPECTED)?;
    let port = port.parse::<u16>().map_err(|_| EXPECTED)?;
    if host.contains(':') || host.starts_with('[') {
        return Err("an IPv6 address goes in brackets, as in [::1]:7878");
    }
    if host.parse::<Ipv4Addr>().is_err() && is_host_name(host) {
        return Ok(HostPort { host: Host::Name(host.to_string()), port });
    }
    Err(EXPECTED)
}

/// Letters, digits, `-`, `_` and dots, in labels of 1 to 63 characters (RFC 1123, plus the
/// underscore some private names use); not all digits, which would be a mistyped IPv4.
fn is_host_name(host: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    host.len() <= 253
        && host.trim_end_matches('.').split('.').all(label_ok)
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(hp) => write!(f, "{hp}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Udp(hp) => write!(f, "udp:{hp}"),
        }
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

    fn parse(s: &str) -> Result<Address, String> {
        s.parse()
    }

    fn ip(s: &str) -> HostPort {
        let addr: SocketAddr = s.parse().unwrap();
        HostPort { host: Host::Ip(addr.ip()), port: addr.port() }
    }

    fn named(host: &str, port: u16) -> HostPort {
        HostPort { host: Host::Name(host.into()), port }
    }

    #[test]
    fn every_tcp_form_parses() {
        assert_eq!(parse("127.0.0.1:7878"), Ok(Address::Tcp(ip("127.0.0.1:7878"))));
        assert_eq!(parse("10.1.2.3:7"), Ok(Address::Tcp(ip("10.1.2.3:7"))));
        assert_eq!(parse("[::1]:9000"), Ok(Address::Tcp(ip("[::1]:9000"))));
        assert_eq!(parse("[2001:db8::1]:9000"), Ok(Address::Tcp(ip("[2001:db8::1]:9000"))));
        assert_eq!(parse("7878"), Ok(Address::Tcp(ip("127.0.0.1:7878"))));
        assert_eq!(parse(DEFAULT_TARGET), Ok(Address::Tcp(ip("127.0.0.1:7878"))));
        assert_eq!(parse("example.com:7"), Ok(Address::Tcp(named("example.com", 7))));
        assert_eq!(parse("LocalHost:80"), Ok(Address::Tcp(named("LocalHost", 80))));
        assert_eq!(parse("echo-1.lan.:7"), Ok(Address::Tcp(named("echo-1.lan.", 7))));
    }

    #[test]
    fn udp_targets_take_every_tcp_form() {
        assert_eq!(parse("udp:127.0.0.1:7"), Ok(Address::Udp(ip("127.0.0.1:7"))));
        assert_eq!(parse("udp:[::1]:9000"), Ok(Address::Udp(ip("[::1]:9000"))));
        assert_eq!(parse("udp:7878"), Ok(Address::Udp(ip("127.0.0.1:7878"))));
        assert_eq!(parse("udp:echo.example:7"), Ok(Address::Udp(named("echo.example", 7))));
        assert_eq!(parse("udp:[::1]:9000").unwrap().to_string(), "udp:[::1]:9000");
        assert!(parse("udp:").is_err() && parse("udp:0").is_err());
    }

    #[test]
    fn addresses_print_back_as_typed() {
        for s in ["unix:/tmp/x.sock", "[::1]:9000", "10.0.0.1:7", "echo.example:7", "udp:host:9"] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
        assert_eq!(parse("unix:/tmp/x.sock"), Ok(Address::Unix("/tmp/x.sock".into())));
        assert_eq!(parse("7").unwrap().to_string(), "127.0.0.1:7");
    }

    #[test]
    fn malformed_targets_say_why() {
        for (input, why) in [
            ("unix:", "needs a path"),
            ("7878x", "expected HOST:PORT"),
            ("70000", "expected HOST:PORT"),
            ("::1:80", "in brackets"),
            ("localhost:", "expected HOST:PORT"),
            ("host:port", "expected HOST:PORT"),
            ("bad host:7", "expected HOST:PORT"),
            ("1.2.3:7", "expected HOST:PORT"),
            ("", "expected HOST:PORT"),
            ("0", "port 0"),
            ("127.0.0.1:0", "port 0"),
            ("example.com:0", "port 0"),
        ] {
            let error = parse(input).unwrap_err();
            assert!(error.contains(&format!("'{input}'")) && error.contains(why), "{input}: {error}");
        }
    }

    #[test]
    fn ip_addresses_resolve_to_themselves_and_names_through_the_resolver() {
        let limit = Duration::from_secs(1);
        let target = parse("10.1.2.3:7").unwrap().resolve(limit).unwrap();
        assert_eq!(target, Target::Tcp("10.1.2.3:7".parse().unwrap()));
        assert_eq!(parse("udp:[::1]:7").unwrap().resolve(limit).unwrap().to_string(), "udp:[::1]:7");
        // `localhost` is in /etc/hosts: resolving it asks no DNS server. Resolved for UDP,
        // no connection is tried, so nothing needs to listen.
        let Target::Udp(addr) = parse("udp:localhost:9").unwrap().resolve(limit).unwrap() else {
            panic!("not a UDP target")
        };
        assert!(addr.ip().is_loopback() && addr.port() == 9, "{addr}");
        assert_eq!(parse("localhost:9").unwrap().name(), Some("localhost"));
        assert_eq!(parse("[::1]:9").unwrap().name(), None);
    }
}
