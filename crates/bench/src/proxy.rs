//! `--proxy-protocol v1|v2`: begin each connection with a PROXY protocol header (HAProxy's
//! `proxy-protocol.txt`), as a load balancer in front of the server would, so that a server
//! that requires one (`echoloop serve --proxy-protocol`) can be loaded directly.
//!
//! The header names this connection's own ends (the load generator is the client): `TCP4`
//! or `TCP6` with the local and the server's address in v1, a `PROXY` command with the
//! `INET`/`INET6` address block in v2. A Unix socket has no IP addresses: v1 then sends
//! `PROXY UNKNOWN`, v2 the `UNSPEC` family (both tell the server to keep the real peer).
//! The header is written before the connection's first byte and is not part of any message:
//! it is not counted, and no echo of it is expected.

use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;

/// The 12 bytes that begin every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Which header to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyVersion {
    /// The text header: `PROXY TCP4 SRC DST SPORT DPORT\r\n`.
    V1,
    /// The binary header (HAProxy's `send-proxy-v2`).
    V2,
}

/// The header for a connection from `local` to `peer`; `None` for a socket without IP
/// addresses (Unix).
pub fn header(version: ProxyVersion, ends: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    match version {
        ProxyVersion::V1 => v1(ends),
        ProxyVersion::V2 => v2(ends),
    }
}

fn v1(ends: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let line = match ends {
        Some((local, peer)) => {
            let family = if local.is_ipv4() { "TCP4" } else { "TCP6" };
            format!("PROXY {family} {} {} {} {}\r\n", local.ip(), peer.ip(), local.port(), peer.port())
        }
        None => "PROXY UNKNOWN\r\n".to_string(),
    };
    line.into_bytes()
}

fn v2(ends: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    // Version 2 and command PROXY; the family with transport STREAM; the address block.
    let (family, block) = match ends {
        Some((SocketAddr::V4(local), SocketAddr::V4(peer))) => (
            0x11,
            [&local.ip().octets()[..], &peer.ip().octets(), &ports(local.port(), peer.port())].concat(),
        ),
        Some((SocketAddr::V6(local), SocketAddr::V6(peer))) => (
            0x21,
            [&local.ip().octets()[..], &peer.ip().octets(), &ports(local.port(), peer.port())].concat(),
        ),
        _ => (0x00, Vec::new()), // no IP addresses: UNSPEC, no block
    };
    let len = block.len() as u16; // at most 36
    [&V2_SIGNATURE[..], &[0x21, family], &len.to_be_bytes(), &block].concat()
}

/// Source and destination port, big-endian.
fn ports(local: u16, peer: u16) -> [u8; 4] {
    let (l, p) = (local.to_be_bytes(), peer.to_be_bytes());
    [l[0], l[1], p[0], p[1]]
}

/// Send the header on a connection that has just connected (from `local` to `peer`, as
/// [`header`] takes them), in one write: a new socket's send buffer is empty and a header is
/// at most 107 bytes, so on a non-blocking socket too anything but the whole header written
/// at once is a failure, not a reason to wait.
pub fn send(
    version: ProxyVersion,
    socket: &mut impl Write,
    ends: Option<(SocketAddr, SocketAddr)>,
) -> io::Result<()> {
    let header = header(version, ends);
    let written = loop {
        match socket.write(&header) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal; retry
            other => break other,
        }
    };
    match written {
        Ok(n) if n == header.len() => Ok(()),
        Ok(n) => {
            let msg =
                format!("the PROXY header: only {n} of {} bytes went out on a new connection", header.len());
            Err(io::Error::new(ErrorKind::WriteZero, msg))
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("sending the PROXY header: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(local: &str, peer: &str) -> Option<(SocketAddr, SocketAddr)> {
        Some((local.parse().unwrap(), peer.parse().unwrap()))
    }

    #[test]
    fn v1_names_both_ends() {
        let header = header(ProxyVersion::V1, ends("127.0.0.1:40000", "127.0.0.2:7"));
        assert_eq!(header, b"PROXY TCP4 127.0.0.1 127.0.0.2 40000 7\r\n");
        let header = super::header(ProxyVersion::V1, ends("[::1]:40000", "[::1]:7"));
        assert_eq!(header, b"PROXY TCP6 ::1 ::1 40000 7\r\n");
        assert_eq!(super::header(ProxyVersion::V1, None), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_carries_the_address_block() {
        let header = header(ProxyVersion::V2, ends("127.0.0.1:40000", "127.0.0.2:7"));
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend([0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 2, 0x9c, 0x40, 0, 7]);
        assert_eq!(header, expected);
        let header = super::header(ProxyVersion::V2, ends("[::1]:1", "[::1]:2"));
        assert_eq!((header[13], header.len()), (0x21, 16 + 36));
        assert_eq!(super::header(ProxyVersion::V2, None), [&V2_SIGNATURE[..], &[0x21, 0, 0, 0]].concat());
    }
}
