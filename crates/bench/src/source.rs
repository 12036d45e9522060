//! `--source`: the local addresses TCP connections are opened from, in turn.
//!
//! A TCP connection is named by four numbers: source address and port, destination address
//! and port. Toward one server (one destination) from one source address, only the ephemeral
//! port varies, and `net.ipv4.ip_local_port_range` holds 28,232 of them by default: that is
//! as many connections as one source address can hold to one server. Every address of
//! 127.0.0.0/8 is a local address on Linux, so connecting *from* 127.0.0.2, 127.0.0.3, ...
//! multiplies the ports: 19 addresses hold 536,408 connections to one server.
//!
//! The trick is `bind` before `connect`, with `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2). A plain
//! `bind(addr, port 0)` must pick a port there and then, without knowing the destination, so
//! it needs a port free for *every* destination, and runs out at the port range whatever the
//! number of addresses; with the option, the port is picked at `connect`, from the whole
//! four-tuple, as an unbound `connect` does.
//!
//! The addresses are a process-wide setting, installed once ([`install`]) like the
//! descriptor limit beside it: every TCP connect of the run (echo, idle, churn) goes through
//! [`connect`] or [`connect_nonblocking`], which take the next address in turn, whichever
//! engine asks. Without `--source`, they connect as before, from the address the kernel
//! picks.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The most addresses `--source` takes: far more than a million connections need (36).
const MAX_SOURCES: usize = 4096;

/// Local addresses to connect from, in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    addrs: Vec<IpAddr>,
}

impl Sources {
    /// The addresses, in the order they are used.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// Whether they can connect to `target` (the same family).
    pub fn check_family(&self, target: SocketAddr) -> Result<(), String> {
        match self.addrs.iter().find(|a| a.is_ipv4() != target.is_ipv4()) {
            Some(a) => Err(format!("--source {a} cannot connect to {target}: not the same address family")),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addrs.as_slice() {
            [one] => write!(f, "{one}"),
            [first, .., last] => write!(f, "{first}-{last} ({} addresses)", self.addrs.len()),
            [] => f.write_str("none"),
        }
    }
}

impl FromStr for Sources {
    type Err = String;

