//! The blocking echo: read, write all of it, repeat, until the client closes. With
//! `--framing line|length`: read, write the frames that are whole, keep the start of the next
//! one at the front of the buffer, repeat.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Instant;

use log::{debug, trace};

use crate::framing::{AtEof, Framer, Oversize, Rest};
use crate::lifecycle::linger::{self, LINGER_CHECK};
use crate::net::{BlockingStream, interrupted, timed_out};
use crate::shutdown::ShutdownHandle;
use crate::stats::{ConnCounts, Stats};

/// Each connection's read buffer: 16 KiB, on the heap, allocated when the connection starts.
/// A blocking model needs one buffer per connection (the event loop shares one 64 KiB buffer
/// among all of them), so it is smaller; 16 KiB still takes a loopback burst in a few reads.
/// On the heap rather than the stack, so the thread stack stays small (see `thread_per_conn.rs`).
/// With framing it grows (doubling) while a frame larger than it arrives, up to one whole
/// frame, and shrinks back once that frame is echoed.
pub const ECHO_BUFFER: usize = 16 * 1024;

/// How a connection's echo ended.
#[derive(Debug)]
pub enum End {
    /// The client closed (or half-closed) its side; everything it sent was echoed.
    ClientClosed,
    /// No byte moved for `--idle-timeout`, in either direction.
    IdleTimeout,
    /// The server is stopping: reading stopped; everything read was echoed (but a partial
    /// frame, which can never be whole now).
    Shutdown,
    /// A frame was over `--max-frame`; the frames before it were echoed.
    TooLarge(Oversize),
    /// The socket failed (reset by the client, or shut down when the grace period ended).
    Error(io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientClosed => f.write_str("done"),
            End::IdleTimeout => f.write_str("idle timeout"),
            End::Shutdown => f.write_str("shutdown"),
            End::TooLarge(_) => f.write_str("frame over the limit"),
            End::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// What [`echo_blocking`] did.
#[derive(Debug)]
pub struct Echoed {
    /// Reads, frames and bytes (bytes out fall short of bytes in only if a write failed or a
    /// frame was dropped). All but the unsent bytes are in `stats` already.
    pub counts: ConnCounts,
    /// Bytes of a partial frame dropped at the end: cut short by the client's EOF (length
    /// framing) or by the shutdown.
    pub discarded: usize,
    /// Why it stopped.
    pub end: End,
}

/// Echo until the client closes, goes idle, fails, sends a frame over the limit, or the
/// server stops. `id` is for logs. The connection's counts go to `stats` after every read
/// and every write-all (a few relaxed atomic adds beside a syscall), so the live statistics
/// line sees a long connection's traffic, and the bytes of a write that blocks as pending.
///
/// Blocking I/O needs no readiness bookkeeping: `read` sleeps until bytes (or EOF) arrive,
/// and the whole frames are written back in full before the next read, so nothing is ever
/// pending between calls and an EOF needs no flushing. The price: this thread can do nothing
/// else meanwhile, and a client that stops reading holds it in `write`.
///
/// `buf[..held]` is the start of a frame not yet whole (never in raw mode); each read lands
/// right after it, so a frame completed by a read is one contiguous slice to write. The
/// first `already` bytes of `buf` were read before the echo began (the client's bytes after
/// its PROXY header): they are echoed first, as if just read.
pub fn echo_blocking(
    stream: &BlockingStream,
    id: usize,
    buf: &mut Vec<u8>,
    already: usize,
    framer: Framer,
    shutdown: &ShutdownHandle,
    stats: &Stats,
) -> Echoed {
    let mut reader = stream;
    let mut echoed = Echoed { counts: ConnCounts::default(), discarded: 0, end: End::ClientClosed };
    let initial = buf.len();
    let mut held = 0;
    let mut already = already;
    echoed.end = loop {
        // Checked before every read: after a stop request, SHUT_RD makes a blocked read
        // return 0, but TCP may still hand over bytes that were already queued.
        if shutdown.is_requested() {
            echoed.discarded = held;
            break End::Shutdown;
        }
        make_room(buf, held, initial, framer.frame_bound());
        let read = match std::mem::take(&mut already) {
            0 => reader.read(&mut buf[held..]),
            first => Ok(first), // nothing is held yet: they are at the front
        };
        let n = match read {
            Ok(0) if shutdown.is_requested() => {
                echoed.discarded = held; // our SHUT_RD, not the client
                break End::Shutdown;
            }
            Ok(0) => {
                trace!("conn={id} read EOF: client half-closed");
                break end_at_eof(stream, &buf[..held], framer, &mut echoed);
            }
            Ok(n) => n,
            Err(e) if timed_out(&e) => break End::IdleTimeout, // SO_RCVTIMEO expired
            Err(e) if interrupted(&e) => continue,             // a signal: retry
            Err(e) => break End::Error(e),
        };
        trace!("conn={id} read n={n}");
        echoed.counts.read(n);
        let split = framer.split(&buf[..held], &buf[held..held + n]);
        echoed.counts.frames(split.frames);
        stats.publish(&mut echoed.counts.take());
        let whole = if split.whole > 0 { held + split.whole } else { 0 }; // the held start goes too
        let written = write_all_counted(stream, &buf[..whole], &mut echoed.counts);
        stats.publish(&mut echoed.counts.take());
        if let Err(end) = written {
            break end;
        }
        trace!("conn={id} wrote n={whole}");
        if let Rest::TooLarge(oversize) = split.rest {
            break End::TooLarge(oversize);
        }
        buf.copy_within(whole..held + n, 0); // the partial frame moves to the front
        held = held + n - whole;
    };
    stats.publish(&mut echoed.counts.take()); // a final line echoed at EOF
    echoed
}

/// Before a read: if a partial frame fills the buffer, grow it (doubling, up to one whole
/// frame: the framer refuses longer ones, so `held < bound`); once nothing is held, give a
/// grown buffer's memory back.
fn make_room(buf: &mut Vec<u8>, held: usize, initial: usize, bound: usize) {
    if held == buf.len() {
        let grown = (buf.len() * 2).min(bound).max(held + 1);
        buf.resize(grown, 0);
    } else if held == 0 && buf.len() > initial {
        buf.truncate(initial);
        buf.shrink_to_fit();
    }
}

/// The client's EOF: a last line without `\n` is whole now, so echo it; a length frame cut
/// short can never be whole, so count it as discarded.
fn end_at_eof(stream: &BlockingStream, held: &[u8], framer: Framer, echoed: &mut Echoed) -> End {
    match framer.at_eof(held) {
        AtEof::Nothing => End::ClientClosed,
        AtEof::Echo => {
            echoed.counts.frames(1);
            match write_all_counted(stream, held, &mut echoed.counts) {
                Ok(()) => End::ClientClosed,
                Err(end) => end,
            }
        }
        AtEof::Discard(n) => {
            echoed.discarded = n;
            End::ClientClosed
        }
    }
}

/// `write_all`, counting every byte the kernel takes, so the summary is exact even when a
/// write fails halfway.
pub(super) fn write_all_counted(
    stream: &BlockingStream,
    mut data: &[u8],
    counts: &mut ConnCounts,
) -> Result<(), End> {
    let mut writer = stream;
    while !data.is_empty() {
        match writer.write(data) {
            Ok(0) => return Err(End::Error(ErrorKind::WriteZero.into())),
            Ok(n) => {
                counts.wrote(n);
                data = &data[n..];
            }
            Err(e) if timed_out(&e) => return Err(End::IdleTimeout), // SO_SNDTIMEO: client not reading
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(End::Error(e)),
        }
    }
    Ok(())
}

/// After a stop ended the echo ([`End::Shutdown`]), or a frame over the limit did: every
/// byte read was written back, but the kernel may still hold some of it unsent, and the
/// client may still be sending; closing now could reset the connection and destroy those
/// echoes (`crate::lifecycle::linger` says why). So read and discard what the client still
/// sends until it has acknowledged every echo ([`linger::done`]), checking every
/// [`LINGER_CHECK`], or until `until` (the end of the grace period); then a close loses
/// nothing, even if it is a reset.
///
/// Unlike the loops, no FIN goes out first: the stop request reached this socket as
/// `shutdown(SHUT_RD)`, and Linux answers data that arrives on a socket shut for reading
/// *after* its FIN with a reset (RFC 1122 4.2.2.13), which would destroy the very echoes
/// this waits for. After `SHUT_RD` a read does not block: it returns what is queued, or 0
/// at once; that is why this polls the kernel's queues instead of waiting for an EOF.
pub fn linger_after_stop(stream: &BlockingStream, id: usize, buf: &mut [u8], until: Instant) {
    // Ours already if the stop reached this socket; not yet if it came between the flag and
    // the registry's SHUT_RD. Either way reads stop blocking from here.
    if let Err(e) = stream.sock_ref().shutdown(Shutdown::Read) {
        debug!("conn={id} linger: shutdown(SHUT_RD): {e}"); // ENOTCONN: reset by the client
        return;
    }
    while discard_queued(stream, id, buf) && !linger::done(&stream.sock_ref()) {
        if Instant::now() >= until {
            debug!("conn={id} linger: grace period over");
            return;
        }
        thread::sleep(LINGER_CHECK);
    }
}

/// Read and drop whatever is queued (after `SHUT_RD` a read never blocks); false if the
/// socket failed, and lingering is over.
fn discard_queued(stream: &BlockingStream, id: usize, buf: &mut [u8]) -> bool {
    let mut reader = stream;
    loop {
        match reader.read(buf) {
            Ok(0) => return true, // nothing queued now
            Ok(n) => trace!("conn={id} lingering: discarded n={n}"),
            Err(e) if interrupted(&e) => continue, // a signal: retry
            Err(e) => {
                debug!("conn={id} linger: read: {e}");
                return false;
            }
        }
    }
}
