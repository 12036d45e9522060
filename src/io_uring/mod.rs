//! The completion model (Linux): one thread, one io_uring, every connection in a `Slab`.
//!
//! ## Readiness and completion
//!
//! The event loop asks the kernel *"which sockets could I read or write now?"* (`epoll`,
//! readiness) and then does the I/O itself: per echoed message one `epoll_wait` (shared by
//! all the sockets it reports), one `read`, one `write`: at least two system calls, each a
//! trip into the kernel and back. This model tells the kernel *"receive into one of these
//! buffers, send these bytes, and tell me when it is done"* (io_uring, completion): requests
//! go into a submission queue in memory shared with the kernel, results come back through a
//! completion queue, and one `io_uring_enter` per loop turn hands over every request queued
//! since the last and waits for results. However many connections moved in a turn, that is
//! one system call.
//!
//! ```text
//!   arm: multishot accept on the listener, a poll on the shutdown eventfd
//!   loop {
//!       io_uring_enter(submit everything queued, wait for 1 completion or the next timer)
//!       for each completion:
//!           Accept    -> admit the new socket, queue its first recv        (accept.rs)
//!           Recv(key) -> send straight out of the provided buffer, or queue the bytes
//!                        behind the send in flight; queue the next recv     (connection.rs)
//!           Send(key) -> the rest of a short send to the outbox, queue the next send
//!           DatagramRecv, DatagramSend -> a UDP socket's datagram, a reply  (udp.rs)
//!           Wake      -> begin shutdown
//!       expire idle connections, resume accepting after EMFILE, end shutdown when done
//!   }
//! ```
//!
//! What changes for the programmer is *ownership*: a buffer handed to the kernel is the
//! kernel's until its completion arrives. So memory a request points at must not move or be
//! freed while the request is in flight ([`connection`] keeps one stable outbox per
//! connection for that), and a connection's slab slot is freed only after its last
//! completion (`close` cancels what is in flight and waits). Receive buffers come from a
//! provided-buffer ring ([`buffers`]): the kernel picks one when bytes arrive, so an idle
//! connection with a recv armed holds no buffer, as in the event loop.
//!
//! Nothing here blocks but `io_uring_enter`. Results arrive as negative errno values in
//! completions; each is handled where it arrives: ENOBUFS (the buffer ring was empty for a
//! moment: recv again), EINTR and EAGAIN (nothing happened: try again, or, for the send
//! with `MSG_DONTWAIT`, "the socket is full": the bytes go to the outbox), ECANCELED (we
//! cancelled it: the connection is closing or the server is stopping).

mod accept;
mod buffers;
mod connection;
mod names;
mod op;
mod ring;
mod udp;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::cqueue;
use log::{debug, info, trace, warn};
use slab::Slab;

use crate::addr::ListenAddr;
use crate::config::ServerConfig;
use crate::error::Error;
use crate::framing::Framer;
use crate::lifecycle::linger::LINGER_CHECK;
use crate::lifecycle::{Admission, Clock, ConnId, IdleTimers, proxy_header, release_crowd};
use crate::listening::Listening;
use crate::net::{AcceptBackoff, ListenSocket, StdListener};
use crate::notify::WatchdogTimer;
use crate::shutdown::ShutdownHandle;
use crate::stats::{ClientEvent, IoTally, Stats};
use buffers::BufRing;
use connection::{BufferUse, Connection, Phase, Sending, Turn};
use op::Op;
use ring::Ring;
use udp::UdpPorts;

/// After the grace period, how long cancelled requests may take to complete before we stop
/// waiting (and leak their memory rather than free it under the kernel).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Listeners one loop serves: a connection keeps its listener's number in 16 bits.
const MAX_LISTENERS: usize = 1 << 16;

/// Can this kernel run the model? One line naming what is missing if not.
pub(crate) fn probe() -> Result<(), Error> {
    ring::probe().map_err(Error::Io)
}

/// Where the server is in stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    /// Serving.
    No,
    /// Not accepting or receiving; owed echoes may flush until `until`.
    Grace { until: Instant },
    /// Every connection is being closed; their cancelled requests complete by `until`.
    Draining { until: Instant },
}

