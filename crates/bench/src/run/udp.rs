//! `echoloop bench udp:ADDR`: datagrams to an RFC 862 UDP echo service.
//!
//! UDP may drop, duplicate or reorder datagrams, so each one carries its sequence number in
//! its first 8 bytes (big-endian), then a stretch of the pattern; a reply is matched to what
//! was sent by that number, wherever it arrives. A reply with a wrong byte (or a wrong
//! length, or a number never sent, or a second reply to one datagram) is a **mismatch**,
//! and fails the run. A datagram with no reply within `--connect-timeout` is **lost**: it
//! is counted, not treated as corruption, because losing datagrams is what UDP may do. A
//! reply that turns up after that is counted as late, not matched.
//!
//! Measured: the datagrams sent inside the window. Each socket (`--connections`) keeps
//! `--pipeline` datagrams in flight (closed loop), or sends on schedule (`--rate`). A closed
//! loop may send in trains ([`run_udp`]): a new train of that many datagrams once as
//! many have settled. Sending and receiving are batched (`udp_io`), so that the generator
//! costs the kernel less per datagram than the server it measures.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::generator::{self, Usage, on_threads};
use super::udp_io::{self, BATCH};
use super::{Cpu, EVENTS_CAPACITY, EchoReport, Load, Plan, TIMER};
use crate::framing::Framing;
use crate::histogram::{Latency, RoundTrips};
use crate::pattern::{PERIOD, Pattern};
use crate::progress::Progress;
use crate::schedule::{Pacing, RateReport, Schedule};
use crate::target::Target;
use crate::timer::Timer;

/// The sequence number at the start of every datagram.
const SEQ: usize = 8;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// The longest a poll sleeps, so that lost datagrams are noticed on time.
const LOSS_CHECK: Duration = Duration::from_millis(20);

/// What one UDP run measured. Counts are of datagrams sent inside the window.
#[derive(Debug, Clone, Serialize)]
pub struct UdpReport {
    /// The service's address (`udp:...`).
    pub target: String,
    /// Sockets sending.
    pub sockets: usize,
    /// Bytes per datagram (the smallest, when sizes vary).
    pub size: usize,
    /// The largest datagram.
    pub size_max: usize,
    /// Closed loop: datagrams in flight per socket.
    pub pipeline: usize,
    /// Load-generator threads.
    pub threads: usize,
    /// Seconds of warm-up.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// A datagram unanswered for this long is lost.
    pub loss_timeout_s: f64,
    /// Datagrams sent inside the window.
    pub sent: u64,
    /// Of those, echoed back exactly.
    pub echoed: u64,
    /// Of those, never answered within the loss timeout.
    pub lost: u64,
    /// Replies with a wrong byte or length, a number never sent, or a duplicate.
    pub mismatches: u64,
    /// Replies that came after their datagram was counted lost.
    pub late_replies: u64,
    /// `echoed` per second.
    pub msgs_per_s: f64,
    /// Echoed payload, MiB per second.
    pub mib_per_s: f64,
    /// Round trips of the echoed datagrams (open loop: from each one's due time).
    pub latency: Latency,
    /// Open loop (`--rate`): asked beside achieved.
    pub rate: Option<RateReport>,
    /// Socket errors (a refused port, for one: nothing listens there).
    pub errors: u64,
    /// The first error, for the reader.
    pub first_error: Option<String>,
    /// CPU use over the window.
    #[serde(flatten)]
    pub cpu: Cpu,
    /// False when the load generator may have been the bottleneck (see `warnings`).
    pub valid: bool,
    /// Why the run is not valid, one sentence each; empty when it is.
    pub warnings: Vec<String>,
}

impl UdpReport {
    /// No wrong reply and no socket error (losses are allowed).
    pub fn is_clean(&self) -> bool {
        self.mismatches == 0 && self.errors == 0
    }

