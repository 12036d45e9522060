//! The blocking family: thread-per-conn and blocking, the models tutorials teach.
//!
//! Both models use plain `std::net` sockets in blocking mode: `accept`, `read` and `write`
//! put the calling thread to sleep until they can make progress. That makes the echo itself
//! three steps (read, write all of it, repeat; see [`echo_blocking`]) and moves the hard
//! parts to the edges, which this module handles once for both models:
//!
//! - **Stopping a sleeping thread.** A thread asleep in `accept` or `read` never looks at a
//!   flag, so a stop request reaches it through its socket: `shutdown(2)` on the listener
//!   makes a blocked `accept` fail (Linux: EINVAL), and `shutdown(SHUT_RD)` on a connection
//!   makes a blocked `read` return 0, as if the client had closed. [`LiveConnections`] keeps
//!   every open socket within reach for that; [`wake_on_shutdown`] wires it to the
//!   [`ShutdownHandle`].
//! - **Idle timeout.** SO_RCVTIMEO and SO_SNDTIMEO: a `read` or `write` that moves no byte
//!   for that long fails with `WouldBlock`, and the connection is closed (set on admission,
//!   `crate::lifecycle`, which admits a connection here as in every model).
//! - **Grace.** A thread blocked in `write` to a client that never reads only wakes when the
//!   write can proceed. When the grace period is over, `shutdown(SHUT_RDWR)` makes that write
//!   fail, so a stop always completes ([`LiveConnections::drain`]).
//! - **Linger.** A connection that the stop ended does not close while the client is still
//!   sending and has not yet acknowledged every echo: that close would be a reset that
//!   destroys the echoes in flight. It reads and discards until the client has them all, or
//!   the grace period ends ([`echo::linger_after_stop`], by `crate::lifecycle::linger`'s rule).
//!
//! Echo semantics are the event loop's: every byte read is written back, in order, before the
//! next read; on EOF everything read has already been written, so the connection just closes.
//!
//! - `accept.rs`: the accept loop, and waking it and the connections for a stop.
//! - `registry.rs`: the open connections, within reach of the stop request.
//! - `echo.rs`: read, write all of it, repeat.
//! - `thread_per_conn.rs`, `one_at_a_time.rs`: the two models; each only decides *where*
//!   a connection runs ([`Placement`]).
//! - `udp.rs`: a `udp:` listener: one thread that receives each datagram and sends it back.
//!
//! Several listeners (`serve ADDR...`) each get a thread of their own: an accept loop per
//! stream listener, a receive loop per UDP socket. They share one registry of open
//! connections, so `--max-connections` counts every listener's, and one stop request.

mod accept;
mod echo;
mod one_at_a_time;
mod registry;
mod thread_per_conn;
mod udp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};

use std::io;
use std::thread;

use crate::addr::ListenAddr;
use crate::config::ServerConfig;
use crate::framing::Framer;
use crate::lifecycle::{Admission, proxy_header};
use crate::listening::Listening;
use crate::net::{BlockingStream, ListenSocket, Peer};
use crate::notify::WatchdogTimer;
use crate::shutdown::ShutdownHandle;
use crate::stats::{ClientEvent, Stats};
use echo::{ECHO_BUFFER, End, echo_blocking, linger_after_stop};
use registry::{LiveConnections, Registered};

use accept::wake_on_shutdown;

/// Where a blocking server runs each connection: the one thing its two models decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On a thread of its own: the thread-per-conn model (`thread_per_conn.rs`).
    OwnThread,
    /// On the accepting thread, one at a time: the blocking model (`one_at_a_time.rs`).
    AcceptingThread,
}

/// Serve every listener, each on a thread of its own, until `shutdown` is requested and
/// the connections have finished (or the grace period is over), running each connection
/// where `placement` says. Each listener counts in its own counters. The first listener's
/// thread sends `watchdog`'s pings, between accepts (or datagrams).
pub fn serve(
    placement: Placement,
    listeners: Vec<Listening>,
    config: &ServerConfig,
    shutdown: &ShutdownHandle,
    mut watchdog: Option<WatchdogTimer>,
) -> io::Result<()> {
    let live = Arc::new(LiveConnections::default());
    if placement == Placement::AcceptingThread {
        one_at_a_time::enforce_grace_on_shutdown(shutdown, &live, config.shutdown_grace);
    }
    let mut threads = Vec::new();
    for (i, listening) in listeners.into_iter().enumerate() {
        let ctx = Arc::new(Context::new(config, shutdown, &listening, Arc::clone(&live)));
        let watchdog = watchdog.take();
        let spawned = match listening.socket {
            ListenSocket::Stream(listener) => {
                let listener = Arc::new(listener);
                wake_on_shutdown(shutdown, &listener, &ctx.live, config.shutdown_grace);
                thread::Builder::new().name(format!("accept-{i}")).spawn(move || match placement {
                    Placement::OwnThread => thread_per_conn::serve(listener, &ctx, watchdog),
                    Placement::AcceptingThread => one_at_a_time::serve(listener, &ctx, watchdog),
                })
            }
            ListenSocket::Datagram(socket) => thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || udp::serve(socket, &ctx, watchdog)),
        };
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                shutdown.shutdown(); // the others must not outlive us
                join(threads);
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot start a thread for {}: {e}", listening.addr),
                ));
            }
        }
    }
    let panicked = join(threads);
    if placement == Placement::OwnThread {
        // Every acceptor has stopped; the connections' own threads may still be echoing.
        live.begin_shutdown(config.shutdown_grace); // done already if the waker got there first
        live.drain(config.shutdown_grace);
    }
    match panicked {
        0 => Ok(()),
        n => Err(io::Error::other(format!("{n} serving threads panicked"))),
    }
}

