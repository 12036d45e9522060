//! `--mode idle`: open connections and hold them, watching for any the server closes (for
//! memory-per-connection studies).

use std::io::{self, ErrorKind, Read};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::EVENTS_CAPACITY;
use super::connect::connect_all;
use crate::framing::Framing;
use crate::progress::Progress;
use crate::proxy::ProxyVersion;
use crate::stream::Stream;
use crate::target::Target;

/// What one idle run saw.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// The server's address.
    pub target: String,
    /// Connections asked for.
    pub requested: usize,
    /// Connections that were opened and answered their ping.
    pub connected: usize,
    /// Connections that could not be opened (or did not answer).
    pub failed: usize,
    /// Connections the server closed while they were held.
    pub dropped: usize,
    /// Connections still open at the end.
    pub held: usize,
    /// Seconds the connect phase took.
    pub connect_s: f64,
    /// Seconds they were held.
    pub duration_s: f64,
    /// The first error, for the reader.
    pub first_error: Option<String>,
}

impl IdleReport {
    /// Every connection asked for was opened and held to the end.
    pub fn is_clean(&self) -> bool {
        self.held == self.requested
    }
}

/// Open `count` connections to `target` and hold them, for memory studies; [`IdleSet::hold`]
/// then watches them for a while.
pub fn open_idle(
    target: &Target,
    count: usize,
    framing: Framing,
    proxy: Option<ProxyVersion>,
    timeout: Duration,
    progress: &Progress,
) -> io::Result<IdleSet> {
    let connected = connect_all(target, count, framing.ping(), proxy, timeout, progress);
    if connected.streams.is_empty() {
        return Err(connected.into_error());
    }
    let poll = Poll::new()?;
    let mut streams = Vec::with_capacity(connected.streams.len());
    for (i, mut stream) in connected.streams.into_iter().enumerate() {
        // Only READABLE: an idle connection becomes readable only if the server closes it.
        poll.registry().register(&mut stream, Token(i), Interest::READABLE)?;
        streams.push(Some(stream));
    }
    Ok(IdleSet {
        target: target.to_string(),
        requested: count,
        failed: connected.failed,
        first_error: connected.first_error,
        connect_time: connected.elapsed,
        poll,
        streams,
    })
}

/// Connections held open and otherwise left alone.
pub struct IdleSet {
    target: String,
    requested: usize,
    failed: usize,
    first_error: Option<String>,
    connect_time: Duration,
    poll: Poll,
    /// `None` once the server has closed that connection.
    streams: Vec<Option<Stream>>,
}

impl IdleSet {
    /// Connections open right now (as far as we have seen).
    pub fn held(&self) -> usize {
        self.streams.iter().flatten().count()
    }

    /// Connections that could not be opened (or did not answer).
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Connections that were opened.
    pub fn opened(&self) -> usize {
        self.streams.len()
    }

    /// How long opening them took.
    pub fn connect_time(&self) -> Duration {
        self.connect_time
    }

    /// Hold the connections for `duration`, counting those the server closes, then close
    /// them all (on drop), with a reset ([`reset_on_close`]). Even with a zero `duration`,
    /// it looks once: what the server closed earlier waits in the epoll ready list.
    pub fn hold(mut self, duration: Duration) -> io::Result<IdleReport> {
        let connected = self.streams.len();
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let end = Instant::now() + duration;
        let mut left = duration;
        loop {
            match self.poll.poll(&mut events, Some(left)) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {} // a signal: no events; check the time
                result => result?,
            }
            for event in events.iter() {
                let slot = &mut self.streams[event.token().0];
                if slot.as_mut().is_some_and(server_closed) {
                    *slot = None; // dropping it closes our end too
                }
            }
            match end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                Some(more) => left = more,
                None if events.is_empty() => break,
                None => left = Duration::ZERO, // a full batch: look again, without waiting
            }
        }
        let held = self.held();
        self.streams.iter().flatten().for_each(reset_on_close);
        Ok(IdleReport {
            target: self.target,
            requested: self.requested,
            connected,
            failed: self.failed,
            dropped: connected - held,
            held,
            connect_s: self.connect_time.as_secs_f64(),
            duration_s: duration.as_secs_f64(),
            first_error: self.first_error,
        })
    }
}

/// Make the close of a held TCP connection a reset (`SO_LINGER` of 0) instead of a FIN.
/// Closed the usual way, a crowd of N connections leaves N sockets in TIME_WAIT on this
/// machine for a minute: they hold ports and memory, and then expire together, a burst of
/// kernel work that lands in whatever runs next (a latency measurement, say). A held
/// connection owes nothing to anyone, so a reset loses nothing. A failure only means the
/// socket is already gone.
fn reset_on_close(stream: &Stream) {
    if let Stream::Tcp(tcp) = stream {
        let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
    }
}

/// Drain an idle connection that turned readable: did the server close it?
fn server_closed(stream: &mut Stream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an echo server has no reason to talk first; ignore it
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false, // drained, still open
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true, // reset
        }
    }
}