    /// The run as an echo run, for `--compare`'s table: sockets as connections, datagrams as
    /// messages, and a lost datagram as an error (on loopback, with a closed loop, nothing
    /// should be lost: a loss is a server that dropped a datagram).
    pub fn as_echo(&self) -> EchoReport {
        let lost = (self.lost > 0)
            .then(|| format!("{} datagrams lost (no reply within {}s)", self.lost, self.loss_timeout_s));
        EchoReport {
            target: self.target.clone(),
            requested: self.sockets,
            connections: self.sockets,
            size: self.size,
            size_max: self.size_max,
            framing: Framing::Raw,
            pipeline: self.pipeline,
            threads: self.threads,
            spin: false,
            warmup_s: self.warmup_s,
            duration_s: self.duration_s,
            msgs: self.echoed,
            total_msgs: self.echoed,
            msgs_per_s: self.msgs_per_s,
            mib_per_s: self.mib_per_s,
            latency: self.latency,
            rate: self.rate,
            errors: self.errors + self.lost,
            mismatches: self.mismatches,
            first_error: self.first_error.clone().or(lost),
            cpu: self.cpu.clone(),
            valid: self.valid,
            warnings: self.warnings.clone(),
        }
    }
}

/// Check what only UDP asks of a load.
fn validate(load: &Load) -> Result<(), String> {
    if load.framing != Framing::Raw {
        return Err("--framing is for stream targets; a datagram is its own frame".into());
    }
    if load.sizes.min < SEQ || load.sizes.max > MAX_DATAGRAM {
        return Err(format!(
            "--size must be between {SEQ} (each datagram starts with an 8-byte sequence number) and {MAX_DATAGRAM} bytes for UDP"
        ));
    }
    load.validate()
}

/// Send datagrams to the UDP echo service at `addr` as `load` says. A closed loop sends in
/// trains of `train` datagrams (1: each as it is due): each socket starts with `--pipeline`
/// in flight, and sends the next train once `train` have settled; a train goes to the
/// kernel as one message where it can split it (GSO).
pub fn run_udp(
    addr: SocketAddr,
    load: &Load,
    train: usize,
    watch: Option<u32>,
    progress: &Progress,
) -> io::Result<UdpReport> {
    validate(load).map_err(|msg| io::Error::new(ErrorKind::InvalidInput, msg))?;
    let mut sockets = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        sockets.push(open_socket(addr)?);
    }
    let pattern = Pattern::new();
    let plan = Plan::starting_now(load);
    let workers = load.threads.clamp(1, load.connections);
    let mut shares: Vec<Vec<(u64, UdpSocket)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, socket) in sockets.into_iter().enumerate() {
        shares[i % workers].push((i as u64, socket));
    }
    let (tallies, usage) =
        on_threads(&plan, shares, &load.pin, watch, progress, None, |w, share, completed| {
            let schedule = plan.schedule(share.len(), w, workers);
            Sender::new(&plan, &pattern, share, train)?.run(schedule, completed)
        })?;
    let mut total = UdpTally::default();
    for tally in tallies {
        total.merge(tally?);
    }
    Ok(UdpReport::new(addr, load, &total, usage))
}

/// A socket of `addr`'s family, connected to it: it then receives only from the service,
/// and an ICMP "port unreachable" shows as a refused `recv`. It binds the unspecified
/// address, so the kernel picks the local address its route to the service needs
/// (loopback for a loopback service, an interface's own for another host).
fn open_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let named = |e: io::Error| io::Error::new(e.kind(), format!("udp:{addr}: {e}"));
    let socket = UdpSocket::bind(local).map_err(named)?;
    socket.connect(addr).map_err(named)?;
    Ok(socket)
}

impl UdpReport {
    fn new(addr: SocketAddr, load: &Load, total: &UdpTally, usage: Usage) -> UdpReport {
        let secs = load.duration.as_secs_f64();
        let rate = load.rate.map(|asked| RateReport::new(asked, &total.pacing, total.echoed, secs));
        let cpu = usage.cpu_all(load);
        let warnings = generator::warnings(&cpu, rate.as_ref());
        UdpReport {
            target: Target::Udp(addr).to_string(),
            sockets: load.connections,
            size: load.sizes.min,
            size_max: load.sizes.max,
            pipeline: load.pipeline,
            threads: load.threads,
            warmup_s: load.warmup.as_secs_f64(),
            duration_s: secs,
            loss_timeout_s: load.connect_timeout.as_secs_f64(),
            sent: total.pacing.sent,
            echoed: total.echoed,
            lost: total.lost,
            mismatches: total.mismatches,
            late_replies: total.late_replies,
            msgs_per_s: total.echoed as f64 / secs,
            mib_per_s: total.echoed_bytes as f64 / secs / f64::from(1 << 20),
            latency: total.round_trips.latency(),
            rate,
            errors: total.errors,
            first_error: total.first_error.clone(),
            cpu,
            valid: warnings.is_empty(),
            warnings,
        }
    }
}