/// Wait for every listener's thread; how many panicked.
fn join(threads: Vec<thread::JoinHandle<()>>) -> usize {
    threads.into_iter().map(thread::JoinHandle::join).filter(Result::is_err).count()
}

/// What both models need to serve one listener's connections: the config's limits, the
/// listener's counters, the registry of open sockets and the stop request.
#[derive(Debug)]
pub struct Context {
    /// The listener's counters, for the statistics line and the summary.
    pub stats: Arc<Stats>,
    /// The listener's address, for the logs.
    pub addr: ListenAddr,
    /// Every open connection (of every listener), so shutdown can reach its socket.
    pub live: Arc<LiveConnections>,
    /// Stop requests; connections check it before every read.
    pub shutdown: ShutdownHandle,
    /// `--max-connections`, the socket options, and `--idle-timeout` as socket timeouts.
    admission: Admission,
    /// Where frames end (`--framing`, `--max-frame`).
    framer: Framer,
    /// `--shutdown-grace`, for a connection that sees the stop before the registry does.
    shutdown_grace: Duration,
    /// `--proxy-protocol`: each connection's PROXY header must be whole this long after
    /// its accept; `None` without the flag.
    proxy_timeout: Option<Duration>,
    /// `--idle-timeout`, the socket timeout to put back once the header is read.
    idle_timeout: Option<Duration>,
}

impl Context {
    /// The state of `listening`'s connections, registered in `live` with every other
    /// listener's.
    pub fn new(
        config: &ServerConfig,
        shutdown: &ShutdownHandle,
        listening: &Listening,
        live: Arc<LiveConnections>,
    ) -> Self {
        Context {
            admission: Admission::blocking(config, Arc::clone(&listening.stats)),
            stats: Arc::clone(&listening.stats),
            addr: listening.addr.clone(),
            live,
            shutdown: shutdown.clone(),
            framer: config.framer(),
            shutdown_grace: config.shutdown_grace,
            proxy_timeout: config.proxy_protocol.then_some(config.proxy_timeout),
            idle_timeout: config.idle_timeout,
        }
    }

    /// Admit a fresh connection as every model does (the cap, the socket options, the
    /// timeouts) and register it; `None`, and the connection closed, if it may not be served.
    pub fn admit(&self, stream: BlockingStream, peer: Peer) -> Option<Registered> {
        let admitted = self.admission.admit(&stream.sock_ref(), stream.is_tcp(), || peer);
        admitted.then(|| LiveConnections::register(&self.live, stream))
    }

    /// A connection [`Context::admit`] let in could not be served after all (no thread).
    pub fn not_served(&self) {
        self.admission.not_served();
    }
}

/// With `--proxy-protocol`, read the connection's PROXY header into `buf`: the client it
/// names, and how many of the client's bytes followed it (now at the front of `buf`); the
/// connection, admitted with a place only, is counted open. Without the flag, the peer and
/// none. `None`: refused (counted, logged, its place freed); it is closed.
fn read_proxy_header(conn: &Registered, peer: Peer, ctx: &Context, buf: &mut [u8]) -> Option<(Peer, usize)> {
    let Some(timeout) = ctx.proxy_timeout else { return Some((peer, 0)) };
    match proxy_header::read_blocking(conn.stream(), buf, peer, timeout, ctx.idle_timeout) {
        Ok((client, first)) => {
            ctx.stats.connection_opened(); // admitted with a place only: served from now on
            buf.copy_within(first.clone(), 0);
            Some((client, first.len()))
        }
        Err(why) => {
            let why = if ctx.shutdown.is_requested() { "the server is stopping".into() } else { why };
            proxy_header::refused(&ctx.stats, peer, &why, Instant::now());
            None
        }
    }
}

