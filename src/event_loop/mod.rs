//! The event loop: one thread, one `mio::Poll`, every listener and every connection.
//!
//! ```text
//!   loop {
//!       poll(events, timeout = earliest timer)        // the only place we wait
//!       for each event, by what its token stands for (listeners.rs):
//!           stream listener -> accept until WouldBlock     (accept.rs)
//!           UDP socket      -> send queued replies, answer datagrams (udp.rs)
//!           WAKER           -> begin shutdown              (shutdown.rs sets it off)
//!           connection      -> write pending, read + echo, reregister if the interest changed
//!       revisit connections and UDP sockets whose read budget ran out
//!       expire idle connections, resume accepting after EMFILE, ping the watchdog,
//!       end shutdown when done
//!       publish the turn's counts to the shared statistics
//!   }
//! ```
//!
//! Every listener given (`serve ADDR...`: TCP, Unix and UDP side by side) is a socket in the
//! same poll, with a token of its own; a connection remembers which listener accepted it, so
//! its counts and log lines say so.
//!
//! Nothing here blocks: every socket is non-blocking, and "not now" (`WouldBlock`) is an
//! ordinary answer, handled where it occurs. The slab key of a connection *is* its
//! `mio::Token` (and its [`ConnId`] for the idle timers), so an event leads to its
//! connection in one index, and a slot freed on close is reused by the next accepted
//! connection. What a connection's life is made of (admission, idle timeout, lingering
//! before a close) is the same in every model: `crate::lifecycle`.

mod accept;
mod connection;
mod listeners;
mod names;
mod udp;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::{Events, Poll, Token, Waker};
use slab::Slab;

use crate::config::ServerConfig;
use crate::framing::{Framer, Oversize};
use crate::lifecycle::linger::LINGER_CHECK;
use crate::lifecycle::{Clock, ConnId, IdleTimers, proxy_header, release_crowd, wait_limit};
use crate::listening::Listening;
use crate::net::{AcceptBackoff, interrupted};
use crate::notify::WatchdogTimer;
use crate::shutdown::ShutdownHandle;
use crate::stats::ClientEvent;
use connection::{Connection, Drain, ReadStop, Turn};
use listeners::{Endpoint, Socket, Source, WAKER, listener_token};
use names::{readiness, token_name};

/// The shared read buffer: one per loop, not per connection. 64 KiB is what a loopback
/// TCP segment burst typically delivers in one read, and what `peer-epoll` (crates/peers) uses.
const READ_BUFFER: usize = 64 * 1024;

/// Listeners one loop serves: a connection keeps its listener's number in 16 bits.
const MAX_LISTENERS: usize = 1 << 16;

/// Events taken from the kernel per `poll`. Large enough that 2000 busy connections need
/// only a few polls per round; each slot is 12-16 bytes.
const EVENTS_CAPACITY: usize = 1024;

/// A waker on `poll` (token `WAKER`) that `shutdown` fires: how a stop request reaches a
/// loop asleep in `poll`. The caller keeps it alive.
fn shutdown_waker(poll: &Poll, shutdown: &ShutdownHandle) -> io::Result<Arc<Waker>> {
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let wake = Arc::clone(&waker);
    shutdown.add_waker(move || {
        if let Err(e) = wake.wake() {
            warn!("could not wake the event loop: {e}");
        }
    });
    Ok(waker)
}

/// Wait in `poll` for events, or until `timeout`. A signal (EINTR) ends the wait early with
/// no events, which the loop treats as it treats a timeout: nothing happened, go round.
fn wait(poll: &mut Poll, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
    match poll.poll(events, timeout) {
        Ok(()) => trace!("poll: events={} (timeout {})", events.iter().count(), wait_limit(timeout)),
        Err(e) if interrupted(&e) => {} // mio cleared `events` before waiting
        Err(e) => return Err(e),
    }
    Ok(())
}

/// What an event says a connection may do. Flags are hints: a hang-up or an error is
/// learned for certain from a `read` or `write` result, so they just mean "try".
#[derive(Debug, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
    /// How far to read: past a short read too, when the event says more than "new bytes".
    drain: Drain,
}

impl Ready {
    /// A connection whose read budget ran out: nothing new announces what is left, so read
    /// again, to `WouldBlock`.
    const AGAIN: Ready = Ready { readable: true, writable: false, drain: Drain::ToWouldBlock };