/// One single-threaded io_uring echo server: made (ring and buffers allocated) when the
/// server binds, run on whichever thread calls [`UringLoop::run`].
pub(crate) struct UringLoop {
    /// The ring and the provided receive buffers.
    ring: Ring,
    /// The stream listeners, each with its multishot accept (`Op::Accept(i)`).
    acceptors: Vec<Acceptor>,
    /// The UDP sockets, each with its multishot recvmsg, and the replies in flight.
    udp: UdpPorts,
    /// The first listener's counters, which carry the loop's turns (for /livez).
    turns: Arc<Stats>,
    /// After EMFILE and friends, accepting pauses; this says until when, and logs it.
    accept_backoff: AcceptBackoff,
    /// The eventfd a shutdown request writes to; the ring polls it.
    wake: WakeFd,
    /// Live connections (and closing ones whose requests are still in flight).
    connections: Slab<Connection>,
    /// Idle deadlines, when `--idle-timeout` is on (slab key = `ConnId`); their only owner.
    idle: Option<IdleTimers>,
    /// Milliseconds since the loop began: the connections' `last_active` stamps.
    clock: Clock,
    /// Where frames end, the same for every connection: lent to each in its [`Turn`].
    framer: Framer,
    /// The most a connection may hold (`--max-pending`, raised to one whole frame).
    cap: usize,
    /// With `--proxy-protocol`: each connection's deadline for its whole PROXY header
    /// (its `last_active` stays its accept time until the header is whole).
    header_deadlines: Option<IdleTimers>,
    stopping: Stopping,
    /// Completions of this turn, reused between turns.
    completions: Vec<cqueue::Entry>,
    /// Recvs that found the buffer ring empty (for the debug log at exit).
    ring_empty: u64,
    shutdown: ShutdownHandle,
    config: ServerConfig,
    /// Pings the service manager's watchdog from this loop, if it asked.
    watchdog: Option<WatchdogTimer>,
}

/// One stream listener of the loop, and what its connections did this turn.
struct Acceptor {
    /// `None` once shutting down (closed: no more connections are taken).
    listener: Option<StdListener>,
    /// Its address, for the logs.
    addr: ListenAddr,
    /// TCP (or Unix): which socket type accepted descriptors are.
    is_tcp: bool,
    /// Its multishot accept is in the kernel.
    armed: bool,
    /// `--max-connections` and the socket options of an accepted connection.
    admission: Admission,
    /// Its counters (shared with the statistics reporter).
    stats: Arc<Stats>,
    /// This turn's reads and sends of its connections, added to `stats` once per turn.
    tally: IoTally,
}

