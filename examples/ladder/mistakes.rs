//! BROKEN ON PURPOSE: the classic mistakes of event-loop servers, reproduced (docs/learn.md).
//!
//! `ladder-mistakes MISTAKE [--fixed] [HOST:PORT]` runs an echo loop that is right but for
//! one spot, marked `BROKEN ON PURPOSE`: rung 4's loop, on mio (edge-triggered, each socket
//! registered once for both directions, at most `CAP` bytes held per client). `--fixed`
//! runs the very same loop with that spot done right. tests/integration/ladder_mistakes.rs
//! shows each failure happening, and the correct rung (or the fix) not failing.
//!
//! | MISTAKE          | the broken spot                          | what you see                          |
//! |------------------|------------------------------------------|---------------------------------------|
//! | `edge-no-drain`  | one read per event, not until WouldBlock | a connection stalls, bytes unread     |
//! | `partial-write`  | `write`'s count ignored                  | bytes lost                            |
//! | `blocking-write` | a blocking `write_all` inside the loop   | every other client waits              |
//! | `unbounded`      | no cap on the bytes held for a client    | a client that never reads grows us    |
//! | `close-unread`   | `close` with the client's input unread   | a reset destroys the queued echo      |
//! | `trust-events`   | an event's flags believed                | a stale event closes an innocent one  |
//!
//! Two mistakes need a situation the rungs never create, so this loop makes it in that mode
//! only: `close-unread` ends each connection on its own after echoing `QUOTA` bytes (as a
//! server does at a quota, a line too long, a protocol error), and `trust-events` holds one
//! connection at a time, a newcomer evicting the one before (as nginx reclaims idle
//! keep-alive connections when it runs out): a slot freed and reused within one batch.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::SockRef;

#[allow(dead_code)] // `cli::run`: the mistake comes first on this command line
mod cli; // the address argument and the `listening on` line, shared by every rung

const PROGRAM: &str = "ladder-mistakes";
const LISTENER: Token = Token(usize::MAX);
/// The most bytes held for a client that has not taken them back (unless `unbounded`).
const CAP: usize = 64 * 1024;
/// `close-unread`: each connection is echoed this many bytes, then ended by the server.
const QUOTA: usize = 256 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mistake {
    EdgeNoDrain,
    PartialWrite,
    BlockingWrite,
    Unbounded,
    CloseUnread,
    TrustEvents,
}

const MISTAKES: [(&str, Mistake); 6] = [
    ("edge-no-drain", Mistake::EdgeNoDrain),
    ("partial-write", Mistake::PartialWrite),
    ("blocking-write", Mistake::BlockingWrite),
    ("unbounded", Mistake::Unbounded),
    ("close-unread", Mistake::CloseUnread),
    ("trust-events", Mistake::TrustEvents),
];

/// Which mistake this run is about, and whether it makes it.
#[derive(Clone, Copy)]
struct Run {
    mistake: Mistake,
    fixed: bool,
}

impl Run {
    /// This run makes `mistake` (rather than doing that spot right).
    fn makes(self, mistake: Mistake) -> bool {
        self.mistake == mistake && !self.fixed
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let fixed = args.iter().position(|a| a == "--fixed").map(|i| args.remove(i)).is_some();
    let names: Vec<&str> = MISTAKES.iter().map(|(name, _)| *name).collect();
    let expected = format!("MISTAKE [--fixed] [HOST:PORT]\nMISTAKE: {}", names.join(", "));
    let Some(first) = args.first() else { cli::usage(PROGRAM, "which mistake?", &expected) };
    let Some(&(_, mistake)) = MISTAKES.iter().find(|(name, _)| name == first) else {
        cli::usage(PROGRAM, &format!("no mistake called '{first}'"), &expected)
    };
    let addr = cli::address(PROGRAM, &args[1..]);
    cli::serve_or_exit(PROGRAM, addr, |addr| echo_server(addr, Run { mistake, fixed }));
}

fn echo_server(addr: SocketAddr, run: Run) -> io::Result<()> {
    let mut listener = TcpListener::bind(addr)?;
    cli::announce(listener.local_addr()?)?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => accept_all(&poll, &listener, &mut conns, run),
                Token(key) => on_ready(&poll, &mut conns, key, event, run),
            }
        }
    }
}

fn accept_all(poll: &Poll, listener: &TcpListener, conns: &mut Slab<Conn>, run: Run) {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _peer)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return eprintln!("accept: {e}"),
        };
        let evict = conns.iter().next().map(|(key, _)| key);
        if let (Mistake::TrustEvents, Some(oldest)) = (run.mistake, evict) {
            close(poll, conns, oldest); // one at a time: the slot is free for this newcomer
        }
        let buffer = match run.mistake {
            Mistake::PartialWrite => 4096, // a small send buffer: partial writes come soon
            // Room for the whole QUOTA of echo: every write succeeds (capped by the sysctl
            // net.core.wmem_max, often 208 KiB, which the kernel doubles: still enough).
            Mistake::CloseUnread => 1 << 20,
            _ => 0,
        };
        if buffer > 0 && SockRef::from(&stream).set_send_buffer_size(buffer).is_err() {
            continue; // the socket is unusable: dropping it closes it
        }
        let entry = conns.vacant_entry();
        let both = Interest::READABLE | Interest::WRITABLE; // once, for good (as rung 4)
        if poll.registry().register(&mut stream, Token(entry.key()), both).is_ok() {
            entry.insert(Conn { stream, pending: Vec::new(), eof: false, taken: 0, lingering: false });
        }
    }
}

