//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): how a load
//! balancer tells the server behind it who the client really is. No I/O here: given the
//! first bytes of a connection, say whether they begin with a valid header yet.
//!
//! A balancer in TCP mode opens its own connection to the server for each client, so the
//! server sees the balancer's address as the peer. With `send-proxy` (v1, a text line) or
//! `send-proxy-v2` (binary), the balancer writes one header before the client's first byte:
//!
//! ```text
//! v1: PROXY TCP4 192.0.2.7 198.51.100.1 40123 7\r\n            (at most 107 bytes)
//! v2: \r\n\r\n\0\r\nQUIT\n | ver+cmd | family+transport | len (u16 BE) | addresses | TLVs
//! ```
//!
//! The server consumes the header, never echoes it, and names the client by the source
//! address it carries. A v2 `LOCAL` header (the balancer's own health check) and a v1
//! `UNKNOWN` one carry no client: the connection's real peer stands. TLVs (the v2
//! type-length-value extensions after the addresses) are skipped unread.
//!
//! A header arrives like any other bytes: in one read or split over many. [`ProxyDecoder`]
//! is fed each read as it comes and answers *need more*, *done* (with where the header ends
//! in that read: the bytes after it are the client's first bytes) or *invalid* (and why),
//! deciding as early as the bytes allow: a client that sends no header is refused at its
//! first byte. It holds at most [`MAX_HELD`] bytes whatever a client declares: a v1 line is
//! at most 107 bytes, and of a v2 header (up to 16 + 65535 bytes) only the fixed part and
//! the addresses are kept; the rest is counted off as it passes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first bytes of a v1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, `\r\n` included (the specification's bound).
const V1_MAX: usize = 107;
/// The 12 bytes that begin every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version and command, family and transport, length.
const V2_FIXED: usize = 16;
/// Address bytes of each v2 family: two IPv4 addresses and two ports; two IPv6 addresses
/// and two ports; two 108-byte Unix socket paths.
const V2_INET: usize = 12;
const V2_INET6: usize = 36;
const V2_UNIX: usize = 216;
/// The most bytes a decoder ever holds: a v2 fixed part with the longest address block
/// (longer than [`V1_MAX`]). Anything a v2 header declares beyond it is skipped, not kept.
const MAX_HELD: usize = V2_FIXED + V2_UNIX;

/// A valid header: how long it is, and whom it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The header's length in bytes from the connection's first byte (TLVs included).
    pub len: usize,
    /// Whom the header names as the client.
    pub source: ProxySource,
}

/// The client a header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySource {
    /// The client's address and port, as the balancer saw them.
    Addr(SocketAddr),
    /// A v2 `LOCAL` header: the balancer's own connection (a health check). The real peer stands.
    Local,
    /// A relayed connection whose client has no IP address to give (v1 `UNKNOWN`, v2 `UNSPEC`
    /// or a Unix socket family). The real peer stands.
    Unknown,
}

impl fmt::Display for ProxySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySource::Addr(addr) => write!(f, "{addr}"),
            ProxySource::Local => f.write_str("LOCAL"),
            ProxySource::Unknown => f.write_str("UNKNOWN"),
        }
    }
}

/// Why the first bytes of a connection are not a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidProxyHeader(&'static str);

impl fmt::Display for InvalidProxyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidProxyHeader {}

/// What a decoder knows after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProgress {
    /// Everything so far may begin a valid header: read more.
    NeedMore,
    /// The header is complete. Its last byte is `data[consumed - 1]` of the read just fed
    /// (`consumed` may be 0 when the header ended exactly with an earlier read); the bytes
    /// after it are the client's.
    Done {
        /// The header.
        header: ProxyHeader,
        /// How many bytes of the read just fed belong to the header.
        consumed: usize,
    },
    /// The bytes cannot begin a valid header: close the connection.
    Invalid(InvalidProxyHeader),
}

/// Reads a header that may arrive over any number of reads (see the module docs).
///
/// Feed it each read in order, until it answers `Done` or `Invalid`; it must not be fed
/// after that.
#[derive(Debug, Default)]
pub struct ProxyDecoder {
    /// The bytes fed so far, while they are not yet enough to decide. Empty when a header
    /// arrives in one read (the usual case: nothing is copied); never more than [`MAX_HELD`].
    held: Vec<u8>,
    /// Bytes fed so far, held or not (at most the header's length, 16 + 65535).
    fed: usize,
    /// The header, once known, while its TLVs are still passing.
    parsed: Option<ProxyHeader>,
}

