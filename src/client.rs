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

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::addr::ListenAddr;
use crate::net::{self, BlockingStream};

/// How long a TCP connect may take before we give up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
pub fn run(addr: &ListenAddr) -> io::Result<()> {
    let stream = net::connect(addr, CONNECT_TIMEOUT)?;
    let sent = Arc::new(Sent(AtomicU64::new(STILL_SENDING)));
    let sender = {
        let (writer, sent) = (stream.try_clone()?, Arc::clone(&sent));
        thread::Builder::new().name("stdin".into()).spawn(move || send_stdin(writer, &sent))?
    };
    let received = match copy_to_stdout(stream) {
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

/// Copy stdin to the socket, publish the total, then half-close.
fn send_stdin(mut socket: BlockingStream, sent: &Sent) -> io::Result<()> {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break, // EOF: a closed pipe, or Ctrl-D on a terminal
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal; retry
            Err(e) => return Err(io::Error::new(e.kind(), format!("reading stdin: {e}"))),
        };
        socket.write_all(&buf[..n])?;
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
    /// The connection failed.
    Socket(io::Error),
}

/// Copy the socket to stdout until the server closes; return the bytes copied. Each chunk
/// is flushed at once, so an interactive user sees the echo of a line as it arrives.
fn copy_to_stdout(mut socket: BlockingStream) -> Result<u64, Stop> {
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) => return Ok(total), // the server closed: the echo is complete
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stop::Socket(e)),
        };
        if let Err(e) = stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()) {
            return Err(match e.kind() {
                ErrorKind::BrokenPipe => Stop::StdoutGone,
                _ => Stop::Stdout(e),
            });
        }
        total += n as u64;
    }
}

/// "sending to 127.0.0.1:7878: Connection reset by peer".
fn context(addr: &ListenAddr, doing: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {addr}: {e}"))
}