/// What one thread counted.
#[derive(Default)]
struct UdpTally {
    echoed: u64,
    echoed_bytes: u64,
    lost: u64,
    mismatches: u64,
    late_replies: u64,
    errors: u64,
    first_error: Option<String>,
    round_trips: RoundTrips,
    pacing: Pacing,
    /// All replies matched, at any time (for the progress bar).
    completed: u64,
}

impl UdpTally {
    fn error(&mut self, e: &io::Error, addr: SocketAddr) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| match e.kind() {
            ErrorKind::ConnectionRefused => format!("udp:{addr}: nothing answers there ({e})"),
            _ => format!("udp:{addr}: {e}"),
        });
    }

    fn merge(&mut self, other: UdpTally) {
        self.echoed += other.echoed;
        self.echoed_bytes += other.echoed_bytes;
        self.lost += other.lost;
        self.mismatches += other.mismatches;
        self.late_replies += other.late_replies;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.round_trips.merge(&other.round_trips);
        self.pacing.merge(&other.pacing);
    }
}

/// A datagram sent and not yet settled.
struct InFlight {
    seq: u64,
    len: usize,
    /// Its round trip counts from here (sent, or due).
    at: Instant,
    /// Sent inside the window: it counts.
    measured: bool,
    answered: bool,
}

/// One socket's datagrams.
struct Peer {
    socket: UdpSocket,
    origin: u64,
    next_seq: u64,
    /// Oldest first; settled ones leave from the front.
    in_flight: VecDeque<InFlight>,
    /// Datagrams due but not yet taken by the kernel (its buffer was full), by their time.
    backlog: VecDeque<Instant>,
    sizes: u64,
    /// Closed loop: datagrams settled since the last train was released.
    settled: usize,
    /// The kernel splits trains sent on this socket (GSO).
    gso: bool,
}

/// One load-generator thread's sockets and their event loop.
struct Sender<'a> {
    plan: &'a Plan,
    pattern: &'a Pattern,
    poll: Poll,
    peers: Vec<Peer>,
    /// Where a batch of datagrams is laid out, back to back, to be sent.
    wire: Vec<u8>,
    /// Where replies land; taken out while they are settled.
    rx: Option<Box<udp_io::Receiver>>,
    /// Datagrams per train (closed loop); 1 sends each as it is due.
    train: usize,
    tally: UdpTally,
}

impl<'a> Sender<'a> {
    fn new(
        plan: &'a Plan,
        pattern: &'a Pattern,
        share: Vec<(u64, UdpSocket)>,
        train: usize,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut peers = Vec::with_capacity(share.len());
        for (i, (id, mut socket)) in share.into_iter().enumerate() {
            poll.registry().register(&mut socket, Token(i), Interest::READABLE | Interest::WRITABLE)?;
            let origin = id.wrapping_mul(81_799) % PERIOD as u64;
            let sizes = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let gso = udp_io::enable_offload(socket.as_fd());
            let (in_flight, backlog) = (VecDeque::new(), VecDeque::new());
            peers.push(Peer { socket, origin, next_seq: 0, in_flight, backlog, sizes, settled: 0, gso });
        }
        Ok(Sender {
            plan,
            pattern,
            poll,
            peers,
            wire: vec![0; BATCH * plan.sizes.max],
            rx: Some(Box::new(udp_io::Receiver::new())),
            train: train.max(1),
            tally: UdpTally::default(),
        })
    }