    fn from_event(event: &Event) -> Ready {
        // A hang-up (the client's FIN may be queued behind the data), an error, or urgent
        // data (which stops a read short of the bytes behind it): a short read proves
        // nothing then, and no further edge will come for what is left.
        let short_read_proves_nothing = event.is_read_closed() || event.is_error() || event.is_priority();
        Ready {
            readable: event.is_readable() || short_read_proves_nothing,
            writable: event.is_writable() || event.is_write_closed(),
            drain: if short_read_proves_nothing { Drain::ToWouldBlock } else { Drain::ToShortRead },
        }
    }
}

/// One single-threaded echo server (one worker, with `--workers`).
pub struct EventLoop {
    /// The readiness queue: every socket and the waker are registered here.
    poll: Poll,
    /// The listeners, in the order given: listener `i` has token `listener_token(i)`.
    endpoints: Vec<Endpoint>,
    /// Live connections; a connection's key is its token.
    connections: Slab<Connection>,
    /// Every read lands here first; only leftovers of partial writes are copied out.
    read_buf: Box<[u8]>,
    /// Where frames end, the same for every connection: lent to each in its [`Turn`].
    framer: Framer,
    /// The most bytes a connection may hold (`--max-pending`, raised to one whole frame).
    cap: usize,
    /// Milliseconds since the loop began: the connections' `last_active` stamps.
    clock: Clock,
    /// Connections and UDP sockets that stopped reading because their budget ran out, to
    /// revisit after the next (non-blocking) poll. Reused between passes: no allocation.
    unfinished: Vec<Token>,
    /// Idle deadlines, when `--idle-timeout` is on; their only owner. Slab key = `ConnId`.
    idle: Option<IdleTimers>,
    /// With `--proxy-protocol`: each connection's deadline for its whole PROXY header
    /// (`--proxy-timeout` after the accept; a connection's `last_active` stays its accept
    /// time until the header is whole, so trickling bytes do not move the deadline).
    header_deadlines: Option<IdleTimers>,
    /// After EMFILE and friends, accepting pauses; this says until when, and logs it.
    accept_backoff: AcceptBackoff,
    /// Set when shutdown begins: pending echoes may flush until then.
    grace_deadline: Option<Instant>,
    /// Keeps the waker alive; the shutdown handle holds a closure that fires it.
    _waker: Arc<Waker>,
    shutdown: ShutdownHandle,
    config: ServerConfig,
    /// Pings the service manager's watchdog from this loop (worker 0), if it asked.
    watchdog: Option<WatchdogTimer>,
    /// Which worker this is, for logs.
    worker: usize,
}