impl UringLoop {
    /// Allocate everything the loop needs (the ring, the receive buffers, the eventfd) for
    /// `listeners`, streams and UDP sockets, so a refusal comes before the server announces
    /// itself; one line that names the setting if the buffers cannot be had.
    pub(crate) fn new(
        listeners: Vec<Listening>,
        config: &ServerConfig,
        shutdown: &ShutdownHandle,
    ) -> io::Result<UringLoop> {
        if listeners.len() > MAX_LISTENERS {
            let msg =
                format!("{} listeners: one io_uring loop serves at most {MAX_LISTENERS}", listeners.len());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let turns = listeners.first().map(|listening| Arc::clone(&listening.stats));
        let turns = turns.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no listener"))?;
        let (mut acceptors, mut datagram_sockets) = (Vec::new(), Vec::new());
        for listening in listeners {
            match listening.socket {
                ListenSocket::Stream(listener) => acceptors.push(Acceptor {
                    is_tcp: matches!(listener, StdListener::Tcp(_)),
                    listener: Some(listener),
                    addr: listening.addr,
                    armed: false,
                    admission: Admission::new(config, Arc::clone(&listening.stats)),
                    stats: listening.stats,
                    tally: IoTally::default(),
                }),
                ListenSocket::Datagram(socket) => {
                    datagram_sockets.push((socket, listening.addr, listening.stats))
                }
            }
        }
        let mut ring = Ring::new(receive_buffers(config)?, config.uring_recv)?;
        let udp = UdpPorts::new(datagram_sockets, config, &mut ring)?;
        let wake = WakeFd::new(shutdown)?;
        debug!("io_uring: {} provided buffers of {} bytes", config.uring_buffers, config.uring_buffer_size);
        debug!("io_uring: receiving with {}", ring.recv_mode().describe());
        let clock = Clock::new(Instant::now());
        Ok(UringLoop {
            ring,
            acceptors,
            udp,
            turns,
            accept_backoff: AcceptBackoff::default(),
            wake,
            connections: Slab::new(),
            idle: config.idle_timeout.map(|timeout| IdleTimers::new(timeout, clock)),
            clock,
            framer: config.framer(),
            cap: config.connection_cap(),
            header_deadlines: config.proxy_protocol.then(|| IdleTimers::new(config.proxy_timeout, clock)),
            stopping: Stopping::No,
            completions: Vec::new(),
            ring_empty: 0,
            shutdown: shutdown.clone(),
            config: config.clone(),
            watchdog: None,
        })
    }

    /// Serve on this thread until a shutdown request has been carried out, sending
    /// `watchdog`'s pings from this loop as it turns.
    pub(crate) fn run(mut self, watchdog: Option<WatchdogTimer>) -> io::Result<()> {
        self.watchdog = watchdog;
        self.ring.enable()?; // this thread is now the ring's one submitter
        self.arm_wake()?;
        self.arm_accepts()?;
        self.udp.arm(&mut self.ring)?;
        loop {
            let timeout = self.wait_timeout(Instant::now());
            // For /livez: a loop asleep in the ring is not stuck.
            self.turns.loop_waiting();
            self.ring.enter(timeout)?; // the only place we wait: submit all, reap at least one
            let now = Instant::now();
            self.turns.loop_busy(now);
            let mut completions = std::mem::take(&mut self.completions);
            self.ring.reap(&mut completions);
            for cqe in &completions {
                self.dispatch(cqe, now)?;
            }
            self.completions = completions;
            self.publish_counts(); // once per turn, not per message
            self.run_timers(now)?;
            if self.shutdown_complete(now)? {
                debug!("io_uring: {} recvs found the buffer ring empty", self.ring_empty);
                self.publish_counts();
                return Ok(());
            }
        }
    }

    /// One completion to the one place that handles it.
    fn dispatch(&mut self, cqe: &cqueue::Entry, now: Instant) -> io::Result<()> {
        let (result, flags) = (cqe.result(), cqe.flags());
        trace!("completion {}", names::completion(cqe, &self.connections, &self.acceptors));
        match Op::decode(cqe.user_data()) {
            Some(Op::Accept(i)) if i < self.acceptors.len() => self.on_accept(i, result, flags, now),
            Some(Op::Wake) => self.on_wake(now),
            Some(Op::Cancel) => Ok(()), // its target reports for itself
            Some(Op::Recv(key)) => self.on_recv(key, result, flags, now),
            Some(Op::Send(key)) => self.on_send(key, result, now),
            Some(Op::DatagramRecv(i)) => self.udp.on_recv(&mut self.ring, i, result, flags),
            Some(Op::DatagramSend(key)) => self.udp.on_send(&mut self.ring, key, result),
            Some(Op::Accept(_)) | None => {
                warn!("io_uring: completion with unknown user_data {:#x}", cqe.user_data());
                Ok(())
            }
        }
    }

    /// Add this turn's counts to each listener's counters.
    fn publish_counts(&mut self) {
        for acceptor in &mut self.acceptors {
            acceptor.stats.publish(&mut acceptor.tally);
        }
        self.udp.publish();
    }

    /// A recv completed: echo what it brought, note EOF, or close on an error. Whatever
    /// happens, the buffers the completion names go back to the ring, unless a send now
    /// goes out of one (then the send's completion gives it back). A multishot recv stays
    /// armed while its completions say `F_MORE`.
    fn on_recv(&mut self, key: usize, result: i32, flags: u32, now: Instant) -> io::Result<()> {
        let bid = cqueue::buffer_select(flags);
        let Some(conn) = self.connections.get_mut(key) else {
            self.give_back(bid, result.max(0) as usize);
            warn!("io_uring: a recv completion for a free slot (key {key})");
            return Ok(());
        };
        if !cqueue::more(flags) {
            conn.set_recv_armed(false); // its last completion
        }
        let failure = match (result, bid) {
            (n, Some(bid)) if n > 0 => self.received_buffers(key, bid, n as usize, now)?,
            (n, None) if n > 0 => Some("a recv completed without naming its buffer".to_string()),
            (result, _) => {
                self.give_back(bid, 0);
                self.recv_ended(key, result, now)
            }
        };
        match failure {
            None => self.advance(key),
            Some(reason) => self.close(key, &reason),
        }
    }

    /// `n` bytes in the buffers from `first` on (one buffer, or a bundle: the buffers after
    /// it in ring order, each filled but the last), handed to the connection one buffer at
    /// a time, in order; why to close it, if it must be.
    fn received_buffers(
        &mut self,
        key: usize,
        first: u16,
        n: usize,
        now: Instant,
    ) -> io::Result<Option<String>> {
        let mut filled = self.ring.buffers.filled(first, n);
        let mut failure = None;
        while let Some((bid, len)) = filled.next(&self.ring.buffers) {
            if failure.is_some() {
                self.ring.buffers.provide(bid); // after a failure: back unread
                continue;
            }
            let (give_back, why) = self.received(key, bid, len, now)?;
            if let Some(bid) = give_back {
                self.ring.buffers.provide(bid);
            }
            failure = why;
        }
        Ok(failure)
    }

    /// Give back the buffers a completion names that nobody will read: those holding `n`
    /// bytes from `first` on (at least `first`, if it names one).
    fn give_back(&mut self, first: Option<u16>, n: usize) {
        let Some(first) = first else { return };
        let mut filled = self.ring.buffers.filled(first, n);
        while let Some((bid, _)) = filled.next(&self.ring.buffers) {
            self.ring.buffers.provide(bid);
        }
    }

    /// The work of [`UringLoop::on_recv`] for one buffer of `len` bytes of a live
    /// connection: which buffer to give back (`None` if a send now goes out of it), and why
    /// to close the connection, if it must be.
    fn received(
        &mut self,
        key: usize,
        bid: u16,
        len: usize,
        now: Instant,
    ) -> io::Result<(Option<u16>, Option<String>)> {
        let conn = &mut self.connections[key];
        let tally = &mut self.acceptors[conn.listener()].tally; // counted where it was accepted
        let mut turn = Turn { now: self.clock.stamp(now), framer: self.framer, cap: self.cap, tally };
        let data = self.ring.buffers.data(bid, len);
        if conn.phase() == Phase::Header {
            let outcome = conn.received_header(data, &mut turn);
            if outcome == Ok(true) {
                self.header_done(key);
                self.count_oversize(key, now);
            }
            return Ok((Some(bid), outcome.err()));
        }
        let used = conn.received(data, bid, &mut turn);
        self.count_oversize(key, now);
        let BufferUse::SendFromIt { len } = used else { return Ok((Some(bid), None)) };
        // The buffer stays out of the ring until this send completes (`on_send`).
        let fd = self.connections[key].fd();
        self.ring.send_provided(fd, bid, len, Op::Send(key))?;
        Ok((None, None))
    }

    /// A recv completed with no bytes: EOF (`result` 0), or an error: why to close the
    /// connection, if it must be. (A multishot recv ended this way is armed again by
    /// `advance` if the connection still receives.)
    fn recv_ended(&mut self, key: usize, result: i32, now: Instant) -> Option<String> {
        let conn = &mut self.connections[key];
        let tally = &mut self.acceptors[conn.listener()].tally; // counted where it was accepted
        let mut turn = Turn { now: self.clock.stamp(now), framer: self.framer, cap: self.cap, tally };
        match -result {
            0 if conn.phase() == Phase::Header => return Some("closed before its header was whole".into()),
            0 => conn.received_eof(&mut turn),
            libc::ENOBUFS => {
                trace!("fd={} recv: the buffer ring was empty, recv again", conn.fd());
                self.ring_empty += 1;
            }
            libc::EINTR | libc::EAGAIN => trace!("fd={} recv: nothing yet, recv again", conn.fd()),
            libc::ECANCELED => trace!("fd={} recv cancelled ({:?})", conn.fd(), conn.phase()),
            errno => return Some(format!("recv error: {}", io::Error::from_raw_os_error(errno))),
        }
        None
    }

    /// A connection that a frame over `--max-frame` just refused: counted, and logged through
    /// the server's throttle, as in every model.
    fn count_oversize(&mut self, key: usize, now: Instant) {
        let conn = &mut self.connections[key];
        let Some(oversize) = conn.take_oversize() else { return };
        let peer = conn.peer();
        let detail =
            || format!("{peer}: {oversize}: closing the connection after echoing the frames before it");
        self.acceptors[conn.listener()].stats.client_event(ClientEvent::FrameTooLarge, now, detail);
    }

    /// A send completed: account for what the kernel took; the rest goes out next.
    fn on_send(&mut self, key: usize, result: i32, now: Instant) -> io::Result<()> {
        let Some(conn) = self.connections.get_mut(key) else {
            warn!("io_uring: send completion for a free slot {key}");
            return Ok(());
        };
        let (taken, error) = match result {
            n if n >= 0 => (n as usize, None),
            // Full socket (MSG_DONTWAIT), a signal, or our own cancel: nothing was taken.
            e if matches!(-e, libc::EAGAIN | libc::EINTR | libc::ECANCELED) => (0, None),
            e => (0, Some(io::Error::from_raw_os_error(-e))),
        };
        let tally = &mut self.acceptors[conn.listener()].tally; // counted where it was accepted
        let mut turn = Turn { now: self.clock.stamp(now), framer: self.framer, cap: self.cap, tally };
        match conn.sending() {
            Some(Sending::Provided { bid, len }) => {
                conn.sent_from_buffer(taken, self.ring.buffers.data(bid, len as usize), &mut turn);
                self.ring.buffers.provide(bid);
            }
            Some(Sending::Outbox) => conn.sent_from_outbox(taken, &mut turn),
            None => warn!("io_uring: key={key} send completion without a send in flight"),
        }
        match error {
            Some(e) => self.close(key, &format!("send error: {e}")),
            None => self.advance(key),
        }
    }

    /// Queue what a connection needs next (a send, a recv), or close it when it is done.
    fn advance(&mut self, key: usize) -> io::Result<()> {
        let conn = &mut self.connections[key];
        if conn.phase() == Phase::Closing {
            return if conn.in_flight() { Ok(()) } else { self.finish_close(key) };
        }
        if let Err(e) = conn.linger_once_flushed() {
            return self.close(key, &format!("error: {e}"));
        }
        if conn.finished() {
            return self.close(key, "done");
        }
        let fd = conn.fd();
        if let Some(data) = conn.next_send() {
            // SAFETY: `data` is the connection's outbox, which stays put until this send's
            // completion: `Connection` touches it again only in `sent_from_outbox`, and the
            // slab slot is freed only once no request of the connection is in flight (`close`),
            // or leaked if the loop ends with requests in flight (`Drop for UringLoop`).
            unsafe { self.ring.send(fd, data, Op::Send(key))? };
        }
        if let Some(room) = conn.recv_room(self.cap) {
            self.ring.recv(fd, room, Op::Recv(key))?;
            conn.set_recv_armed(true);
        } else if conn.recv_to_cancel() {
            trace!("queue cancel of fd={fd} recv ({:?}: it takes no more bytes)", conn.phase());
            self.ring.cancel(Op::Recv(key))?;
        }
        Ok(())
    }

    /// A connection's PROXY header is whole: it is served from now on, and counted.
    fn header_done(&mut self, key: usize) {
        if let Some(timers) = &mut self.header_deadlines {
            timers.stop(ConnId(key));
        }
        let conn = &self.connections[key];
        let acceptor = &self.acceptors[conn.listener()];
        acceptor.stats.connection_opened();
        let open = self.connections.len();
        debug!("fd={} opened peer={} on {} (open: {open})", conn.fd(), conn.peer(), acceptor.addr);
    }

    /// Close a connection: at once if the kernel holds nothing of it, else cancel what it
    /// holds and finish when the last completion is in (see [`UringLoop::advance`]).
    fn close(&mut self, key: usize, reason: &str) -> io::Result<()> {
        let conn = &mut self.connections[key];
        debug!("fd={} closing ({reason}) peer={}", conn.fd(), conn.peer());
        if conn.awaiting_header() && conn.phase() != Phase::Closing {
            let stats = &self.acceptors[conn.listener()].stats;
            proxy_header::refused(stats, conn.peer(), reason, Instant::now()); // never served
        }
        if conn.begin_close() {
            self.ring.cancel_fd(conn.fd())?;
        }
        if conn.in_flight() { Ok(()) } else { self.finish_close(key) }
    }

    /// Free the slot, forget the idle timer, count the bytes, close the socket.
    fn finish_close(&mut self, key: usize) -> io::Result<()> {
        let conn = self.connections.remove(key);
        if let Some(timers) = &mut self.idle {
            timers.stop(ConnId(key));
        }
        if let Some(timers) = &mut self.header_deadlines {
            timers.stop(ConnId(key));
        }
        let acceptor = &mut self.acceptors[conn.listener()];
        let unsent = conn.unsent();
        acceptor.tally.bytes_unsent += unsent as u64; // what it owed counts as never echoed
        // Published before the close is counted, so that a statistics line that shows it
        // gone shows all of its bytes too (a few atomic adds per close).
        acceptor.stats.publish(&mut acceptor.tally);
        if !conn.awaiting_header() {
            acceptor.stats.connection_closed(); // a refused header was counted in `close`
        }
        debug!("fd={} closed on {} unsent={unsent}", conn.fd(), acceptor.addr);
        release_crowd(&mut self.connections);
        Ok(())
    }

    /// How long `io_uring_enter` may wait: until the earliest timer, or for a completion.
    fn wait_timeout(&self, now: Instant) -> Option<Duration> {
        let idle = self.idle.as_ref().and_then(IdleTimers::next_deadline);
        let header = self.header_deadlines.as_ref().and_then(IdleTimers::next_deadline);
        let stop = match self.stopping {
            Stopping::No => None,
            Stopping::Grace { until } | Stopping::Draining { until } => Some(until.min(now + LINGER_CHECK)),
        };
        let watchdog = self.watchdog.as_ref().map(WatchdogTimer::deadline);
        [idle, header, stop, self.accept_backoff.paused_until(), watchdog]
            .into_iter()
            .flatten()
            .min()
            .map(|deadline| deadline.saturating_duration_since(now))
    }

    /// Everything that happens because time passed rather than because a request completed.
    fn run_timers(&mut self, now: Instant) -> io::Result<()> {
        self.expire_idle(now)?;
        self.expire_headers(now)?;
        if self.accept_backoff.resume_due(now) {
            self.arm_accepts()?;
        }
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.tick(now); // this loop is turning: tell the service manager
        }
        Ok(())
    }

