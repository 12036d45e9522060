//! `echoloop client ADDR`: stdin to the server, the echo to stdout, like `nc`.
//!
//! On a terminal it is interactive (the terminal hands over one line at a time, and each
//! echo is printed as it arrives). With piped stdin it sends everything, half-closes and
//! prints every echoed byte, so `echoloop client ADDR < f | cmp - f` holds for any file.
//!
//! Why two threads: stdin and a blocking socket both block, and sending must not wait for
//! receiving. A client that sent a whole file before reading its echo would fill both
//! socket buffers and then wait forever on a server that, rightly, stops reading until its
//! echoes are taken (backpressure). So one thread copies stdin to the socket and then
//! half-closes it (`shutdown(Write)`: the server sees EOF, finishes echoing, and closes);
//! this thread copies the socket to stdout until that close.
//!
//! `--framing line|length` speaks the server's framing. Sending: with `line` the input goes
//! as it is (its lines are the frames); with `length` each read from stdin (a line, on a
//! terminal; up to 64 KiB from a pipe) is cut into frames of at most `--max-frame` bytes, each
//! sent with its 4-byte length. Receiving: only whole frames are printed, a line at a time or
//! a payload at a time (without its prefix), so the output is the input again:
//! `echoloop client --framing length ADDR < f | cmp - f` holds.
//!
//! A `udp:` address sends datagrams instead ([`udp`]). Any host will do: a name is resolved
//! when connecting ([`ServerAddr`]).

mod addr;
mod udp;

pub use addr::ServerAddr;

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::framing::{AtEof, Framer, Framing, PREFIX, Rest};
use crate::net::{BlockingStream, interrupted};

/// What `echoloop client` was asked for besides the address. `#[non_exhaustive]`: start from
/// `default()` and change what you need with the `with_*` methods.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The server's framing: how to cut stdin into frames and the echo back into output.
    pub framing: Framing,
    /// The largest frame sent (length framing) and accepted back.
    pub max_frame: usize,
    /// UDP: how long to wait for each reply before counting the datagram as lost.
    pub reply_timeout: Duration,
    /// How long one TCP connect may take before we give up.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            framing: Framing::Raw,
            max_frame: 64 * 1024,
            reply_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl ClientOptions {
    crate::config::setters! {
        with_framing => framing: Framing,
        with_max_frame => max_frame: usize,
        with_reply_timeout => reply_timeout: Duration,
        with_connect_timeout => connect_timeout: Duration,
    }
}

/// Bytes moved per read: large enough for files, and a terminal line always fits.
const CHUNK: usize = 64 * 1024;

/// What the sender stores in [`Sent`] until it has sent all of stdin.
const STILL_SENDING: u64 = u64::MAX;

/// How much of stdin went to the server, published *before* the half-close, so whoever
/// sees the server's EOF can tell "it echoed everything" from "it closed on us".
struct Sent(AtomicU64);

/// Run the client until the server closes the connection. Returns `Ok` when every byte
/// sent was echoed back, or when stdout's reader went away (`| head`: stop quietly, as
/// `cat` does).
pub fn run(addr: &ServerAddr, options: &ClientOptions) -> io::Result<()> {
    if let Some(server) = addr.udp() {
        return udp::run(server?, options.reply_timeout);
    }
    let stream = addr.connect(options.connect_timeout)?;
    let sent = Arc::new(Sent(AtomicU64::new(STILL_SENDING)));
    let framer = Framer::new(options.framing, options.max_frame);
    let sender = {
        let (writer, sent) = (stream.try_clone()?, Arc::clone(&sent));
        thread::Builder::new().name("stdin".into()).spawn(move || send_stdin(writer, framer, &sent))?
    };
    // Lines are sent as they come, however long: accept any length back.
    let unframer = match options.framing {
        Framing::Line => Framer::new(Framing::Line, usize::MAX),
        _ => framer,
    };
    let received = match copy_to_stdout(stream, unframer) {
        Ok(n) => n,
        Err(Stop::StdoutGone) => return Ok(()),
        Err(Stop::Stdout(e)) => return Err(io::Error::new(e.kind(), format!("writing stdout: {e}"))),
        Err(Stop::Socket(e)) => return Err(context(addr, "receiving from", e)),
    };
    let total = sent.0.load(Ordering::Acquire);
    if total == STILL_SENDING {
        // The sender may be blocked on a terminal; leave it, the process is ending.
        return Err(io::Error::other(format!("{addr} closed the connection")));
    }
    // The sender published its total, so all that is left for it is to return.
    match sender.join() {
        Ok(result) => result.map_err(|e| context(addr, "sending to", e))?,
        Err(_) => return Err(io::Error::other("the stdin thread panicked")),
    }
    if received != total {
        let msg = format!("{addr} closed after echoing {received} of {total} bytes");
        return Err(io::Error::new(ErrorKind::UnexpectedEof, msg));
    }
    Ok(())
}