    /// Until the end, and then until every datagram sent in the window is settled.
    fn run(mut self, mut schedule: Option<Schedule>, completed: &AtomicU64) -> io::Result<UdpTally> {
        let mut timer = Timer::new()?;
        if schedule.is_some() {
            self.poll.registry().register(&mut timer, TIMER, Interest::READABLE)?;
        } else {
            for peer in 0..self.peers.len() {
                let start = self.plan.start;
                self.peers[peer].backlog.extend(std::iter::repeat_n(start, self.plan.pipeline));
                self.flush(peer);
            }
        }
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let now = Instant::now();
            if let Some(schedule) = &mut schedule {
                self.release_due(schedule, now);
                if schedule.next_due() < self.plan.end {
                    timer.fire_in(schedule.next_due().saturating_duration_since(now))?;
                }
            }
            self.expire(now);
            let Some(timeout) = self.timeout(now) else { break };
            match self.poll.poll(&mut events, Some(timeout)) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal; poll again
                result => result?,
            }
            let before = self.tally.completed;
            for event in events.iter() {
                match event.token() {
                    TIMER => timer.clear(),
                    Token(peer) => {
                        self.receive(peer);
                        self.flush(peer);
                    }
                }
            }
            completed.fetch_add(self.tally.completed - before, Ordering::Relaxed);
        }
        Ok(self.tally)
    }

    /// How long to poll: until the end, then while datagrams of the window are unsettled;
    /// never longer than [`LOSS_CHECK`].
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let unsettled = self.peers.iter().any(|p| p.in_flight.iter().any(|d| d.measured && !d.answered));
        if now >= self.plan.end && !unsettled {
            return None;
        }
        Some(if self.plan.spin { Duration::ZERO } else { LOSS_CHECK })
    }

    /// Open loop: queue every datagram due by now on the socket whose turn it is.
    fn release_due(&mut self, schedule: &mut Schedule, now: Instant) {
        while let Some((tick, due)) = schedule.take_due(now, self.plan.end) {
            let peer = (tick % self.peers.len() as u64) as usize;
            self.tally.pacing.taken(due, now, self.plan.is_measuring(due));
            self.peers[peer].backlog.push_back(due);
            self.flush(peer);
        }
    }

    /// Send the socket's backlog, a batch at a time, until the kernel refuses (a WRITABLE
    /// event brings us back).
    fn flush(&mut self, peer: usize) {
        let now = Instant::now();
        loop {
            let p = &mut self.peers[peer];
            let count = p.backlog.len().min(BATCH);
            if count == 0 {
                return;
            }
            let (mut lens, mut end) = ([0; BATCH], 0);
            for (i, len) in lens.iter_mut().take(count).enumerate() {
                *len = self.plan.sizes.pick(&mut p.sizes);
                fill(self.pattern, p.origin, p.next_seq + i as u64, &mut self.wire[end..end + *len]);
                end += *len;
            }
            match udp_io::send(p.socket.as_fd(), &self.wire[..end], &lens[..count], self.train, p.gso) {
                Ok(sent) => {
                    for &len in &lens[..sent] {
                        let at = p.backlog.pop_front().unwrap_or(now);
                        let measured = self.plan.is_measuring(at);
                        p.in_flight.push_back(InFlight {
                            seq: p.next_seq,
                            len,
                            at,
                            measured,
                            answered: false,
                        });
                        p.next_seq += 1;
                        self.tally.pacing.sent += u64::from(measured && now < self.plan.end);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return, // full; WRITABLE will come
                Err(e) if e.kind() == ErrorKind::Interrupted => {}     // a signal; retry
                Err(e) => {
                    let addr = p.socket.peer_addr().unwrap_or_else(|_| (Ipv4Addr::UNSPECIFIED, 0).into());
                    p.backlog.pop_front(); // this one is not sent; the error is counted
                    self.tally.error(&e, addr);
                }
            }
        }
    }

    /// Read every reply waiting on the socket, a batch at a time, and settle the datagrams
    /// they answer.
    fn receive(&mut self, peer: usize) {
        let Some(mut rx) = self.rx.take() else { return };
        loop {
            match rx.recv(self.peers[peer].socket.as_fd()) {
                Ok(taken) => {
                    let now = Instant::now();
                    rx.datagrams().for_each(|reply| self.settle(peer, reply, now));
                    if taken < BATCH {
                        break; // it emptied the queue: the next reply raises a new event
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break, // drained
                Err(e) if e.kind() == ErrorKind::Interrupted => {}    // a signal; retry
                Err(e) => {
                    let p = &self.peers[peer];
                    let addr = p.socket.peer_addr().unwrap_or_else(|_| (Ipv4Addr::UNSPECIFIED, 0).into());
                    self.tally.error(&e, addr);
                    break;
                }
            }
        }
        self.rx = Some(rx);
    }

    /// A reply arrived at `now`.
    fn settle(&mut self, peer: usize, reply: &[u8], now: Instant) {
        let p = &mut self.peers[peer];
        let Some(seq) = reply.get(..SEQ).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default())) else {
            self.tally.mismatches += 1; // too short to be anything we sent
            return;
        };
        let oldest = p.in_flight.front().map_or(p.next_seq, |d| d.seq);
        if seq < oldest {
            self.tally.late_replies += 1; // already counted lost (or a duplicate of a settled one)
            return;
        }
        let Some(datagram) = p.in_flight.get_mut((seq - oldest) as usize) else {
            self.tally.mismatches += 1; // a number never sent
            return;
        };
        let exact = reply.len() == datagram.len && matches(self.pattern, p.origin, seq, reply);
        if datagram.answered || !exact {
            self.tally.mismatches += 1;
        } else if datagram.measured {
            self.tally.echoed += 1;
            self.tally.echoed_bytes += reply.len() as u64;
            self.tally.round_trips.record(now.saturating_duration_since(datagram.at));
        }
        datagram.answered = true;
        self.tally.completed += 1;
        self.settle_front(peer, now);
    }

    /// Drop settled datagrams from the front; closed loop, send one new for each.
    fn settle_front(&mut self, peer: usize, now: Instant) {
        let mut settled = 0;
        while self.peers[peer].in_flight.front().is_some_and(|d| d.answered) {
            self.peers[peer].in_flight.pop_front();
            settled += 1;
        }
        self.replace(peer, settled, now);
    }

    /// Closed loop, before the end: new datagrams in place of `count` settled ones, a whole
    /// train at a time. The caller flushes.
    fn replace(&mut self, peer: usize, count: usize, now: Instant) {
        if self.plan.rate.is_none() && now < self.plan.end && count > 0 {
            let p = &mut self.peers[peer];
            p.settled += count;
            let due = p.settled - p.settled % self.train;
            p.settled -= due;
            p.backlog.extend(std::iter::repeat_n(now, due));
        }
    }

    /// Count as lost every datagram unanswered for the loss timeout.
    fn expire(&mut self, now: Instant) {
        let limit = self.plan.connect_timeout;
        for peer in 0..self.peers.len() {
            let mut lost = 0;
            while let Some(d) = self.peers[peer].in_flight.front() {
                if !d.answered && now.saturating_duration_since(d.at) < limit {
                    break;
                }
                let d = self.peers[peer].in_flight.pop_front().expect("front exists");
                if !d.answered {
                    lost += 1;
                    self.tally.lost += u64::from(d.measured);
                }
            }
            self.replace(peer, lost, now);
            self.flush(peer);
        }
    }
}

/// Datagram number `seq` of a socket whose stream sits at `origin` in the pattern: the
/// number, then the pattern from a place that moves with it.
fn fill(pattern: &Pattern, origin: u64, seq: u64, out: &mut [u8]) {
    out[..SEQ].copy_from_slice(&seq.to_be_bytes());
    let body = out.len() - SEQ;
    out[SEQ..].copy_from_slice(pattern.window(origin + seq.wrapping_mul(7_919) % PERIOD as u64, body));
}

/// Is `reply` exactly datagram `seq`?
fn matches(pattern: &Pattern, origin: u64, seq: u64, reply: &[u8]) -> bool {
    reply[..SEQ] == seq.to_be_bytes()
        && reply[SEQ..]
            == *pattern.window(origin + seq.wrapping_mul(7_919) % PERIOD as u64, reply.len() - SEQ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_carries_its_number_and_only_matches_itself() {
        let pattern = Pattern::new();
        let mut datagram = vec![0; 100];
        fill(&pattern, 5, 42, &mut datagram);
        assert_eq!(datagram[..8], 42u64.to_be_bytes());
        assert!(matches(&pattern, 5, 42, &datagram));
        assert!(!matches(&pattern, 5, 43, &datagram), "another number");
        datagram[99] ^= 1;
        assert!(!matches(&pattern, 5, 42, &datagram), "a flipped byte");
    }

    #[test]
    fn udp_loads_need_room_for_the_number_and_no_framing() {
        let load = Load::closed(1, 8, 1);
        assert_eq!(validate(&load), Ok(()));
        assert!(validate(&Load::closed(1, 7, 1)).unwrap_err().contains("8-byte sequence number"));
        assert!(validate(&Load::closed(1, MAX_DATAGRAM + 1, 1)).is_err());
        assert!(validate(&Load { framing: Framing::Line, ..load }).is_err());
    }
}
