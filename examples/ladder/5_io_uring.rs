//! Rung 5 of the ladder (docs/learn.md): a completion loop on io_uring (Linux 5.6 or later).
//!
//! Adds, over rung 4: the kernel does the I/O. Rungs 3 and 4 ask "which sockets could I read
//! or write now?" and then make a system call per read and per write. Here the loop hands
//! the kernel requests (accept on the listener; receive into this buffer; send these bytes)
//! through a submission queue in memory shared with it, and reads results from a completion
//! queue; one `io_uring_enter` per loop turn submits every new request and waits for at least
//! one result, however many connections moved. Each connection has exactly one request in
//! flight, a receive or a send, so there is no interest to manage and no `WouldBlock`: a
//! completion arrives when the work is done. Backpressure comes free: the next receive is
//! asked for only once the echo of the last one is sent.
//!
//! The price is ownership: a buffer handed to the kernel is the kernel's until its completion
//! arrives, so it must not move or be freed before (each connection's buffer is a `Box`, and
//! a connection is dropped only when its request has completed).
//!
//! Still lacks: a shared pool of receive buffers (here every idle connection pins its own
//! 16 KiB buffer for the receive it has armed; the server's io-uring model lets the kernel
//! pick one from a provided-buffer ring only when bytes arrive), multishot requests, limits,
//! timers and shutdown (src/io_uring/ has them all).
//!
//! `cargo run --release --example ladder-5-io-uring 127.0.0.1:7878` (port 0 works).

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{IoUring, opcode, squeue, types::Fd};
use slab::Slab;

mod cli; // the address argument and the `listening on` line, shared by every rung

/// `user_data` of the accept request; a connection's requests carry its slab key.
const ACCEPT: u64 = u64::MAX;
/// Each connection's receive buffer.
const BUF: usize = 16 * 1024;

fn main() {
    cli::run("ladder-5-io-uring", echo_server);
}

/// One client: its socket, its buffer, and the one request it has in flight.
struct Conn {
    fd: OwnedFd,
    buf: Box<[u8]>,
    /// What the kernel is doing for us: receiving into `buf`, or sending `buf[sent..len]`.
    flight: Flight,
}

#[derive(Clone, Copy)]
enum Flight {
    Recv,
    Send { len: usize, sent: usize },
}

fn echo_server(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?; // blocking or not: io_uring waits for us
    let mut ring = IoUring::new(256)?; // io_uring_setup: a 256-entry submission queue
    cli::announce(listener.local_addr()?)?;

    let mut conns: Slab<Conn> = Slab::new();
    let accept = opcode::Accept::new(Fd(listener.as_raw_fd()), std::ptr::null_mut(), std::ptr::null_mut())
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ACCEPT);
    submit(&mut ring, &accept)?;
    let mut done: Vec<(u64, i32)> = Vec::new();
    loop {
        // The only system call of the loop: submit what is queued, wait for one completion.
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // EBUSY: completions are waiting for room in the completion queue; take them.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(user_data, result) in &done {
            if user_data == ACCEPT {
                on_accept(&mut ring, &mut conns, result)?;
                submit(&mut ring, &accept)?; // one accept at a time: ask for the next
            } else {
                on_complete(&mut ring, &mut conns, user_data as usize, result)?;
            }
        }
    }
}

/// A new client (`result` is its descriptor) gets a buffer and its first receive.
fn on_accept(ring: &mut IoUring, conns: &mut Slab<Conn>, result: i32) -> io::Result<()> {
    if result < 0 {
        eprintln!("accept: {}", io::Error::from_raw_os_error(-result)); // e.g. out of descriptors
        return Ok(());
    }
    // SAFETY: the kernel gave us this new descriptor; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(result) };
    let key = conns.insert(Conn { fd, buf: vec![0; BUF].into_boxed_slice(), flight: Flight::Recv });
    submit(ring, &request(&mut conns[key], key))
}

/// A connection's request finished: `result` is a byte count, 0 (EOF), or `-errno`.
fn on_complete(ring: &mut IoUring, conns: &mut Slab<Conn>, key: usize, result: i32) -> io::Result<()> {
    let conn = &mut conns[key]; // it exists: we drop a connection only when nothing is in flight
    let next = match conn.flight {
        _ if result == -libc::EINTR || result == -libc::EAGAIN => Some(conn.flight), // again
        _ if result < 0 => None,             // a reset or another error: close
        Flight::Recv if result == 0 => None, // EOF, and every byte before it is echoed: close
        Flight::Recv => Some(Flight::Send { len: result as usize, sent: 0 }),
        Flight::Send { len, sent } if sent + (result as usize) < len => {
            Some(Flight::Send { len, sent: sent + result as usize }) // a short send: the rest
        }
        Flight::Send { .. } => Some(Flight::Recv), // all sent: receive the next bytes
    };
    match next {
        Some(flight) => {
            conn.flight = flight;
            submit(ring, &request(conn, key))
        }
        None => {
            conns.remove(key); // dropping the descriptor closes the socket
            Ok(())
        }
    }
}

/// The request for what `conn` waits for next. The pointers stay valid until it completes:
/// `buf` is boxed (it never moves) and `conn` is not dropped while the request is in flight.
fn request(conn: &mut Conn, key: usize) -> squeue::Entry {
    let fd = Fd(conn.fd.as_raw_fd());
    let entry = match conn.flight {
        Flight::Recv => opcode::Recv::new(fd, conn.buf.as_mut_ptr(), BUF as u32).build(),
        Flight::Send { len, sent } => {
            opcode::Send::new(fd, conn.buf[sent..].as_ptr(), (len - sent) as u32).build()
        }
    };
    entry.user_data(key as u64)
}

/// Queue `entry`; when the submission queue is full, hand it to the kernel first.
fn submit(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every buffer an entry points at outlives its request (see `request`).
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}