    /// Close the connections that were idle for the whole timeout. (One already closing
    /// just leaves the queue: its close is under way.)
    fn expire_idle(&mut self, now: Instant) -> io::Result<()> {
        let Some(timers) = &mut self.idle else { return Ok(()) };
        let connections = &self.connections;
        let last_active = |ConnId(key)| {
            connections.get(key).filter(|conn| conn.phase() != Phase::Closing).map(Connection::last_active)
        };
        let expired = timers.expired(now, last_active);
        expired.into_iter().try_for_each(|ConnId(key)| self.close(key, "idle timeout"))
    }

    /// Close the connections whose PROXY header is not whole `--proxy-timeout` after their
    /// accept (one already closing just leaves the queue).
    fn expire_headers(&mut self, now: Instant) -> io::Result<()> {
        let Some(timers) = &mut self.header_deadlines else { return Ok(()) };
        let connections = &self.connections;
        let accepted_at = |ConnId(key)| {
            let conn = connections.get(key).filter(|conn| conn.phase() == Phase::Header);
            conn.map(Connection::last_active)
        };
        let late = timers.expired(now, accepted_at);
        let reason = proxy_header::timed_out_reason(self.config.proxy_timeout);
        late.into_iter().try_for_each(|ConnId(key)| self.close(key, &reason))
    }