/// Serve one registered connection to its end on the calling thread, then close it: the
/// whole life of a connection in both models.
pub fn serve_connection(conn: Registered, peer: Peer, ctx: &Context) {
    let mut buf = vec![0; ECHO_BUFFER];
    let Some((peer, first)) = read_proxy_header(&conn, peer, ctx, &mut buf) else { return };
    debug!("conn={} opened peer={peer} on {} (open: {})", conn.id, ctx.addr, ctx.live.len());
    let mut echoed =
        echo_blocking(conn.stream(), conn.id, &mut buf, first, ctx.framer, &ctx.shutdown, &ctx.stats);
    match echoed.end {
        End::Shutdown => {
            let until = ctx.live.grace_ends().unwrap_or_else(|| Instant::now() + ctx.shutdown_grace);
            linger_after_stop(conn.stream(), conn.id, &mut buf, until);
        }
        // The rest of the oversized frame may still be arriving: closing with it unread would
        // reset the connection and destroy the echoes of the frames before it. The grace
        // period bounds this linger as it bounds a shutdown's.
        End::TooLarge(_) => {
            linger_after_stop(conn.stream(), conn.id, &mut buf, Instant::now() + ctx.shutdown_grace)
        }
        _ => {}
    }
    ctx.stats.publish(&mut echoed.counts.take_at_close());
    ctx.stats.connection_closed();
    if let End::TooLarge(oversize) = &echoed.end {
        let detail =
            || format!("{peer}: {oversize}: closing the connection after echoing the frames before it");
        ctx.stats.client_event(ClientEvent::FrameTooLarge, Instant::now(), detail);
    }
    if echoed.discarded > 0 {
        let when = if matches!(echoed.end, End::Shutdown) { "shutting down" } else { "EOF" };
        info!("{peer}: {when} in the middle of a frame: discarded its {} bytes", echoed.discarded);
    }
    debug!(
        "conn={} closed ({}) peer={peer} on {} read={} echoed={} unsent={}",
        conn.id,
        echoed.end,
        ctx.addr,
        echoed.counts.bytes_in(),
        echoed.counts.bytes_out(),
        echoed.counts.unsent() - echoed.discarded as u64
    );
    // `conn` drops here: the socket closes and its registry slot is freed.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framing;
    use crate::stats::ConnCounts;
    use echo::write_all_counted;
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;
    use std::thread;
    use std::time::Instant;

    const RAW: Framer = Framer::new(Framing::Raw, 1);

    /// A connected pair: the server side as a registered connection, and the client side.
    fn pair(live: &Arc<LiveConnections>) -> (Registered, UnixStream) {
        let (server, client) = UnixStream::pair().expect("socketpair");
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (LiveConnections::register(live, BlockingStream::Unix(server)), client)
    }

    #[test]
    fn echoes_until_the_client_half_closes() {
        let live = Arc::new(LiveConnections::default());
        let (conn, mut client) = pair(&live);
        client.write_all(b"hello, echo").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let echoed = echo_blocking(
            conn.stream(),
            conn.id,
            &mut vec![0; 4],
            0,
            RAW,
            &ShutdownHandle::new(),
            &Stats::default(),
        );
        assert!(matches!(echoed.end, End::ClientClosed), "{}", echoed.end);
        assert_eq!((echoed.counts.bytes_in(), echoed.counts.bytes_out()), (11, 11));
        drop(conn);
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"hello, echo");
    }

    #[test]
    fn shut_rd_wakes_a_blocked_read_and_drain_waits_for_it() {
        let live = Arc::new(LiveConnections::default());
        let (conn, _client) = pair(&live);
        // The stop flag is never set here: the only way out of `read` is the SHUT_RD.
        let server = thread::spawn(move || {
            let echoed = echo_blocking(
                conn.stream(),
                conn.id,
                &mut vec![0; 16],
                0,
                RAW,
                &ShutdownHandle::new(),
                &Stats::default(),
            );
            (echoed.counts.bytes_in(), echoed.end) // `conn` drops here and leaves the registry
        });
        thread::sleep(Duration::from_millis(50)); // most likely asleep in `read` by now
        assert_eq!(live.len(), 1);
        live.begin_shutdown(Duration::from_secs(10));
        assert!(live.wait_until_empty(Instant::now() + Duration::from_secs(10)), "the reader never woke");
        let (bytes_in, end) = server.join().unwrap();
        assert_eq!(bytes_in, 0);
        assert!(matches!(end, End::ClientClosed), "{end}"); // a 0 from read, as at EOF
    }

    #[test]
    fn drain_ends_a_write_blocked_on_a_client_that_never_reads() {
        let live = Arc::new(LiveConnections::default());
        let (conn, _client) = pair(&live);
        let writer = thread::spawn(move || {
            let mut counts = ConnCounts::default();
            // Far more than a socketpair buffers: this blocks once the buffers are full.
            let result = write_all_counted(conn.stream(), &vec![7; 64 << 20], &mut counts);
            (counts.bytes_out(), result.err())
        });
        live.drain(Duration::from_millis(100));
        assert_eq!(live.len(), 0, "the writer is still registered");
        let (written, end) = writer.join().unwrap();
        assert!(written < 64 << 20);
        assert!(matches!(end, Some(End::Error(_))), "{end:?}");
    }

    #[test]
    fn a_connection_registered_after_the_stop_never_reads() {
        let live = Arc::new(LiveConnections::default());
        let stop = ShutdownHandle::new();
        stop.shutdown();
        live.begin_shutdown(Duration::ZERO);
        let (conn, mut client) = pair(&live);
        client.write_all(b"late").unwrap();
        let echoed =
            echo_blocking(conn.stream(), conn.id, &mut vec![0; 16], 0, RAW, &stop, &Stats::default());
        assert!(matches!(echoed.end, End::Shutdown));
        assert_eq!(echoed.counts.bytes_in(), 0);
    }
}
