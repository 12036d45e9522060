//! The event loop: one thread, one `mio::Poll`, every connection in a `Slab`.
//!
//! ```text
//!   loop {
//!       poll(events, timeout = earliest timer)        // the only place we wait
//!       for each event:
//!           LISTENER -> accept until WouldBlock         (accept.rs)
//!           WAKER    -> begin shutdown                  (shutdown.rs sets it off)
//!           token    -> write pending, read + echo, reregister if the interest changed
//!       revisit connections whose read budget ran out
//!       expire idle connections, resume accepting after EMFILE, end shutdown when done
//!       publish the turn's counts to the shared statistics
//!   }
//! ```
//!
//! Nothing here blocks: every socket is non-blocking, and "not now" (`WouldBlock`) is an
//! ordinary answer, handled where it occurs. The slab key of a connection *is* its
//! `mio::Token`, so an event leads to its connection in one index, and a slot freed on
//! close is reused by the next accepted connection.

mod accept;
mod connection;
mod idle;
mod udp;

pub use udp::UdpEcho;

pub(crate) use idle::IdleTimers; // the io_uring model keeps its idle deadlines the same way

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::ServerConfig;
use crate::net::{BackoffLog, Listener, SocketOptions, StdListener, interrupted};
use crate::shutdown::ShutdownHandle;
use crate::stats::{IoTally, Stats};
use connection::{Connection, ReadStop};

/// The listening socket's token. Slab keys count up from 0, so the top of the range is free.
const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the `mio::Waker` that a shutdown request fires.
const WAKER: Token = Token(usize::MAX);

/// The shared read buffer: one per loop, not per connection. 64 KiB is what a loopback
/// TCP segment burst typically delivers in one read, and what `peer-epoll` (crates/peers) uses.
const READ_BUFFER: usize = 64 * 1024;

/// Slab slots kept when the last connection closes; a larger slab is shrunk to give the
/// memory of a past crowd of connections back.
const SLAB_KEEP: usize = 1024;

/// While shutting down, how often lingering connections are checked for "the client has
/// acknowledged every byte and our FIN" (no readiness event announces an ACK).
const LINGER_CHECK: Duration = Duration::from_millis(20);

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

/// What an event says a connection may do. Flags are hints: a hang-up or an error is
/// learned for certain from a `read` or `write` result, so they just mean "try".
#[derive(Debug, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
    /// The peer may have sent FIN: read past a short read, to see the EOF.
    maybe_eof: bool,
}

impl Ready {
    /// A connection whose read budget ran out: read again, to `WouldBlock` if need be.
    const AGAIN: Ready = Ready { readable: true, writable: false, maybe_eof: true };

    fn from_event(event: &Event) -> Ready {
        // A hang-up, an error or urgent data: read past a short read, to `WouldBlock`.
        let hang_up = event.is_read_closed() || event.is_error() || event.is_priority();
        Ready {
            readable: event.is_readable() || hang_up,
            writable: event.is_writable() || event.is_write_closed(),
            maybe_eof: hang_up,
        }
    }
}

/// One single-threaded echo server (one worker, with `--workers`).
pub struct EventLoop {
    /// The readiness queue: every socket and the waker are registered here.
    poll: Poll,
    /// `None` once shutting down: we stop accepting first.
    listener: Option<Listener>,
    /// Live connections; a connection's key is its token.
    connections: Slab<Connection>,
    /// Every read lands here first; only leftovers of partial writes are copied out.
    read_buf: Box<[u8]>,
    /// Connections that stopped reading because their budget ran out, to revisit after
    /// the next (non-blocking) poll. Reused between passes, so it does not allocate.
    unfinished: Vec<Token>,
    /// Idle deadlines, when `--idle-timeout` is on; their only owner.
    idle: Option<IdleTimers>,
    /// After EMFILE and friends, accepting pauses until this instant.
    accept_paused_until: Option<Instant>,
    /// Logs the first accept failure of an episode, reminders, and the recovery.
    accept_backoff: BackoffLog,
    /// Set when shutdown begins: pending echoes may flush until then.
    grace_deadline: Option<Instant>,
    /// Keeps the waker alive; the shutdown handle holds a closure that fires it.
    _waker: Arc<Waker>,
    shutdown: ShutdownHandle,
    config: ServerConfig,
    socket_options: SocketOptions,
    /// The counters other threads read (the live statistics line, the summary).
    stats: Arc<Stats>,
    /// This turn's reads and writes, in plain integers: published to `stats` once per
    /// turn, so the hot path pays no atomic operation per read or write.
    tally: IoTally,
    /// Which worker this is, for logs.
    worker: usize,
}

impl EventLoop {
    /// Take a bound listener, make it non-blocking, and register it and a waker that
    /// `shutdown` will fire. The loop counts what it does in `stats`.
    pub fn new(
        listener: StdListener,
        config: &ServerConfig,
        shutdown: &ShutdownHandle,
        stats: Arc<Stats>,
        worker: usize,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = listener.into_mio()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = shutdown_waker(&poll, shutdown)?;
        Ok(EventLoop {
            poll,
            listener: Some(listener),
            connections: Slab::new(),
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            unfinished: Vec::new(),
            idle: config.idle_timeout.map(IdleTimers::new),
            accept_paused_until: None,
            accept_backoff: BackoffLog::default(),
            grace_deadline: None,
            _waker: waker,
            shutdown: shutdown.clone(),
            config: config.clone(),
            socket_options: SocketOptions::from_config(config),
            stats,
            tally: IoTally::default(),
            worker,
        })
    }