    /// Queue the poll on the shutdown eventfd.
    fn arm_wake(&mut self) -> io::Result<()> {
        self.ring.poll_readable(self.wake.raw_fd(), Op::Wake)
    }

    /// The eventfd was written: a shutdown was requested (nothing else writes to it).
    fn on_wake(&mut self, now: Instant) -> io::Result<()> {
        if !self.shutdown.is_requested() {
            warn!("io_uring: woken without a shutdown request");
            return Ok(()); // not polled again: the eventfd stays readable, it would spin
        }
        self.begin_shutdown(now)
    }

    /// Stop accepting, stop receiving, and give owed echoes until the grace deadline.
    fn begin_shutdown(&mut self, now: Instant) -> io::Result<()> {
        if self.stopping != Stopping::No {
            return Ok(());
        }
        self.cancel_accepts()?;
        for acceptor in &mut self.acceptors {
            acceptor.listener = None; // closes our descriptor (and removes a Unix socket file)
        }
        self.udp.stop_receiving(&mut self.ring)?; // replies in flight may still go
        let grace = self.config.shutdown_grace;
        self.stopping = Stopping::Grace { until: now + grace };
        info!(
            "shutting down: {} connections open, flushing pending echoes for up to {grace:?}",
            self.connections.len()
        );
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            let conn = &mut self.connections[key];
            if conn.phase() == Phase::Header {
                self.close(key, "the server is stopping")?; // never served: nothing to flush
                continue;
            }
            conn.stop_receiving();
            self.advance(key)?; // cancels its recv, sends what it owes
        }
        Ok(())
    }

    /// While stopping: close connections that finished lingering; at the grace deadline
    /// close the rest. Done when the kernel holds no request of ours (or it would not let
    /// go of them within [`DRAIN_LIMIT`]).
    fn shutdown_complete(&mut self, now: Instant) -> io::Result<bool> {
        let until = match self.stopping {
            Stopping::No => return Ok(false),
            Stopping::Grace { until } | Stopping::Draining { until } => until,
        };
        let lingered: Vec<usize> =
            self.connections.iter().filter(|(_, conn)| conn.done_lingering()).map(|(key, _)| key).collect();
        for key in lingered {
            self.close(key, "echoes delivered")?;
        }
        if self.connections.is_empty() && self.ring.in_flight() == 0 {
            return Ok(true);
        }
        if now < until {
            return Ok(false);
        }
        if let Stopping::Draining { .. } = self.stopping {
            warn!(
                "io_uring: {} requests not completed {DRAIN_LIMIT:?} after cancelling",
                self.ring.in_flight()
            );
            std::mem::forget(std::mem::take(&mut self.connections)); // the kernel may still read them
            return Ok(true);
        }
        let open = self.connections.iter().filter(|(_, conn)| conn.phase() != Phase::Closing).count();
        if open > 0 {
            warn!(
                "grace period over: closing {open} connections whose client did not take its echo or close"
            );
        }
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, "shutdown")?;
        }
        self.udp.abandon(&mut self.ring)?;
        self.stopping = Stopping::Draining { until: now + DRAIN_LIMIT };
        Ok(false)
    }
}