impl ProxyDecoder {
    /// A decoder that has seen nothing.
    pub fn new() -> ProxyDecoder {
        ProxyDecoder::default()
    }

    /// Takes the next read's bytes and says what is known now.
    pub fn feed(&mut self, data: &[u8]) -> ProxyProgress {
        let header = match self.parsed {
            Some(header) => header,
            None => match self.parse_with(data) {
                Parse::Done(header) => header,
                Parse::Incomplete => {
                    self.fed += data.len();
                    return ProxyProgress::NeedMore;
                }
                Parse::Invalid(why) => return ProxyProgress::Invalid(why),
            },
        };
        // The header ends `header.len - fed` bytes into this read, or in a later one.
        let left = header.len - self.fed;
        if left <= data.len() {
            self.held = Vec::new();
            return ProxyProgress::Done { header, consumed: left };
        }
        self.parsed = Some(header);
        self.held = Vec::new(); // the header is known: what is still coming is skipped
        self.fed += data.len();
        ProxyProgress::NeedMore
    }

    /// Parses what was held with `data` after it, holding it too if that is not enough.
    fn parse_with(&mut self, data: &[u8]) -> Parse {
        if self.held.is_empty() {
            let parsed = parse(data);
            if parsed == Parse::Incomplete {
                self.held.extend_from_slice(data);
            }
            return parsed;
        }
        // `parse` decides on any MAX_HELD bytes, so an undecided prefix was shorter than
        // that, and all of it is held: `fed == held.len()`.
        let take = data.len().min(MAX_HELD - self.held.len());
        self.held.extend_from_slice(&data[..take]);
        parse(&self.held)
    }
}

/// What [`parse`] found at the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    /// A valid header may still follow.
    Incomplete,
    /// A valid header; its `len` may exceed the bytes given (v2 TLVs still to come).
    Done(ProxyHeader),
    /// No valid header can begin with these bytes.
    Invalid(InvalidProxyHeader),
}

fn invalid(why: &'static str) -> Parse {
    Parse::Invalid(InvalidProxyHeader(why))
}

/// Decides on the first bytes of a connection. Never `Incomplete` on [`MAX_HELD`] bytes or
/// more, and never `Invalid` on a prefix of a valid header.
fn parse(buf: &[u8]) -> Parse {
    match buf.first() {
        None => Parse::Incomplete,
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => invalid("no PROXY header: the first byte is neither 'P' (v1) nor '\\r' (v2)"),
    }
}

/// A v1 header: `PROXY <TCP4|TCP6> <src> <dst> <sport> <dport>\r\n` or `PROXY UNKNOWN...\r\n`.
fn parse_v1(buf: &[u8]) -> Parse {
    let window = &buf[..buf.len().min(V1_MAX)];
    if !starts_like(window, V1_PREFIX) {
        return invalid("not a PROXY v1 header: it does not begin with \"PROXY \"");
    }
    let end = window.windows(2).position(|w| w == b"\r\n");
    // Printable ASCII up to the "\r\n" (or its '\r' while the '\n' is still to come).
    let line = match end {
        Some(cr) => &window[..cr],
        None => window.strip_suffix(b"\r").unwrap_or(window),
    };
    if !line.iter().all(|b| (b' '..=b'~').contains(b)) {
        return invalid("PROXY v1 header: a byte that is not printable ASCII before \"\\r\\n\"");
    }
    let Some(cr) = end else {
        if window.len() == V1_MAX {
            return invalid("PROXY v1 header: no \"\\r\\n\" within 107 bytes");
        }
        return Parse::Incomplete;
    };
    let fields = String::from_utf8_lossy(&line[V1_PREFIX.len().min(cr)..]);
    match v1_source(&fields) {
        Some(source) => Parse::Done(ProxyHeader { len: cr + 2, source }),
        None => invalid("PROXY v1 header: malformed protocol, address or port"),
    }
}