/// Copy stdin to the socket (framed, for `length`), publish the total, then half-close.
fn send_stdin(mut socket: BlockingStream, framer: Framer, sent: &Sent) -> io::Result<()> {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break, // EOF: a closed pipe, or Ctrl-D on a terminal
            Ok(n) => n,
            Err(e) if interrupted(&e) => continue, // a signal; retry
            Err(e) => return Err(io::Error::new(e.kind(), format!("reading stdin: {e}"))),
        };
        match framer.framing() {
            Framing::Raw | Framing::Line => socket.write_all(&buf[..n])?,
            Framing::Length => {
                for payload in buf[..n].chunks(framer.frame_bound() - PREFIX) {
                    socket.write_all(&(payload.len() as u32).to_be_bytes())?; // max_frame <= u32::MAX
                    socket.write_all(payload)?;
                }
            }
        }
        total += n as u64;
    }
    sent.0.store(total, Ordering::Release);
    socket.sock_ref().shutdown(std::net::Shutdown::Write)
}

/// Why copying to stdout stopped early.
enum Stop {
    /// Whoever reads our stdout has gone (EPIPE): not an error for a filter.
    StdoutGone,
    /// Writing stdout failed otherwise (a full disk, say).
    Stdout(io::Error),
    /// The connection failed, or the server's echo broke the framing.
    Socket(io::Error),
}

/// Turns the echo into output: whole frames only (lines, or payloads without their prefix).
struct Unframer {
    framer: Framer,
    /// The start of a frame not yet whole.
    held: Vec<u8>,
}

impl Unframer {
    /// The output for `data`, the next bytes of the echo, appended to `out`.
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let split = self.framer.split(&self.held, data);
        if split.whole > 0 {
            let mut frames = std::mem::take(&mut self.held);
            frames.extend_from_slice(&data[..split.whole]);
            self.payloads(&frames, out);
        }
        if let Rest::TooLarge(oversize) = split.rest {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("the server's echo broke the framing: {oversize}"),
            ));
        }
        self.held.extend_from_slice(&data[split.whole..]);
        Ok(())
    }

    /// Whole frames to output: lines as they are, length frames without their prefix.
    fn payloads(&self, mut frames: &[u8], out: &mut Vec<u8>) {
        if self.framer.framing() != Framing::Length {
            return out.extend_from_slice(frames);
        }
        while let Some((prefix, rest)) = frames.split_first_chunk::<PREFIX>() {
            let (payload, next) = rest.split_at(u32::from_be_bytes(*prefix) as usize);
            out.extend_from_slice(payload);
            frames = next;
        }
    }

    /// The server closed: a last line without `\n` is output; a cut length frame is an error.
    fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match self.framer.at_eof(&self.held) {
            AtEof::Nothing => Ok(()),
            AtEof::Echo => {
                out.append(&mut self.held);
                Ok(())
            }
            AtEof::Discard(n) => Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("the server closed in the middle of a frame ({n} bytes of it received)"),
            )),
        }
    }
}

/// Copy the socket to stdout until the server closes; return the bytes output. Output is
/// flushed at once, so an interactive user sees the echo of a line as it arrives; with
/// framing, only whole frames are output.
fn copy_to_stdout(mut socket: BlockingStream, framer: Framer) -> Result<u64, Stop> {
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0u8; CHUNK];
    let mut unframer = Unframer { framer, held: Vec::new() };
    let mut out = Vec::new();
    let mut total = 0u64;
    loop {
        out.clear();
        let closed = match socket.read(&mut buf) {
            Ok(0) => true, // the server closed: the echo is complete
            Ok(n) if framer.framing() == Framing::Raw => {
                out.extend_from_slice(&buf[..n]);
                false
            }
            Ok(n) => {
                unframer.push(&buf[..n], &mut out).map_err(Stop::Socket)?;
                false
            }
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(Stop::Socket(e)),
        };
        if closed {
            unframer.finish(&mut out).map_err(Stop::Socket)?;
        }
        if let Err(e) = stdout.write_all(&out).and_then(|()| stdout.flush()) {
            return Err(match e.kind() {
                ErrorKind::BrokenPipe => Stop::StdoutGone,
                _ => Stop::Stdout(e),
            });
        }
        total += out.len() as u64;
        if closed {
            return Ok(total);
        }
    }
}

/// "sending to 127.0.0.1:7878: Connection reset by peer".
fn context(addr: &ServerAddr, doing: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {addr}: {e}"))
}