impl Drop for UringLoop {
    /// After an error (the normal way out waits until the kernel holds nothing of ours): a
    /// connection's outbox may still be under a send in flight. Leak the connections rather
    /// than free memory the kernel may read; the process is on its way out.
    fn drop(&mut self) {
        self.udp.release(&mut self.ring); // the datagram buffers and replies, likewise
        if self.ring.in_flight() > 0 && !self.connections.is_empty() {
            warn!(
                "io_uring: stopping with {} requests in flight; leaking their connections",
                self.ring.in_flight()
            );
            std::mem::forget(std::mem::take(&mut self.connections));
        }
    }
}

/// The provided-buffer pool `--uring-buffers` and `--uring-buffer-size` ask for, or one line
/// naming them and what the system said.
fn receive_buffers(config: &ServerConfig) -> io::Result<BufRing> {
    let (count, size) = (config.uring_buffers, config.uring_buffer_size);
    let named = |e: io::Error| {
        let total = count.saturating_mul(size);
        io::Error::new(
            e.kind(),
            format!(
                "io_uring: cannot allocate --uring-buffers {count} x --uring-buffer-size {size} \
                 ({total} bytes): {e}"
            ),
        )
    };
    let count = u16::try_from(count).map_err(|_| named(io::ErrorKind::InvalidInput.into()))?;
    BufRing::new(count, size).map_err(named)
}

/// How a shutdown request reaches a loop asleep in `io_uring_enter`: a non-blocking eventfd
/// the shutdown handle writes to, and the ring polls.
struct WakeFd(Arc<OwnedFd>);

impl WakeFd {
    /// A new eventfd, and a waker on `shutdown` that writes to it.
    fn new(shutdown: &ShutdownHandle) -> io::Result<WakeFd> {
        // SAFETY: plain system call; the descriptor it returns is owned by nobody else.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh, open descriptor.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let written = Arc::clone(&fd);
        shutdown.add_waker(move || {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live array to an open eventfd.
            if unsafe { libc::write(written.as_raw_fd(), one.as_ptr().cast(), one.len()) } < 0 {
                warn!("could not wake the io_uring loop: {}", io::Error::last_os_error());
            }
        });
        Ok(WakeFd(fd))
    }

    /// The descriptor, for the ring's poll.
    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