    /// `A`, `A,B,...`, or an IPv4 range `A-B` (inclusive), or a mix: `127.0.0.2-127.0.0.9,127.0.1.1`.
    fn from_str(s: &str) -> Result<Sources, String> {
        let mut addrs = Vec::new();
        for part in s.split(',').map(str::trim) {
            match part.split_once('-') {
                None => addrs.push(parse_ip(part)?),
                Some((first, last)) => addrs.extend(ipv4_range(parse_ip(first)?, parse_ip(last)?, part)?),
            }
            if addrs.len() > MAX_SOURCES {
                return Err(format!("--source '{s}': more than {MAX_SOURCES} addresses"));
            }
        }
        Ok(Sources { addrs })
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.trim().parse().map_err(|_| format!("--source: '{s}' is not an IP address"))
}

/// The addresses from `first` to `last`, both included.
fn ipv4_range(first: IpAddr, last: IpAddr, part: &str) -> Result<Vec<IpAddr>, String> {
    let (IpAddr::V4(first), IpAddr::V4(last)) = (first, last) else {
        return Err(format!("--source '{part}': a range is IPv4 only (list IPv6 addresses with commas)"));
    };
    let (low, high) = (u32::from(first), u32::from(last));
    if low > high {
        return Err(format!("--source '{part}': the lower address comes first"));
    }
    if (high - low) as usize >= MAX_SOURCES {
        return Err(format!("--source '{part}': more than {MAX_SOURCES} addresses"));
    }
    Ok((low..=high).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect())
}

/// The installed addresses, the next one's index, and how many connections each has made.
struct Installed {
    sources: Sources,
    next: AtomicUsize,
    used: Vec<AtomicU64>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Connect from `sources` for the rest of this process's life. Once only: a second call is
/// refused (it would be a bug).
pub fn install(sources: Sources) -> Result<(), String> {
    let used = sources.addrs.iter().map(|_| AtomicU64::new(0)).collect();
    INSTALLED
        .set(Installed { sources, next: AtomicUsize::new(0), used })
        .map_err(|_| "--source was installed twice".to_string())
}

/// The installed addresses, if any.
pub fn installed() -> Option<&'static Sources> {
    INSTALLED.get().map(|i| &i.sources)
}

/// How many connections each installed address has opened so far (empty without `--source`).
pub fn usage() -> Vec<(IpAddr, u64)> {
    INSTALLED.get().map_or_else(Vec::new, |i| {
        i.sources.addrs.iter().zip(&i.used).map(|(a, n)| (*a, n.load(Relaxed))).collect()
    })
}

/// The next address in turn, counted as used.
fn next_source() -> Option<IpAddr> {
    let installed = INSTALLED.get()?;
    let i = installed.next.fetch_add(1, Relaxed) % installed.sources.addrs.len().max(1);
    installed.used.get(i)?.fetch_add(1, Relaxed);
    installed.sources.addrs.get(i).copied()
}

/// A blocking TCP connect to `addr` within `limit`, from the next source address if any.
pub fn connect(addr: &SocketAddr, limit: Duration) -> io::Result<TcpStream> {
    match next_source() {
        None => TcpStream::connect_timeout(addr, limit),
        Some(source) => {
            let socket = bound_socket(source, addr)?;
            socket.connect_timeout(&SockAddr::from(*addr), limit)?;
            Ok(socket.into())
        }
    }
}

/// A non-blocking TCP connect to `addr`, from the next source address if any: the socket is
/// returned at once, connecting (mio's `TcpStream::connect` docs say how to tell when).
pub fn connect_nonblocking(addr: SocketAddr) -> io::Result<mio::net::TcpStream> {
    match next_source() {
        None => mio::net::TcpStream::connect(addr),
        Some(source) => {
            let socket = bound_socket(source, &addr)?;
            socket.set_nonblocking(true)?;
            match socket.connect(&SockAddr::from(addr)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            Ok(mio::net::TcpStream::from_std(socket.into()))
        }
    }
}

/// A TCP socket bound to `source` with the port left for `connect` to choose
/// (`IP_BIND_ADDRESS_NO_PORT`), ready to connect to `to`.
fn bound_socket(source: IpAddr, to: &SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*to), Type::STREAM, Some(Protocol::TCP))?;
    bind_address_no_port(&socket)?;
    socket
        .bind(&SockAddr::from(SocketAddr::new(source, 0)))
        .map_err(|e| io::Error::new(e.kind(), format!("--source {source}: cannot bind: {e}")))?;
    Ok(socket)
}

/// `IP_BIND_ADDRESS_NO_PORT`: `bind` takes the address only; `connect` picks the port from
/// the whole four-tuple (socket2 has no method for it). An IPv6 socket takes the IPv4 option
/// too (the option lives in `inet_sock`, which both families share).
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live `c_int`, on a socket
    // this function borrows.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn sources(s: &str) -> Result<Sources, String> {
        s.parse()
    }

    #[test]
    fn ranges_lists_and_single_addresses_parse() {
        let range = sources("127.0.0.2-127.0.0.20").unwrap();
        assert_eq!(range.addrs().len(), 19);
        assert_eq!(range.addrs()[0], IpAddr::from([127, 0, 0, 2]));
        assert_eq!(range.addrs()[18], IpAddr::from([127, 0, 0, 20]));
        assert_eq!(range.to_string(), "127.0.0.2-127.0.0.20 (19 addresses)");
        let across = sources("127.0.0.255-127.0.1.1").unwrap();
        assert_eq!(across.addrs().len(), 3, "a range crosses octets");
        let mixed = sources("127.0.0.2, 127.0.0.7-127.0.0.8,::1").unwrap();
        assert_eq!(mixed.addrs().len(), 4);
        assert_eq!(sources("127.0.0.3").unwrap().to_string(), "127.0.0.3");
    }

    #[test]
    fn bad_sources_say_why() {
        for (input, why) in [
            ("127.0.0.9-127.0.0.2", "lower address comes first"),
            ("::1-::2", "IPv4 only"),
            ("localhost", "not an IP address"),
            ("127.0.0.1-", "not an IP address"),
            ("10.0.0.0-10.1.0.0", "more than 4096"),
        ] {
            let error = sources(input).unwrap_err();
            assert!(error.contains(why), "{input}: {error}");
        }
        let v4 = sources("127.0.0.2").unwrap();
        assert!(v4.check_family("[::1]:7".parse().unwrap()).unwrap_err().contains("address family"));
        assert_eq!(v4.check_family("127.0.0.1:7".parse().unwrap()), Ok(()));
    }

    /// A bound socket keeps its address and gets its port only at connect; many sockets
    /// bound to one address with port 0 do not each take a port of their own at `bind`.
    #[test]
    fn a_bound_socket_connects_from_its_address_with_a_port_picked_at_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let source = IpAddr::from([127, 0, 0, 3]);
        let socket = bound_socket(source, &to).unwrap();
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        assert_eq!((local.ip(), local.port()), (source, 0), "no port before connect");
        socket.connect_timeout(&SockAddr::from(to), Duration::from_secs(5)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
        assert_ne!(peer.port(), 0);
    }

    #[test]
    fn a_source_that_is_not_ours_is_named() {
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind").is_ok_and(|v| v.trim() != "0") {
            return eprintln!("skipped: net.ipv4.ip_nonlocal_bind lets any address be bound here");
        }
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let error = bound_socket(IpAddr::from([192, 0, 2, 1]), &to).unwrap_err().to_string();
        assert!(error.starts_with("--source 192.0.2.1: cannot bind"), "{error}");
    }
}