fn on_ready(poll: &Poll, conns: &mut Slab<Conn>, key: usize, event: &Event, run: Run) {
    let Some(conn) = conns.get_mut(key) else { return }; // closed earlier in this batch
    let keep = if run.makes(Mistake::TrustEvents) && event.is_read_closed() {
        // BROKEN ON PURPOSE: the flag is believed, "the client hung up: close". But an event
        // tells what was true when it was queued, for whoever held the token then: this one
        // may be for the slot's previous tenant, evicted earlier in this very batch, and the
        // new tenant has hung up on nothing. Learn of a close from `read` returning 0.
        false
    } else {
        conn.on_event(run).unwrap_or(false) // an I/O error: close
    };
    if !keep {
        close(poll, conns, key);
    }
}

fn close(poll: &Poll, conns: &mut Slab<Conn>, key: usize) {
    let mut conn = conns.remove(key);
    let _ = poll.registry().deregister(&mut conn.stream); // then dropping it closes it
}

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet written back.
    pending: Vec<u8>,
    /// The client sent EOF: finish the echo, then close.
    eof: bool,
    /// Bytes read in all (`close-unread` stops at `QUOTA`).
    taken: usize,
    /// `close-unread --fixed`: FIN sent after the echo; reading and discarding until EOF.
    lingering: bool,
}

impl Conn {
    /// Do all that will not block; returns whether to keep the connection.
    fn on_event(&mut self, run: Run) -> io::Result<bool> {
        let quota = if run.mistake == Mistake::CloseUnread { QUOTA } else { usize::MAX };
        let mut buf = [0u8; 4096];
        loop {
            self.flush(run)?;
            if self.lingering || (self.taken == quota && self.pending.is_empty()) {
                return self.goodbye(run);
            }
            if self.eof {
                return Ok(!self.pending.is_empty());
            }
            let mut room = buf.len().min(quota - self.taken);
            if !run.makes(Mistake::Unbounded) {
                room = room.min(CAP - self.pending.len()); // BROKEN ON PURPOSE when unbounded
            }
            if room == 0 {
                return Ok(true); // at the cap, or the quota's echo is not out: wait for WRITABLE
            }
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    self.taken += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if run.makes(Mistake::EdgeNoDrain) {
                // BROKEN ON PURPOSE: one read per event, as if readiness were level-triggered.
                // Edge-triggered, no event comes for bytes already waiting: they wait until
                // the client sends more, which a client waiting for its echo never does.
                self.flush(run)?;
                return Ok(!self.eof || !self.pending.is_empty());
            }
        }
    }

    /// Write what is pending, as far as the kernel takes it.
    fn flush(&mut self, run: Run) -> io::Result<()> {
        if run.makes(Mistake::PartialWrite) {
            // BROKEN ON PURPOSE: what `write` returns is ignored: a short count, or
            // WouldBlock, and the bytes the kernel did not take are gone. (Clippy knows
            // this one: `unused_io_amount`, denied by default.)
            #[allow(clippy::unused_io_amount)]
            self.stream.write(&self.pending).ok();
            self.pending.clear();
            return Ok(());
        }
        if run.makes(Mistake::BlockingWrite) {
            // BROKEN ON PURPOSE: "make sure it all goes out": block until the kernel has
            // taken every byte. While this client does not read, the loop waits here, and
            // every other client waits with it.
            SockRef::from(&self.stream).set_nonblocking(false)?;
            self.stream.write_all(&self.pending)?;
            self.pending.clear();
            return SockRef::from(&self.stream).set_nonblocking(true);
        }
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.pending.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `close-unread`: the quota is echoed and handed to the kernel; end the connection.
    fn goodbye(&mut self, run: Run) -> io::Result<bool> {
        if run.makes(Mistake::CloseUnread) {
            // BROKEN ON PURPOSE: "every byte is written, so close". Written is not delivered:
            // the echo may still sit in our send queue. And with the client's input unread,
            // `close` sends a reset instead of a FIN, and the kernel drops that queue.
            return Ok(false);
        }
        // The fix, lingering: a FIN after the echo, then read and throw away until the
        // client's EOF, and only then close (the real server also bounds this by a timer).
        if !self.lingering {
            self.stream.shutdown(Shutdown::Write)?;
            self.lingering = true;
        }
        let mut sink = [0u8; 4096];
        loop {
            match self.stream.read(&mut sink) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
