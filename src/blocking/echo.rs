//! The blocking echo: read, write all of it, repeat, until the client closes.

use std::io::{self, ErrorKind, Read, Write};

use log::trace;

use crate::net::BlockingStream;
use crate::shutdown::ShutdownHandle;
use crate::stats::{IoTally, Stats};

/// Each connection's read buffer: 16 KiB, on the heap, allocated when the connection starts.
/// A blocking model needs one buffer per connection (the event loop shares one 64 KiB buffer
/// among all of them), so it is smaller; 16 KiB still takes a loopback burst in a few reads.
/// On the heap rather than the stack, so the thread stack stays small (see `thread_per_conn.rs`).
pub const ECHO_BUFFER: usize = 16 * 1024;

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

/// Echo until the client closes, goes idle, fails, or the server stops. `id` is for logs;
/// every read and every write-all is added to `stats` as it happens (one relaxed atomic add
/// beside a syscall), so the live statistics line sees a long connection's traffic.
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
    stats: &Stats,
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
        stats.record(IoTally { messages: 1, bytes_read: n as u64, ..IoTally::default() });
        let before = echoed.bytes_out;
        let written = write_all_counted(stream, &buf[..n], &mut echoed.bytes_out);
        stats.record(IoTally { bytes_echoed: echoed.bytes_out - before, ..IoTally::default() });
        if let Err(end) = written {
            break end;
        }
        trace!("{id} wrote n={n}");
    };
    echoed
}

/// `write_all`, counting every byte the kernel takes, so the summary is exact even when a
/// write fails halfway.
pub(super) fn write_all_counted(
    stream: &BlockingStream,
    mut data: &[u8],
    written: &mut u64,
) -> Result<(), End> {
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
