//! Blocking echo: what the thread-per-conn and blocking models share.
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
//!   for that long fails with `WouldBlock`, and the connection is closed.
//! - **Grace.** A thread blocked in `write` to a client that never reads only wakes when the
//!   write can proceed. When the grace period is over, `shutdown(SHUT_RDWR)` makes that write
//!   fail, so a stop always completes ([`LiveConnections::drain`]).
//!
//! Echo semantics are the event loop's: every byte read is written back, in order, before the
//! next read; on EOF everything read has already been written, so the connection just closes.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use slab::Slab;

use crate::config::ServerConfig;
use crate::event_loop::accept::{ACCEPT_BACKOFF, connection_gone, out_of_resources};
use crate::net::{BlockingStream, Peer, SocketOptions, StdListener};
use crate::shutdown::ShutdownHandle;
use crate::stats::Stats;

/// Each connection's read buffer: 16 KiB, on the heap, allocated when the connection starts.
/// A blocking model needs one buffer per connection (the event loop shares one 64 KiB buffer
/// among all of them), so it is smaller; 16 KiB still takes a loopback burst in a few reads.
/// On the heap rather than the stack, so the thread stack stays small (see `threaded.rs`).
pub const ECHO_BUFFER: usize = 16 * 1024;

/// After the grace period, `shutdown(SHUT_RDWR)` makes every blocked call return at once;
/// this is how long we then wait for the connection threads to notice and leave.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What both models need to serve one connection: the config's limits, the counters, the
/// registry of open sockets and the stop request.
#[derive(Debug)]
pub struct Context {
    /// Counters for the summary line.
    pub stats: Stats,
    /// Every open connection, so shutdown can reach its socket.
    pub live: Arc<LiveConnections>,
    /// Stop requests; connections check it before every read.
    pub shutdown: ShutdownHandle,
    /// SO_SNDBUF / SO_RCVBUF / TCP_NODELAY, as the event loop sets them.
    socket_options: SocketOptions,
    /// SO_RCVTIMEO and SO_SNDTIMEO, when `--idle-timeout` is on.
    idle_timeout: Option<Duration>,
}

impl Context {
    /// The shared state of one server.
    pub fn new(config: &ServerConfig, shutdown: &ShutdownHandle) -> Self {
        Context {
            stats: Stats::default(),
            live: Arc::new(LiveConnections::default()),
            shutdown: shutdown.clone(),
            socket_options: SocketOptions {
                send_buffer: config.send_buffer,
                recv_buffer: config.recv_buffer,
            },
            idle_timeout: config.idle_timeout,
        }
    }

    /// Set the socket options and timeouts of a fresh connection and register it; `None`
    /// (and the connection closed) if the socket refuses its options.
    pub fn admit(&self, stream: BlockingStream, peer: Peer) -> Option<Registered> {
        let prepared = self.socket_options.apply(stream.sock_ref(), stream.is_tcp()).and_then(|()| {
            // A read or write that moves nothing for this long fails with WouldBlock. (The
            // kernel reads a zero timeout as "none"; the CLI turns `--idle-timeout 0` into None.)
            stream.sock_ref().set_read_timeout(self.idle_timeout)?;
            stream.sock_ref().set_write_timeout(self.idle_timeout)
        });
        match prepared {
            Ok(()) => Some(LiveConnections::register(&self.live, stream)),
            Err(e) => {
                debug!("accept: socket options for {peer} failed, closing: {e}");
                None
            }
        }
    }
}

