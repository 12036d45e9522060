//! The thread-per-connection model: blocking `std::net` sockets, one OS thread per client.
//!
//! ```text
//!   acceptor thread                      connection threads (one per client)
//!   loop {                               conn-0: loop { read -> write all } until EOF
//!       accept()        -- spawn -->     conn-1: loop { read -> write all } until EOF
//!       over the cap? close at once      ...
//!   }                                    each sleeps in read/write; the kernel schedules them
//! ```
//!
//! This is the design of the classic Go echo server (a goroutine per connection), with OS
//! threads: each connection's code is straight-line blocking I/O, and the *scheduler* does
//! what the event loop does by hand, waking whichever thread's socket became ready. The cost
//! moves into the kernel: a thread (stack, task struct, a context switch per wake-up) per
//! connection, idle or not.
//!
//! The echo itself, the accept loop and the shutdown plumbing are shared with the blocking
//! model in [`super`]; this file only decides *where* a connection runs.
//!
//! Shutdown: the stop request wakes the acceptor (`shutdown(2)` on the listener) and makes
//! every connection's blocked `read` return 0 (`shutdown(SHUT_RD)`); each thread writes back
//! what it had read and closes. The acceptor then waits up to `--shutdown-grace` for them and
//! shuts down the sockets of any that are still stuck writing to a client that does not read.

use std::io;
use std::sync::Arc;
use std::thread;

use log::warn;

use super::accept::accept_until_shutdown;
use super::registry::Registered;
use super::{Context, serve_connection};
use crate::net::{ACCEPT_BACKOFF, BlockingStream, Peer, StdListener};
use crate::notify::WatchdogTimer;

/// Stack size of a connection thread: 64 KiB instead of glibc's default 8 MiB.
///
/// A connection thread only ever holds a few small frames (this echo loop, `read`/`write`,
/// a log line being formatted); its 16 KiB buffer is on the heap. The stack is reserved
/// address space, and only the pages a thread touches become memory, so the default would
/// not cost 8 MiB of RAM per connection, but it does cost 8 MiB of address space and of
/// overcommit accounting each: 10,000 connections would reserve 80 GiB, which fails under
/// `vm.overcommit_memory=2` and on small machines. 64 KiB keeps 10,000 connections at
/// 640 MiB reserved, with room to spare for the frames above.
pub const CONNECTION_STACK: usize = 64 * 1024;

/// Accept on `listener`, giving each connection a thread of its own, until a stop is
/// requested (the caller then waits for the connections, every listener's at once).
pub fn serve(listener: Arc<StdListener>, ctx: &Arc<Context>, watchdog: Option<WatchdogTimer>) {
    accept_until_shutdown(&listener, &ctx.shutdown, &ctx.stats, watchdog, |stream, peer| {
        admit(ctx, stream, peer)
    });
    drop(listener); // stop listening now: closes the socket (and removes a Unix socket file)
}

/// Give a fresh connection its own thread, or close it at once if it may not be served.
fn admit(ctx: &Arc<Context>, stream: BlockingStream, peer: Peer) {
    let Some(conn) = ctx.admit(stream, peer) else { return };
    if let Err(e) = spawn_connection(ctx, conn, peer) {
        // Out of threads or memory: the connection (dropped with the closure) is closed.
        // Like EMFILE on accept, the next spawn would fail too: pause instead of spinning.
        warn!(
            "cannot start a thread for {peer}, closing it: {e}; pausing accepts for {ACCEPT_BACKOFF:?} \
             (threads are limited by ulimit -u, kernel.threads-max, kernel.pid_max, and vm.max_map_count: \
             each thread maps a stack and a signal stack, with a guard page each)"
        );
        ctx.not_served();
        thread::sleep(ACCEPT_BACKOFF);
    }
}

/// Run the connection on a new thread with a small stack, named after its connection id.
fn spawn_connection(ctx: &Arc<Context>, conn: Registered, peer: Peer) -> io::Result<()> {
    let ctx = Arc::clone(ctx);
    thread::Builder::new()
        .name(format!("conn-{}", conn.id))
        .stack_size(CONNECTION_STACK)
        .spawn(move || serve_connection(conn, peer, &ctx))
        .map(drop) // detached: the registry, not the JoinHandle, tells us when it is done
}