impl EventLoop {
    /// Take the bound listeners, make them non-blocking, and register them and a waker that
    /// `shutdown` will fire. Each listener counts what it serves in its own counters.
    pub fn new(
        listeners: Vec<Listening>,
        config: &ServerConfig,
        shutdown: &ShutdownHandle,
        worker: usize,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        if listeners.len() > MAX_LISTENERS {
            let msg = format!("{} listeners: one event loop serves at most {MAX_LISTENERS}", listeners.len());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let endpoints = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listening)| Endpoint::new(listening, i, config, poll.registry()))
            .collect::<io::Result<_>>()?;
        let waker = shutdown_waker(&poll, shutdown)?;
        let clock = Clock::new(Instant::now());
        Ok(EventLoop {
            poll,
            endpoints,
            connections: Slab::new(),
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            framer: config.framer(),
            cap: config.connection_cap(),
            clock,
            unfinished: Vec::new(),
            idle: config.idle_timeout.map(|timeout| IdleTimers::new(timeout, clock)),
            header_deadlines: config.proxy_protocol.then(|| IdleTimers::new(config.proxy_timeout, clock)),
            accept_backoff: AcceptBackoff::default(),
            grace_deadline: None,
            _waker: waker,
            shutdown: shutdown.clone(),
            config: config.clone(),
            watchdog: None,
            worker,
        })
    }

    /// Serve until a shutdown request has been carried out (the counts are in each
    /// listener's counters), sending `watchdog`'s pings from this loop as it turns.
    pub fn run(mut self, watchdog: Option<WatchdogTimer>) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut revisit = Vec::new();
        self.watchdog = watchdog;
        debug!("worker {}: event loop running", self.worker);
        loop {
            self.publish_counts(); // before sleeping: a statistics line read meanwhile is current
            let timeout = self.poll_timeout(Instant::now());
            // For /livez: a loop asleep in poll is not stuck (the first listener's counters
            // carry this worker's turns).
            self.endpoints[0].stats.loop_waiting();
            wait(&mut self.poll, &mut events, timeout)?;
            let now = Instant::now();
            self.endpoints[0].stats.loop_busy(now);
            std::mem::swap(&mut revisit, &mut self.unfinished);
            for event in events.iter() {
                self.dispatch(event, now);
            }
            for token in revisit.drain(..) {
                self.ready(token, Ready::AGAIN, now);
            }
            self.run_timers(now);
            if self.close_delivered_or_overdue(now) {
                self.publish_counts();
                return Ok(());
            }
        }
    }

    /// Add this turn's counts to each listener's counters.
    fn publish_counts(&mut self) {
        for endpoint in &mut self.endpoints {
            endpoint.publish();
        }
    }

    /// One readiness event to the one place that handles it.
    fn dispatch(&mut self, event: &Event, now: Instant) {
        trace!("event {}: {}", token_name(event.token(), &self.endpoints), readiness(event));
        self.ready(event.token(), Ready::from_event(event), now);
    }

    /// `token`'s socket may be ready: hand it to the one place that handles its kind.
    fn ready(&mut self, token: Token, ready: Ready, now: Instant) {
        match Source::of(token, self.endpoints.len()) {
            Source::Waker => self.begin_shutdown(now),
            Source::Listener(i) if matches!(self.endpoints[i].socket, Socket::Stream(_)) => {
                self.accept_ready(i, now)
            }
            Source::Listener(i) => self.answer_datagrams(i, ready),
            Source::Connection(token) => self.serve(token, ready, now),
        }
    }

    /// UDP socket `i` may be ready: send what it owes, answer what arrived.
    fn answer_datagrams(&mut self, i: usize, ready: Ready) {
        let token = listener_token(i);
        let endpoint = &mut self.endpoints[i];
        let Socket::Datagram(port) = &mut endpoint.socket else { return };
        let registry = self.poll.registry();
        if let Err(e) = port.serve(ready.writable, &mut endpoint.tally, registry, token) {
            warn!("udp {}: {e}", endpoint.addr); // a reregister failed: the socket keeps its interest
        }
        // Once in the list is enough, though an event and a revisit may both come this turn.
        if port.unfinished() && !self.unfinished.contains(&token) {
            self.unfinished.push(token);
        }
    }

    /// A connection may be ready: write what it owes, read and echo what it sent, then
    /// wait for whatever it needs next, or close it.
    fn serve(&mut self, token: Token, ready: Ready, now: Instant) {
        let Some(conn) = self.connections.get_mut(token.0) else {
            // Its connection closed earlier in this batch; the slot is empty.
            trace!("token={} event for a closed connection: ignored", token.0);
            return;
        };
        let was_awaiting_header = conn.awaiting_header();
        let mut turn = Turn {
            token,
            now: self.clock.stamp(now),
            framer: self.framer,
            cap: self.cap,
            tally: &mut self.endpoints[conn.listener()].tally, // counted where it was accepted
        };
        let mut io = || -> io::Result<ReadStop> {
            if ready.writable {
                conn.on_writable(&mut turn)?;
            }
            if ready.readable {
                return conn.on_readable(&mut self.read_buf, ready.drain, &mut turn);
            }
            Ok(ReadStop::Done)
        };
        let result = io();
        if was_awaiting_header && !conn.awaiting_header() {
            self.header_done(token);
        }
        match result {
            Ok(ReadStop::BudgetSpent) => self.unfinished.push(token),
            Ok(ReadStop::Done) => {}
            Ok(ReadStop::FrameTooLarge(oversize)) => self.frame_too_large(token, oversize, now),
            Err(e) => return self.close(token, &format!("error: {e}")),
        }
        self.update_interest(token);
    }

    /// A connection's PROXY header is whole: it is served from now on, and counted.
    fn header_done(&mut self, token: Token) {
        if let Some(timers) = &mut self.header_deadlines {
            timers.stop(ConnId(token.0));
        }
        let conn = &self.connections[token.0];
        let endpoint = &self.endpoints[conn.listener()];
        endpoint.stats.connection_opened();
        let open = self.connections.len();
        debug!("token={} opened peer={} on {} (open: {open})", token.0, conn.peer(), endpoint.addr);
    }

    /// A connection sent a frame over `--max-frame`: counted, and logged through the throttle.
    fn frame_too_large(&self, token: Token, oversize: Oversize, now: Instant) {
        let conn = &self.connections[token.0];
        let peer = conn.peer();
        let detail =
            || format!("{peer}: {oversize}: closing the connection after echoing the frames before it");
        self.endpoints[conn.listener()].stats.client_event(ClientEvent::FrameTooLarge, now, detail);
    }

    /// Reregister a connection if what it waits for changed; close it if it waits for
    /// nothing. The only place that calls `reregister`.
    fn update_interest(&mut self, token: Token) {
        let conn = &mut self.connections[token.0];
        let Some(interest) = conn.interest(self.cap) else {
            return self.close(token, "done");
        };
        if interest == conn.registered() {
            return; // unchanged: skip the epoll_ctl syscall
        }
        trace!("token={} interest {:?} -> {:?}", token.0, conn.registered(), interest);
        match self.poll.registry().reregister(conn.stream_mut(), token, interest) {
            Ok(()) => conn.set_registered(interest),
            Err(e) => self.close(token, &format!("reregister failed: {e}")),
        }
    }

    /// Deregister, free the slab slot, forget the idle timer, count the bytes.
    fn close(&mut self, token: Token, reason: &str) {
        let mut conn = self.connections.remove(token.0);
        if let Err(e) = self.poll.registry().deregister(conn.stream_mut()) {
            debug!("token={} deregister: {e}", token.0); // the close below removes it anyway
        }
        if let Some(timers) = &mut self.idle {
            timers.stop(ConnId(token.0));
        }
        if let Some(timers) = &mut self.header_deadlines {
            timers.stop(ConnId(token.0));
        }
        let endpoint = &mut self.endpoints[conn.listener()];
        // Read, and now never echoed: what was pending, and a partial frame. (A refused
        // frame, or one cut short, was counted unsent when it was dropped.) Published before
        // the close is counted, so that a statistics line that shows it gone shows all of its
        // bytes too (a few atomic adds per close).
        let unsent = conn.held();
        endpoint.tally.bytes_unsent += unsent as u64;
        endpoint.publish();
        if conn.awaiting_header() {
            proxy_header::refused(&endpoint.stats, conn.peer(), reason, Instant::now()); // never served
        } else {
            endpoint.stats.connection_closed();
        }
        debug!("token={} closed ({reason}) on {} unsent={unsent}", token.0, endpoint.addr);
        release_crowd(&mut self.connections);
    }

    /// How long `poll` may sleep: until the earliest timer, at once if connections are
    /// waiting for another turn, or forever if nothing is scheduled.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.unfinished.is_empty() {
            return Some(Duration::ZERO);
        }
        let idle = self.idle.as_ref().and_then(IdleTimers::next_deadline);
        let header = self.header_deadlines.as_ref().and_then(IdleTimers::next_deadline);
        let linger_check = self.grace_deadline.map(|_| now + LINGER_CHECK);
        let watchdog = self.watchdog.as_ref().map(WatchdogTimer::deadline);
        [idle, header, self.grace_deadline, self.accept_backoff.paused_until(), linger_check, watchdog]
            .into_iter()
            .flatten()
            .min()
            .map(|deadline| deadline.saturating_duration_since(now))
    }

    /// Everything that happens because time passed rather than because a socket moved.
    fn run_timers(&mut self, now: Instant) {
        self.expire_idle(now);
        self.expire_headers(now);
        if self.accept_backoff.resume_due(now) {
            for i in 0..self.endpoints.len() {
                self.accept_ready(i, now); // a UDP socket has nothing to accept: no-op
            }
        }
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.tick(now); // this loop is turning: tell the service manager
        }
    }

    /// Close the connections that were idle for the whole timeout.
    fn expire_idle(&mut self, now: Instant) {
        let Some(timers) = &mut self.idle else { return };
        let connections = &self.connections;
        let expired = timers.expired(now, |ConnId(key)| connections.get(key).map(Connection::last_active));
        for ConnId(key) in expired {
            self.close(Token(key), "idle timeout");
        }
    }

    /// Close the connections whose PROXY header is not whole `--proxy-timeout` after their
    /// accept (their `last_active` is their accept time until then).
    fn expire_headers(&mut self, now: Instant) {
        let Some(timers) = &mut self.header_deadlines else { return };
        let connections = &self.connections;
        let accepted_at = |ConnId(key)| {
            connections.get(key).filter(|conn| conn.awaiting_header()).map(Connection::last_active)
        };
        let late = timers.expired(now, accepted_at);
        let reason = proxy_header::timed_out_reason(self.config.proxy_timeout);
        for ConnId(key) in late {
            self.close(Token(key), &reason);
        }
    }

    /// Stop accepting, stop reading, and give pending echoes until the grace deadline.
    fn begin_shutdown(&mut self, now: Instant) {
        if !self.shutdown.is_requested() || self.grace_deadline.is_some() {
            return; // a stray wake-up, or shutdown already under way
        }
        let mut replies = None; // queued UDP replies, if the loop has a UDP socket
        for (i, endpoint) in self.endpoints.iter_mut().enumerate() {
            match &mut endpoint.socket {
                Socket::Stream(listener) => {
                    if let Some(mut listener) = listener.take() {
                        // Dropping it closes the socket (and removes a Unix socket file).
                        let _ = self.poll.registry().deregister(&mut listener);
                    }
                }
                Socket::Datagram(port) => {
                    replies = Some(replies.unwrap_or(0) + port.queued());
                    if let Err(e) = port.stop_reading(self.poll.registry(), listener_token(i)) {
                        debug!("udp {}: {e}", endpoint.addr);
                    }
                }
            }
        }
        let grace = self.config.shutdown_grace;
        self.grace_deadline = Some(now + grace);
        let replies = replies.map(|n| format!(", {n} UDP replies queued")).unwrap_or_default();
        info!(
            "shutting down: {} connections open{replies}, flushing pending echoes for up to {grace:?}",
            self.connections.len()
        );
        for token in self.tokens_where(Connection::awaiting_header) {
            self.close(token, "the server is stopping"); // never served: nothing to flush
        }
        let stamp = self.clock.stamp(now);
        for token in self.tokens_where(|_| true) {
            let conn = &mut self.connections[token.0];
            let tally = &mut self.endpoints[conn.listener()].tally;
            let mut turn = Turn { token, now: stamp, framer: self.framer, cap: self.cap, tally };
            match conn.stop_reading(&mut turn) {
                Ok(()) => self.update_interest(token),
                Err(e) => self.close(token, &format!("error: {e}")),
            }
        }
    }

    /// While shutting down: close the connections that have delivered everything, and all
    /// of them once the grace period is over. True when none is left: the loop may end.
    fn close_delivered_or_overdue(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.grace_deadline else { return false };
        for token in self.tokens_where(Connection::done_lingering) {
            self.close(token, "echoes delivered");
        }
        let flushed = |e: &Endpoint| !matches!(&e.socket, Socket::Datagram(port) if !port.flushed());
        if self.connections.is_empty() && self.endpoints.iter().all(flushed) {
            return true;
        }
        if now < deadline {
            return false;
        }
        for endpoint in &mut self.endpoints {
            if let Socket::Datagram(port) = &mut endpoint.socket {
                port.abandon(&mut endpoint.tally);
            }
        }
        if !self.connections.is_empty() {
            warn!(
                "grace period over: closing {} connections whose client did not take its echo or close",
                self.connections.len()
            );
        }
        for token in self.tokens_where(|_| true) {
            self.close(token, "shutdown");
        }
        true
    }

    /// The tokens of the connections that satisfy `keep`, collected first, because closing
    /// (or reregistering) needs `self` while the slab is borrowed for the scan.
    fn tokens_where(&self, keep: impl Fn(&Connection) -> bool) -> Vec<Token> {
        self.connections.iter().filter(|(_, conn)| keep(conn)).map(|(key, _)| Token(key)).collect()
    }
}
