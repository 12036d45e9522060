//! `--proxy-protocol`: the PROXY header as the first phase of a connection, in every model.
//!
//! Behind a load balancer every connection begins with a header that names the real client
//! (`crate::proxy_protocol` parses it). Until the whole header has arrived, a connection is
//! not served: nothing it sends is echoed, and it is not counted as accepted or open (it
//! holds a place under `--max-connections`, though: [`crate::stats::Stats::try_reserve`]).
//! Then:
//!
//! - a valid header is consumed, never echoed; the client it names becomes the connection's
//!   peer in every later log line (a v2 `LOCAL` header, the balancer's own health check,
//!   and a v1 `UNKNOWN` one keep the real peer); the bytes after it in the same read are
//!   the client's first bytes, echoed as any others;
//! - a missing or malformed header, an end of the connection before the header is whole,
//!   or a header not whole `--proxy-timeout` after the accept: the connection is closed,
//!   counted as refused (`rejected{reason="proxy_header"}`), and logged through the
//!   throttle of what clients cause ([`crate::stats::ClientEvent`]).
//!
//! The loops feed each read to a [`ProxyDecoder`] ([`feed`]) and keep the timeout as a
//! deadline; the blocking models read the header with a socket timeout ([`read_blocking`]).

use std::io::Read;
use std::ops::Range;
use std::time::{Duration, Instant};

use log::debug;

use crate::net::{BlockingStream, Peer, interrupted, timed_out};
use crate::proxy_protocol::{ProxyDecoder, ProxyProgress, ProxySource};
use crate::stats::{ClientEvent, Stats};

/// What one read in the header phase gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderStep {
    /// Not whole yet: read more.
    NeedMore,
    /// The header is whole. `client` is whom it names (the real peer for `LOCAL` and
    /// `UNKNOWN`); the read's bytes from `payload` on are the client's.
    Done { client: Peer, payload: usize },
    /// Not a valid header: why.
    Invalid(String),
}

/// Feed one read of a connection from `peer` to its decoder.
pub fn feed(decoder: &mut ProxyDecoder, data: &[u8], peer: Peer) -> HeaderStep {
    match decoder.feed(data) {
        ProxyProgress::NeedMore => HeaderStep::NeedMore,
        ProxyProgress::Done { header, consumed } => {
            let client = match header.source {
                ProxySource::Addr(addr) => Peer(Some(addr)),
                ProxySource::Local | ProxySource::Unknown => peer,
            };
            debug!(
                "{peer}: PROXY header ({} bytes) names client {}: serving {client}",
                header.len, header.source
            );
            HeaderStep::Done { client, payload: consumed }
        }
        ProxyProgress::Invalid(why) => HeaderStep::Invalid(why.to_string()),
    }
}

/// A connection from `peer` ended in its header phase, for `why`: free its place under
/// `--max-connections`, count it as refused, and log it (a debug line each, a warning now
/// and then).
pub fn refused(stats: &Stats, peer: Peer, why: &str, now: Instant) {
    stats.reservation_released();
    let detail = || format!("{peer}: no valid PROXY header ({why}): closed, nothing echoed");
    stats.client_event(ClientEvent::ProxyHeader, now, detail);
}

/// Why a header that never became whole was refused, once `timeout` is over.
pub fn timed_out_reason(timeout: Duration) -> String {
    format!("not whole {timeout:?} after the accept (--proxy-timeout)")
}

/// The blocking models: read the header of `stream` (from `peer`) within `timeout` of now,
/// into `buf`. `Ok`: the client, and where in `buf` the bytes after the header are (the
/// client's first bytes). `Err`: why it was refused. `idle_timeout` is the socket's read
/// timeout to put back for the echo (the header's own replaced it meanwhile).
pub fn read_blocking(
    stream: &BlockingStream,
    buf: &mut [u8],
    peer: Peer,
    timeout: Duration,
    idle_timeout: Option<Duration>,
) -> Result<(Peer, Range<usize>), String> {
    let deadline = Instant::now() + timeout;
    let mut decoder = ProxyDecoder::new();
    let mut reader = stream;
    let socket = stream.sock_ref();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out_reason(timeout));
        }
        socket.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let n = match reader.read(buf) {
            Ok(0) => return Err("the client closed before its header was whole".into()),
            Ok(n) => n,
            Err(e) if interrupted(&e) => continue, // a signal: read again
            Err(e) if timed_out(&e) => continue,   // the deadline check above answers it
            Err(e) => return Err(e.to_string()),
        };
        match feed(&mut decoder, &buf[..n], peer) {
            HeaderStep::NeedMore => {}
            HeaderStep::Done { client, payload } => {
                socket.set_read_timeout(idle_timeout).map_err(|e| e.to_string())?;
                return Ok((client, payload..n));
            }
            HeaderStep::Invalid(why) => return Err(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    fn peer() -> Peer {
        Peer(Some("127.0.0.1:5000".parse().unwrap()))
    }

    #[test]
    fn the_header_names_the_client_and_local_keeps_the_peer() {
        let mut decoder = ProxyDecoder::new();
        let step = feed(&mut decoder, b"PROXY TCP4 203.0.113.7 192.0.2.1 4000 7\r\nhi", peer());
        let client: SocketAddr = "203.0.113.7:4000".parse().unwrap();
        assert_eq!(step, HeaderStep::Done { client: Peer(Some(client)), payload: 41 });
        let local = [&b"\r\n\r\n\0\r\nQUIT\n"[..], &[0x20, 0x00, 0, 0]].concat();
        assert_eq!(
            feed(&mut ProxyDecoder::new(), &local, peer()),
            HeaderStep::Done { client: peer(), payload: 16 }
        );
        assert!(matches!(feed(&mut ProxyDecoder::new(), b"GET /", peer()), HeaderStep::Invalid(_)));
        assert_eq!(feed(&mut ProxyDecoder::new(), b"PROXY TC", peer()), HeaderStep::NeedMore);
    }

    /// A pair of blocking TCP sockets: (ours as a `BlockingStream`, the client's).
    fn pair() -> (BlockingStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (BlockingStream::Tcp(listener.accept().unwrap().0), client)
    }

    #[test]
    fn blocking_reads_a_split_header_and_returns_what_follows() {
        let (ours, mut client) = pair();
        let writer = std::thread::spawn(move || {
            for part in [&b"PROXY TCP4 203.0.113.7 "[..], b"192.0.2.1 4000 7\r", b"\nfirst bytes"] {
                client.write_all(part).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            client
        });
        let mut buf = [0u8; 1024];
        let (client_peer, rest) =
            read_blocking(&ours, &mut buf, peer(), Duration::from_secs(5), None).unwrap();
        assert_eq!(client_peer, Peer(Some("203.0.113.7:4000".parse().unwrap())));
        assert_eq!(&buf[rest], b"first bytes");
        drop(writer.join().unwrap());
    }

    #[test]
    fn blocking_refuses_a_late_or_closed_header() {
        let (ours, mut client) = pair();
        client.write_all(b"PROXY TCP4 ").unwrap();
        let started = Instant::now();
        let why = read_blocking(&ours, &mut [0u8; 64], peer(), Duration::from_millis(200), None).unwrap_err();
        assert!(why.contains("--proxy-timeout") && started.elapsed() >= Duration::from_millis(200), "{why}");
        drop(client);
        let why = read_blocking(&ours, &mut [0u8; 64], peer(), Duration::from_secs(5), None).unwrap_err();
        assert!(why.contains("closed"), "{why}");
    }
}