/// The client named by a v1 line after `"PROXY "`, without its `\r\n`.
fn v1_source(line: &str) -> Option<ProxySource> {
    let mut fields = line.split(' ');
    let protocol = fields.next()?;
    if protocol == "UNKNOWN" {
        return Some(ProxySource::Unknown); // whatever follows is to be ignored
    }
    let ip = |text: &str| match protocol {
        "TCP4" => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        "TCP6" => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        _ => None,
    };
    let (src, _dst) = (ip(fields.next()?)?, ip(fields.next()?)?);
    let (sport, _dport) = (v1_port(fields.next()?)?, v1_port(fields.next()?)?);
    match fields.next() {
        Some(_) => None,
        None => Some(ProxySource::Addr(SocketAddr::new(src, sport))),
    }
}

/// A port as v1 writes it: decimal, 0 to 65535, no sign, no leading zero.
fn v1_port(text: &str) -> Option<u16> {
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    let canonical = text == "0" || !text.starts_with('0');
    if !digits || !canonical || text.is_empty() || text.len() > 5 {
        return None;
    }
    text.parse().ok()
}

/// A v2 header: the signature, then version and command, family and transport, the length
/// of what follows, the addresses and any TLVs.
fn parse_v2(buf: &[u8]) -> Parse {
    if !starts_like(buf, &V2_SIGNATURE) {
        return invalid("not a PROXY v2 header: wrong signature");
    }
    let Some(&[version_command, family_transport, len_hi, len_lo]) = buf.get(12..V2_FIXED) else {
        return match buf.get(12) {
            Some(&vc) if vc >> 4 != 2 => invalid("PROXY v2 header: version is not 2"),
            _ => Parse::Incomplete,
        };
    };
    if version_command >> 4 != 2 {
        return invalid("PROXY v2 header: version is not 2");
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let addresses = &buf[V2_FIXED..buf.len().min(len)];
    let source = match version_command & 0x0f {
        0x0 => ProxySource::Local, // family, addresses and TLVs are all to be ignored
        0x1 => match v2_source(family_transport, addresses, len - V2_FIXED) {
            Ok(Some(source)) => source,
            Ok(None) => return Parse::Incomplete,
            Err(why) => return invalid(why),
        },
        _ => return invalid("PROXY v2 header: command is neither LOCAL nor PROXY"),
    };
    Parse::Done(ProxyHeader { len, source })
}

/// The client a v2 `PROXY` header names, from the address bytes received so far (`None`:
/// not enough of them yet). `declared` is the length the header gives them with the TLVs.
fn v2_source(
    family_transport: u8,
    addresses: &[u8],
    declared: usize,
) -> Result<Option<ProxySource>, &'static str> {
    if !matches!(family_transport & 0x0f, 0x0 | 0x1) {
        return Err("PROXY v2 header: transport is not a stream");
    }
    let needed = match family_transport >> 4 {
        0x0 => return Ok(Some(ProxySource::Unknown)), // UNSPEC: addresses to be ignored
        0x1 => V2_INET,
        0x2 => V2_INET6,
        0x3 => V2_UNIX,
        _ => return Err("PROXY v2 header: unknown address family"),
    };
    if declared < needed {
        return Err("PROXY v2 header: length too short for its address family");
    }
    let Some(block) = addresses.get(..needed) else { return Ok(None) };
    let source = match needed {
        V2_INET => {
            let ip: [u8; 4] = std::array::from_fn(|i| block[i]);
            SocketAddr::new(Ipv4Addr::from(ip).into(), u16::from_be_bytes([block[8], block[9]]))
        }
        V2_INET6 => {
            let ip: [u8; 16] = std::array::from_fn(|i| block[i]);
            SocketAddr::new(Ipv6Addr::from(ip).into(), u16::from_be_bytes([block[32], block[33]]))
        }
        _ => return Ok(Some(ProxySource::Unknown)), // a Unix socket path is no client address
    };
    Ok(Some(ProxySource::Addr(source)))
}