    /// Serve until a shutdown request has been carried out (the counts are in `stats`).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut revisit = Vec::new();
        debug!("worker {}: event loop running", self.worker);
        loop {
            self.publish_counts(); // before sleeping: a stats line read meanwhile is current
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if interrupted(&e) => continue, // a signal: poll again
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            std::mem::swap(&mut revisit, &mut self.unfinished);
            for event in events.iter() {
                self.dispatch(event, now);
            }
            for token in revisit.drain(..) {
                self.serve(token, Ready::AGAIN, now);
            }
            self.run_timers(now);
            if self.close_delivered_or_overdue(now) {
                self.publish_counts();
                return Ok(());
            }
        }
    }

    /// Add this turn's reads and writes to the shared counters: a few relaxed atomic adds
    /// per turn, however many reads and writes the turn made.
    fn publish_counts(&mut self) {
        if !self.tally.is_empty() {
            self.stats.record(std::mem::take(&mut self.tally));
        }
    }

    /// One readiness event to the one place that handles it.
    fn dispatch(&mut self, event: &Event, now: Instant) {
        trace!(
            "event token={} readable={} writable={} read_closed={} error={}",
            event.token().0,
            event.is_readable(),
            event.is_writable(),
            event.is_read_closed(),
            event.is_error()
        );
        match event.token() {
            LISTENER => self.accept_ready(now),
            WAKER => self.begin_shutdown(now),
            token => self.serve(token, Ready::from_event(event), now),
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
        let before = conn.io_counts();
        let mut io = || -> io::Result<ReadStop> {
            if ready.writable {
                conn.on_writable(now)?;
            }
            if ready.readable {
                return conn.on_readable(&mut self.read_buf, ready.maybe_eof, now);
            }
            Ok(ReadStop::Done)
        };
        let result = io();
        self.tally.add(conn.io_counts() - before);
        match result {
            Ok(ReadStop::BudgetSpent) => self.unfinished.push(token),
            Ok(ReadStop::Done) => {}
            Err(e) => return self.close(token, &format!("error: {e}")),
        }
        self.update_interest(token);
    }

    /// Reregister a connection if what it waits for changed; close it if it waits for
    /// nothing. The only place that calls `reregister`.
    fn update_interest(&mut self, token: Token) {
        let conn = &mut self.connections[token.0];
        let Some(interest) = conn.interest() else {
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
            timers.stop(token);
        }
        let (bytes_in, bytes_out, pending) = conn.byte_counts();
        self.stats.connection_closed();
        // Read, and now never echoed: what was pending, and also the bytes of a partial
        // frame or of a refused one, which were read but never became pending. (The turn's
        // tally already holds this connection's reads and writes.)
        self.tally.bytes_unsent += bytes_in.saturating_sub(bytes_out);
        debug!(
            "token={} closed ({reason}) peer={} read={bytes_in} echoed={bytes_out} unsent={pending}",
            token.0,
            conn.peer()
        );
        if self.connections.is_empty() && self.connections.capacity() > SLAB_KEEP {
            // The last connection of a crowd is gone: give the slab's memory back, so RSS
            // returns to its baseline (10,000 slots are about 1.5 MiB). Only when empty, so
            // this O(capacity) step runs once per crowd, never per close.
            self.connections.shrink_to_fit();
        }
    }

    /// How long `poll` may sleep: until the earliest timer, at once if connections are
    /// waiting for another turn, or forever if nothing is scheduled.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.unfinished.is_empty() {
            return Some(Duration::ZERO);
        }
        let idle = self.idle.as_ref().and_then(IdleTimers::next_deadline);
        let linger_check = self.grace_deadline.map(|_| now + LINGER_CHECK);
        [idle, self.grace_deadline, self.accept_paused_until, linger_check]
            .into_iter()
            .flatten()
            .min()
            .map(|deadline| deadline.saturating_duration_since(now))
    }

    /// Everything that happens because time passed rather than because a socket moved.
    fn run_timers(&mut self, now: Instant) {
        self.expire_idle(now);
        if self.accept_paused_until.is_some_and(|until| until <= now) {
            self.accept_paused_until = None;
            // Debug, not info: while descriptors stay short this runs every pause, and
            // `BackoffLog` already tells the operator when the episode starts and ends.
            debug!("accept: pause over, trying again");
            self.accept_ready(now);
        }
    }

    /// Close the connections that were idle for the whole timeout.
    fn expire_idle(&mut self, now: Instant) {
        let Some(timers) = &mut self.idle else { return };
        let connections = &self.connections;
        let expired = timers.expired(now, |token| connections.get(token.0).map(Connection::last_active));
        for token in expired {
            self.close(token, "idle timeout");
        }
    }

    /// Stop accepting, stop reading, and give pending echoes until the grace deadline.
    fn begin_shutdown(&mut self, now: Instant) {
        if !self.shutdown.is_requested() || self.grace_deadline.is_some() {
            return; // a stray wake-up, or shutdown already under way
        }
        if let Some(mut listener) = self.listener.take() {
            // Dropping it closes the socket (and removes a Unix socket file).
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let grace = self.config.shutdown_grace;
        self.grace_deadline = Some(now + grace);
        info!(
            "shutting down: {} connections open, flushing pending echoes for up to {grace:?}",
            self.connections.len()
        );
        for token in self.tokens_where(|_| true) {
            match self.connections[token.0].stop_reading() {
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
        if self.connections.is_empty() {
            return true;
        }
        if now < deadline {
            return false;
        }
        warn!(
            "grace period over: closing {} connections whose client did not take its echo or close",
            self.connections.len()
        );
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