/// Accept connections until a stop is requested, handing each to `on_accept`.
///
/// `accept` blocks; the stop request interrupts it through [`wake_on_shutdown`]. An error is
/// the end only once a stop was requested; before that it is handled as the event loop does:
/// a connection that died in the queue is skipped, and running out of descriptors or memory
/// (the connection stays queued) pauses accepting for `ACCEPT_BACKOFF` instead of spinning.
pub fn accept_until_shutdown(
    listener: &StdListener,
    shutdown: &ShutdownHandle,
    mut on_accept: impl FnMut(BlockingStream, Peer),
) {
    loop {
        match listener.accept_blocking() {
            Ok(_) if shutdown.is_requested() => return, // too late to serve: dropping it closes it
            Ok((stream, peer)) => on_accept(stream, peer),
            Err(e) if shutdown.is_requested() => return debug!("accept woken for shutdown: {e}"),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: retry
            Err(e) if connection_gone(&e) => debug!("accept: skipped a connection: {e}"),
            Err(e) => {
                let what = if out_of_resources(&e) { "out of resources" } else { "unexpected error" };
                warn!("accept: {e} ({what}): pausing accepts for {ACCEPT_BACKOFF:?}");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Make a stop request reach the threads that sleep in `read` and `accept`: make every live
/// connection's `read` return 0, and wake the acceptor.
///
/// The waker holds weak references, so the listener still closes (and a Unix socket file is
/// still removed) when `serve` returns, however long the handle lives.
pub fn wake_on_shutdown(
    shutdown: &ShutdownHandle,
    listener: &Arc<StdListener>,
    live: &Arc<LiveConnections>,
    grace: Duration,
) {
    let listener = Arc::downgrade(listener);
    let live = Arc::downgrade(live);
    shutdown.add_waker(move || {
        // Connections first, so the acceptor wakes up to a server that has stopped reading.
        if let Some(live) = live.upgrade() {
            live.begin_shutdown(grace);
        }
        if let Some(listener) = listener.upgrade() {
            // A second wake-up finds the socket already shut down (ENOTCONN): harmless.
            if let Err(e) = listener.wake_acceptor() {
                debug!("waking the acceptor: {e}");
            }
        }
    });
}

/// Serve one registered connection to its end on the calling thread, then close it: the
/// whole life of a connection in both models.
pub fn serve_connection(conn: Registered, peer: Peer, ctx: &Context) {
    ctx.stats.connection_opened();
    debug!("{} opened peer={peer} (open: {})", conn.id, ctx.live.len());
    let mut buf = vec![0; ECHO_BUFFER];
    let echoed = echo_blocking(conn.stream(), conn.id, &mut buf, &ctx.shutdown);
    ctx.stats.connection_closed(echoed.bytes_out);
    debug!(
        "{} closed ({}) peer={peer} read={} echoed={} unsent={}",
        conn.id,
        echoed.end,
        echoed.bytes_in,
        echoed.bytes_out,
        echoed.bytes_in - echoed.bytes_out
    );
    // `conn` drops here: the socket closes and its registry slot is freed.
}

/// How a connection's echo ended.
#[derive(Debug)]
pub enum End {
    /// The client closed (or half-closed) its side; everything it sent was echoed.
    ClientClosed,
    /// No byte moved for `--idle-timeout`, in either direction.
    IdleTimeout,
    /// The server is stopping: reading stopped; everything read was echoed.
    Shutdown,
    /// The socket failed (reset by the client, or shut down when the grace period ended).
    Error(io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientClosed => f.write_str("done"),
            End::IdleTimeout => f.write_str("idle timeout"),
            End::Shutdown => f.write_str("shutdown"),
            End::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// What [`echo_blocking`] did.
#[derive(Debug)]
pub struct Echoed {
    /// Bytes read from the client.
    pub bytes_in: u64,
    /// Bytes written back; less than `bytes_in` only if a write failed.
    pub bytes_out: u64,
    /// Why it stopped.
    pub end: End,
}

/// Echo until the client closes, goes idle, fails, or the server stops. `id` is for logs.
///
/// Blocking I/O needs no readiness bookkeeping: `read` sleeps until bytes (or EOF) arrive,
/// and the bytes are written back in full before the next read, so nothing is ever pending
/// between calls and an EOF needs no flushing. The price: this thread can do nothing else
/// meanwhile, and a client that stops reading holds it in `write`.
pub fn echo_blocking(
    stream: &BlockingStream,
    id: usize,
    buf: &mut [u8],
    shutdown: &ShutdownHandle,
) -> Echoed {
    let mut reader = stream;
    let mut echoed = Echoed { bytes_in: 0, bytes_out: 0, end: End::ClientClosed };
    echoed.end = loop {
        // Checked before every read: after a stop request, SHUT_RD makes a blocked read
        // return 0, but TCP may still hand over bytes that were already queued.
        if shutdown.is_requested() {
            break End::Shutdown;
        }
        let n = match reader.read(buf) {
            Ok(0) if shutdown.is_requested() => break End::Shutdown, // our SHUT_RD, not the client
            Ok(0) => break End::ClientClosed,
            Ok(n) => n,
            Err(e) if timed_out(&e) => break End::IdleTimeout, // SO_RCVTIMEO expired
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: retry
            Err(e) => break End::Error(e),
        };
        trace!("{id} read n={n}");
        echoed.bytes_in += n as u64;
        if let Err(end) = write_all_counted(stream, &buf[..n], &mut echoed.bytes_out) {
            break end;
        }
        trace!("{id} wrote n={n}");
    };
    echoed
}

/// `write_all`, counting every byte the kernel takes, so the summary is exact even when a
/// write fails halfway.
fn write_all_counted(stream: &BlockingStream, mut data: &[u8], written: &mut u64) -> Result<(), End> {
    let mut writer = stream;
    while !data.is_empty() {
        match writer.write(data) {
            Ok(0) => return Err(End::Error(ErrorKind::WriteZero.into())),
            Ok(n) => {
                *written += n as u64;
                data = &data[n..];
            }
            Err(e) if timed_out(&e) => return Err(End::IdleTimeout), // SO_SNDTIMEO: client not reading
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(End::Error(e)),
        }
    }
    Ok(())
}

/// A socket timeout (SO_RCVTIMEO / SO_SNDTIMEO) expired: EAGAIN on Linux.
fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The open connections of one server, so that a stop request can reach their sockets while
/// their threads sleep in `read` or `write`.
///
/// Each socket is shared (`Arc`) between its connection and this registry, so it is closed
/// when both let go; [`Registered`] lets go of both at once, under the lock, so a socket
/// found here is always open and always the connection it was registered as.
#[derive(Debug, Default)]
pub struct LiveConnections {
    /// The open sockets; the slab key is the connection id in logs.
    sockets: Mutex<Slab<Arc<BlockingStream>>>,
    /// Notified whenever a connection leaves, so [`LiveConnections::drain`] can wait.
    left: Condvar,
    /// Set by the first [`LiveConnections::begin_shutdown`]; a waker may run twice.
    stopping: AtomicBool,
}

impl LiveConnections {
    /// Add a connection; it stays until the returned guard is dropped.
    pub fn register(live: &Arc<LiveConnections>, stream: BlockingStream) -> Registered {
        let stream = Arc::new(stream);
        let id = live.lock().insert(Arc::clone(&stream));
        Registered { id, stream: Some(stream), live: Arc::clone(live) }
    }

    /// Open connections right now (the `--max-connections` count).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Once per server: log that shutdown began, and `shutdown(SHUT_RD)` every connection,
    /// so a thread blocked in `read` sees 0 and stops; writes still work, so echoes already
    /// read are finished. A connection registered after this sees the stop request before
    /// its first read.
    pub fn begin_shutdown(&self, grace: Duration) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        info!("shutting down: {} connections open, flushing pending echoes for up to {grace:?}", self.len());
        self.shutdown_all(Shutdown::Read);
    }

    /// `shutdown(SHUT_RDWR)` on every connection: blocked reads and writes fail at once.
    pub fn close_all(&self) {
        self.shutdown_all(Shutdown::Both);
    }

    fn shutdown_all(&self, how: Shutdown) {
        for (id, socket) in self.lock().iter() {
            // ENOTCONN when the client already reset it: nothing left to stop.
            if let Err(e) = socket.sock_ref().shutdown(how) {
                debug!("{id} shutdown({how:?}): {e}");
            }
        }
    }

    /// Wait until every connection has left, or `deadline`; true if they all left.
    pub fn wait_until_empty(&self, deadline: Instant) -> bool {
        let mut sockets = self.lock();
        while !sockets.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            sockets = self.left.wait_timeout(sockets, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    /// The end of a graceful stop, once reading has stopped: give the connections `grace` to
    /// finish their echoes, then shut down whatever is left and wait briefly for its threads.
    pub fn drain(&self, grace: Duration) {
        if self.wait_until_empty(Instant::now() + grace) {
            return;
        }
        warn!("grace period over: closing {} connections with echoes unsent", self.len());
        self.close_all();
        if !self.wait_until_empty(Instant::now() + CLOSE_WAIT) {
            warn!("{} connection threads still busy after shutdown(2): not waiting for them", self.len());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slab<Arc<BlockingStream>>> {
        // The slab stays consistent even if a thread panicked while holding the lock.
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One registered connection: its socket, and its place in [`LiveConnections`]. Dropping it
/// closes the socket and frees the place.
#[derive(Debug)]
pub struct Registered {
    /// The registry key, shown in logs as the connection id.
    pub id: usize,
    /// Always `Some` until dropped.
    stream: Option<Arc<BlockingStream>>,
    live: Arc<LiveConnections>,
}

impl Registered {
    /// The socket, for reading and writing.
    pub fn stream(&self) -> &BlockingStream {
        self.stream.as_deref().expect("present until dropped")
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        drop(self.stream.take()); // ours first, so the registry holds the last reference
        let mut sockets = self.live.lock();
        sockets.remove(self.id); // the last reference: the socket closes here, under the lock
        drop(sockets);
        self.live.left.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

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
        let echoed = echo_blocking(conn.stream(), conn.id, &mut [0; 4], &ShutdownHandle::new());
        assert!(matches!(echoed.end, End::ClientClosed), "{}", echoed.end);
        assert_eq!((echoed.bytes_in, echoed.bytes_out), (11, 11));
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
            let echoed = echo_blocking(conn.stream(), conn.id, &mut [0; 16], &ShutdownHandle::new());
            (echoed.bytes_in, echoed.end) // `conn` drops here and leaves the registry
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
            let mut written = 0;
            // Far more than a socketpair buffers: this blocks once the buffers are full.
            let result = write_all_counted(conn.stream(), &vec![7; 64 << 20], &mut written);
            (written, result.err())
        });
        live.drain(Duration::from_millis(100));
        assert!(live.is_empty(), "the writer is still registered");
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
        let echoed = echo_blocking(conn.stream(), conn.id, &mut [0; 16], &stop);
        assert!(matches!(echoed.end, End::Shutdown));
        assert_eq!(echoed.bytes_in, 0);
    }
}
