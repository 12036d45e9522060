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
//! `mio::Token` (and its [`ConnId`] for the idle timers), so an event leads to its
//! connection in one index, and a slot freed on close is reused by the next accepted
//! connection. What a connection's life is made of (admission, idle timeout, lingering
//! before a close) is the same in every model: `crate::lifecycle`.

mod accept;
mod connection;
mod udp;

pub use udp::UdpEcho;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::ServerConfig;
use crate::lifecycle::linger::LINGER_CHECK;
use crate::lifecycle::{Admission, ConnId, IdleTimers, release_crowd};
use crate::net::{AcceptBackoff, Listener, StdListener, interrupted};
use crate::shutdown::ShutdownHandle;
use crate::stats::{IoTally, Stats};
use connection::{Connection, Drain, ReadStop};

/// The listening socket's token. Slab keys count up from 0, so the top of the range is free.
const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the `mio::Waker` that a shutdown request fires.
const WAKER: Token = Token(usize::MAX);

/// The shared read buffer: one per loop, not per connection. 64 KiB is what a loopback
/// TCP segment burst typically delivers in one read, and what `peer-epoll` (crates/peers) uses.
const READ_BUFFER: usize = 64 * 1024;

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
        Err(e) if interrupted(&e) => Ok(()), // mio cleared `events` before waiting
        result => result,
    }
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
    /// `None` once shutting down: we stop accepting first.
    listener: Option<Listener>,
    /// Live connections; a connection's key is its token.
    connections: Slab<Connection>,
    /// Every read lands here first; only leftovers of partial writes are copied out.
    read_buf: Box<[u8]>,
    /// Connections that stopped reading because their budget ran out, to revisit after
    /// the next (non-blocking) poll. Reused between passes, so it does not allocate.
    unfinished: Vec<Token>,
    /// Idle deadlines, when `--idle-timeout` is on; their only owner. Slab key = `ConnId`.
    idle: Option<IdleTimers>,
    /// After EMFILE and friends, accepting pauses; this says until when, and logs it.
    accept_backoff: AcceptBackoff,
    /// Set when shutdown begins: pending echoes may flush until then.
    grace_deadline: Option<Instant>,
    /// Keeps the waker alive; the shutdown handle holds a closure that fires it.
    _waker: Arc<Waker>,
    shutdown: ShutdownHandle,
    config: ServerConfig,
    /// `--max-connections` and the socket options of an accepted connection.
    admission: Admission,
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
            accept_backoff: AcceptBackoff::default(),
            grace_deadline: None,
            _waker: waker,
            shutdown: shutdown.clone(),
            config: config.clone(),
            admission: Admission::new(config, Arc::clone(&stats)),
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
            // Before sleeping: a statistics line read meanwhile is current. A few relaxed
            // atomic adds per turn, however many reads and writes the turn made.
            self.stats.publish(&mut self.tally);
            let timeout = self.poll_timeout(Instant::now());
            wait(&mut self.poll, &mut events, timeout)?;
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
                self.stats.publish(&mut self.tally);
                return Ok(());
            }
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
        let mut io = || -> io::Result<ReadStop> {
            if ready.writable {
                conn.on_writable(now)?;
            }
            if ready.readable {
                return conn.on_readable(&mut self.read_buf, ready.drain, now);
            }
            Ok(ReadStop::Done)
        };
        let result = io();
        self.tally.add(conn.take_io());
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
            timers.stop(ConnId(token.0));
        }
        self.stats.connection_closed();
        // Read, and now never echoed: what was pending, and also the bytes of a partial
        // frame or of a refused one, which were read but never became pending.
        self.tally.add(conn.take_io_at_close());
        let (bytes_in, bytes_out, pending) = conn.byte_counts();
        debug!(
            "token={} closed ({reason}) peer={} read={bytes_in} echoed={bytes_out} unsent={pending}",
            token.0,
            conn.peer()
        );
        release_crowd(&mut self.connections);
    }

    /// How long `poll` may sleep: until the earliest timer, at once if connections are
    /// waiting for another turn, or forever if nothing is scheduled.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.unfinished.is_empty() {
            return Some(Duration::ZERO);
        }
        let idle = self.idle.as_ref().and_then(IdleTimers::next_deadline);
        let linger_check = self.grace_deadline.map(|_| now + LINGER_CHECK);
        [idle, self.grace_deadline, self.accept_backoff.paused_until(), linger_check]
            .into_iter()
            .flatten()
            .min()
            .map(|deadline| deadline.saturating_duration_since(now))
    }

    /// Everything that happens because time passed rather than because a socket moved.
    fn run_timers(&mut self, now: Instant) {
        self.expire_idle(now);
        if self.accept_backoff.resume_due(now) {
            self.accept_ready(now);
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