/// Whether `buf` and `prefix` agree on their common length: `buf` may still become `prefix...`.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A v2 header: command, family byte, source, and `extra` bytes after the addresses.
    fn v2(command: u8, family: u8, addresses: &[u8], extra: &[u8]) -> Vec<u8> {
        let len = u16::try_from(addresses.len() + extra.len()).expect("a v2 header's length fits 16 bits");
        let mut out = V2_SIGNATURE.to_vec();
        out.extend([0x20 | command, family]);
        out.extend(len.to_be_bytes());
        out.extend(addresses);
        out.extend(extra);
        out
    }

    /// The address block of a v2 TCP header from `src` to a fixed destination.
    fn v2_addresses(src: SocketAddr) -> (u8, Vec<u8>) {
        match src.ip() {
            IpAddr::V4(ip) => {
                let dst = Ipv4Addr::new(10, 0, 0, 1);
                let block = [&ip.octets()[..], &dst.octets(), &src.port().to_be_bytes(), &7u16.to_be_bytes()];
                (0x11, block.concat())
            }
            IpAddr::V6(ip) => {
                let dst = Ipv6Addr::LOCALHOST;
                let block = [&ip.octets()[..], &dst.octets(), &src.port().to_be_bytes(), &7u16.to_be_bytes()];
                (0x21, block.concat())
            }
        }
    }

    fn v1(src: SocketAddr) -> Vec<u8> {
        match src {
            SocketAddr::V4(a) => format!("PROXY TCP4 {} 10.0.0.1 {} 7\r\n", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("PROXY TCP6 {} ::1 {} 7\r\n", a.ip(), a.port()),
        }
        .into_bytes()
    }

    /// Feeds `input` in one read.
    fn once(input: &[u8]) -> ProxyProgress {
        ProxyDecoder::new().feed(input)
    }

    fn done(len: usize, source: ProxySource) -> ProxyProgress {
        ProxyProgress::Done { header: ProxyHeader { len, source }, consumed: len }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("a test address")
    }

    #[test]
    fn v1_tcp4_and_tcp6_name_the_source() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 7\r\n";
        assert_eq!(once(line), done(line.len(), ProxySource::Addr(addr("192.0.2.7:40123"))));
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n";
        assert_eq!(once(line), done(line.len(), ProxySource::Addr(addr("[2001:db8::7]:65535"))));
    }

    #[test]
    fn v1_unknown_ignores_the_rest_of_its_line() {
        assert_eq!(once(b"PROXY UNKNOWN\r\n"), done(15, ProxySource::Unknown));
        let line = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        assert_eq!(once(line), done(line.len(), ProxySource::Unknown));
    }

    /// The bytes after the header are the client's: `consumed` stops at the header's end.
    #[test]
    fn bytes_after_the_header_are_not_consumed() {
        let mut input = v1(addr("127.0.0.9:1000"));
        let header_len = input.len();
        input.extend_from_slice(b"PROXY hello\r\n");
        let ProxyProgress::Done { consumed, .. } = once(&input) else { panic!("a header") };
        assert_eq!(consumed, header_len);
    }

    #[test]
    fn v1_malformed_lines_are_invalid() {
        for line in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 40123\r\n"[..], // a field short
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 7 8\r\n",  // a field too many
            b"PROXY TCP4 192.0.2.7  198.51.100.1 40123 7\r\n",   // two spaces
            b"PROXY TCP4 ::1 ::1 40123 7\r\n",                   // v6 addresses for TCP4
            b"PROXY TCP6 192.0.2.7 192.0.2.8 40123 7\r\n",       // v4 addresses for TCP6
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 7\r\n",    // port out of range
            b"PROXY TCP4 192.0.2.7 198.51.100.1 04012 7\r\n",    // leading zero
            b"PROXY TCP4 192.0.2.7 198.51.100.1 123456 7\r\n",   // six digits
            b"PROXY TCP4 192.0.2.07 198.51.100.1 1 7\r\n",       // leading zero in an octet
            b"PROXY UNKNOWN \x01\r\n",                           // not printable
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +4 7\r\n",       // a sign
            b"PROXY TCP4 192.0.2.7 198.51.100.1 4 \r\n",         // empty port
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",        // not a stream protocol
            b"PROXY \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",   // a bare '\n'
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r", // '\r' not followed by '\n'
        ] {
            assert!(matches!(once(line), ProxyProgress::Invalid(_)), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn v1_is_at_most_107_bytes() {
        // The longest valid line: UNKNOWN padded to exactly 107 bytes with its "\r\n".
        let mut longest = b"PROXY UNKNOWN ".to_vec();
        longest.resize(V1_MAX - 2, b'x');
        longest.extend_from_slice(b"\r\n");
        assert_eq!(once(&longest), done(V1_MAX, ProxySource::Unknown));
        // One byte more, and the 107 bytes without "\r\n" are already enough to refuse.
        let mut too_long = longest.clone();
        too_long.insert(20, b'x');
        assert!(matches!(once(&too_long[..V1_MAX]), ProxyProgress::Invalid(_)));
        assert_eq!(once(&too_long[..V1_MAX - 1]), ProxyProgress::NeedMore);
    }

    /// A client that does not speak PROXY is refused at its first byte, or as soon as its
    /// bytes leave the signature, not after a timeout.
    #[test]
    fn other_protocols_are_refused_early() {
        assert!(matches!(once(b"h"), ProxyProgress::Invalid(_)));
        assert!(matches!(once(b"PROXX"), ProxyProgress::Invalid(_)));
        assert!(matches!(once(b"\r\n\r\n\0\r\nQUIZ"), ProxyProgress::Invalid(_)));
        assert!(matches!(once(b"PROXY TCP4 \x01"), ProxyProgress::Invalid(_)));
        assert_eq!(once(b""), ProxyProgress::NeedMore);
        assert_eq!(once(b"PROX"), ProxyProgress::NeedMore);
        assert_eq!(once(b"\r\n\r\n\0"), ProxyProgress::NeedMore);
    }

    #[test]
    fn v2_proxy_names_the_source() {
        for src in [addr("192.0.2.7:40123"), addr("[2001:db8::7]:443")] {
            let (family, block) = v2_addresses(src);
            let header = v2(1, family, &block, &[]);
            assert_eq!(once(&header), done(header.len(), ProxySource::Addr(src)));
        }
    }

    /// A balancer's health check: LOCAL, whatever its family and addresses say.
    #[test]
    fn v2_local_is_accepted() {
        assert_eq!(once(&v2(0, 0x00, &[], &[])), done(16, ProxySource::Local));
        let (family, block) = v2_addresses(addr("192.0.2.7:1"));
        assert_eq!(once(&v2(0, family, &block, &[])), done(28, ProxySource::Local));
        assert_eq!(once(&v2(0, 0xff, &[1, 2, 3], &[])), done(19, ProxySource::Local));
    }

    #[test]
    fn v2_unspec_and_unix_families_leave_the_peer() {
        assert_eq!(once(&v2(1, 0x00, &[], &[])), done(16, ProxySource::Unknown));
        let header = v2(1, 0x31, &[b'/'; V2_UNIX], &[]);
        assert_eq!(once(&header), done(header.len(), ProxySource::Unknown));
    }

    /// TLVs up to the largest length a header can declare are skipped; the decoder keeps
    /// no more than [`MAX_HELD`] bytes of them.
    #[test]
    fn v2_tlvs_are_skipped_however_long() {
        let src = addr("192.0.2.7:40123");
        let (family, block) = v2_addresses(src);
        let header = v2(1, family, &block, &vec![0xab; 65535 - V2_INET]);
        assert_eq!(header.len(), 16 + 65535);
        assert_eq!(once(&header), done(header.len(), ProxySource::Addr(src)));
        let mut decoder = ProxyDecoder::new();
        for chunk in header.chunks(1000) {
            assert!(decoder.held.len() <= MAX_HELD);
            if let ProxyProgress::Done { header: h, consumed } = decoder.feed(chunk) {
                assert_eq!((h.source, consumed), (ProxySource::Addr(src), chunk.len()));
                return;
            }
        }
        panic!("the header never ended");
    }

    #[test]
    fn v2_malformed_headers_are_invalid() {
        let (family, block) = v2_addresses(addr("192.0.2.7:1"));
        let mut bad_version = v2(1, family, &block, &[]);
        bad_version[12] = 0x11;
        for header in [
            bad_version,
            v2(2, family, &block, &[]),          // command 2
            v2(1, 0x12, &block, &[]),            // datagram transport
            v2(1, 0x41, &block, &[]),            // family 4
            v2(1, family, &block[..11], &[]),    // too short for IPv4
            v2(1, 0x21, &block, &[0; 10]),       // 22 bytes: too short for IPv6
            v2(1, 0x31, &[0; V2_UNIX - 1], &[]), // too short for Unix
        ] {
            assert!(matches!(once(&header), ProxyProgress::Invalid(_)), "{header:?}");
        }
        // A wrong version is refused as soon as its byte arrives.
        assert!(matches!(once(b"\r\n\r\n\0\r\nQUIT\n\x31"), ProxyProgress::Invalid(_)));
    }

    /// A header that ended with an earlier read leaves the next read to the client.
    #[test]
    fn a_header_ending_with_a_read_consumes_nothing_of_the_next() {
        let header = v1(addr("127.0.0.1:9"));
        let mut decoder = ProxyDecoder::new();
        assert_eq!(decoder.feed(&header[..10]), ProxyProgress::NeedMore);
        let ProxyProgress::Done { consumed, .. } = decoder.feed(&header[10..]) else { panic!() };
        assert_eq!(consumed, header.len() - 10);
    }

    /// Any valid header, v1 or v2, with TLVs or not.
    fn any_header() -> impl Strategy<Value = (Vec<u8>, ProxySource)> {
        let ip =
            prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from),];
        let src = (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port));
        let tlvs = prop::collection::vec(any::<u8>(), 0..600);
        prop_oneof![
            src.clone().prop_map(|s| (v1(s), ProxySource::Addr(s))),
            Just((b"PROXY UNKNOWN\r\n".to_vec(), ProxySource::Unknown)),
            (src, tlvs.clone()).prop_map(|(s, tlvs)| {
                let (family, block) = v2_addresses(s);
                (v2(1, family, &block, &tlvs), ProxySource::Addr(s))
            }),
            tlvs.prop_map(|tlvs| (v2(0, 0, &[], &tlvs), ProxySource::Local)),
        ]
    }

    /// Feeds `stream` cut at `cuts`; returns the header found and the bytes after it, or why
    /// it is invalid (`None`: the stream ended first).
    fn feed_in_pieces(
        stream: &[u8],
        cuts: &[usize],
    ) -> Result<(ProxyHeader, Vec<u8>), Option<InvalidProxyHeader>> {
        let mut decoder = ProxyDecoder::new();
        let mut start = 0;
        for &end in cuts.iter().chain([&stream.len()]) {
            let read = &stream[start..end.max(start)];
            start = end.max(start);
            match decoder.feed(read) {
                ProxyProgress::NeedMore => {
                    assert!(decoder.held.len() <= MAX_HELD, "{} held", decoder.held.len())
                }
                ProxyProgress::Done { header, consumed } => {
                    return Ok((header, [&read[consumed..], &stream[start..]].concat()));
                }
                ProxyProgress::Invalid(why) => return Err(Some(why)),
            }
        }
        Err(None)
    }

    /// `cuts` as offsets into a stream of `len` bytes, in order.
    fn cut_points(mut cuts: Vec<usize>, len: usize) -> Vec<usize> {
        cuts.iter_mut().for_each(|c| *c %= len + 1);
        cuts.sort_unstable();
        cuts
    }

    proptest! {
        /// A valid header followed by the client's bytes, cut into any reads, gives the same
        /// header and exactly the client's bytes after it.
        #[test]
        fn any_split_parses_the_same(
            (header, source) in any_header(),
            payload in prop::collection::vec(any::<u8>(), 0..100),
            cuts in prop::collection::vec(0usize..2000, 0..20),
        ) {
            let stream = [&header[..], &payload].concat();
            let cuts = cut_points(cuts, stream.len());
            let found = feed_in_pieces(&stream, &cuts);
            prop_assert_eq!(found, Ok((ProxyHeader { len: header.len(), source }, payload)));
        }

        /// Every proper prefix of a valid header asks for more; none is refused.
        #[test]
        fn prefixes_need_more((header, _) in any_header()) {
            for end in 0..header.len() {
                prop_assert_eq!(once(&header[..end]), ProxyProgress::NeedMore);
            }
        }

        /// Arbitrary bytes in arbitrary reads: never a panic, never more than MAX_HELD held,
        /// and the same verdict as in one read.
        #[test]
        fn arbitrary_bytes_never_panic(
            stream in prop::collection::vec(any::<u8>(), 0..400),
            cuts in prop::collection::vec(0usize..400, 0..10),
            start in prop_oneof![Just(&b""[..]), Just(&b"PROXY "[..]), Just(&V2_SIGNATURE[..])],
        ) {
            let stream = [start, &stream].concat();
            let in_pieces = feed_in_pieces(&stream, &cut_points(cuts, stream.len()));
            match (in_pieces, once(&stream)) {
                (Ok((header, rest)), ProxyProgress::Done { header: whole, consumed }) => {
                    prop_assert_eq!(header, whole);
                    prop_assert_eq!(rest.len(), stream.len() - consumed);
                }
                (Err(Some(_)), ProxyProgress::Invalid(_)) | (Err(None), ProxyProgress::NeedMore) => {}
                (in_pieces, whole) => prop_assert!(false, "in pieces {:?}, at once {:?}", in_pieces, whole),
            }
        }
    }
}
