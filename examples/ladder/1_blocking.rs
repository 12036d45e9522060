//! Rung 1 of the ladder (docs/learn.md): the echo server of the C tutorials, one client at a time.
//!
//! Adds, over nothing: the system calls every server is made of, one `socket2` call each,
//! in the order the C tutorial makes them: `socket`, `bind`, `listen`, then forever `accept`
//! and, for that client, `read` and `write` until it sends EOF, then `close`.
//!
//! Still lacks: a second client. While one is served, the next waits in the kernel's accept
//! queue (its `connect` succeeds, its bytes are buffered, nothing comes back), however long
//! the first one takes; a client that stops reading stalls everyone.
//!
//! `cargo run --release --example ladder-1-blocking 127.0.0.1:7878` (port 0: the OS picks).

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

mod cli; // the address argument and the `listening on` line, shared by every rung

fn main() {
    cli::run("ladder-1-blocking", echo_server);
}

fn echo_server(addr: SocketAddr) -> io::Result<()> {
    // socket(AF_INET, SOCK_STREAM, IPPROTO_TCP): a file descriptor, not yet an address.
    let listener = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR: restart at once on the same port, despite connections in TIME_WAIT.
    listener.set_reuse_address(true)?;
    listener.bind(&addr.into())?; // bind: the address (port 0: the kernel picks one)
    listener.listen(128)?; // listen: the kernel now completes handshakes and queues them
    let local = listener.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
    cli::announce(local)?;

    loop {
        // accept: blocks until a client is queued, then returns a new descriptor for it.
        match listener.accept() {
            Ok((client, _peer)) => {
                if let Err(e) = echo(client) {
                    eprintln!("connection: {e}"); // a reset client: the server goes on
                }
                // `client` was moved into echo and dropped there: close(2).
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: try again
            // Out of descriptors and friends: say so and retry (the real server backs off).
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// Read until EOF, writing every byte back before the next read. `write_all` loops over
/// short writes: `write` may take fewer bytes than offered, and the rest must follow.
fn echo(mut client: Socket) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) => return Ok(()), // EOF: the client has sent everything
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        client.write_all(&buf[..n])?; // blocks while the client's buffers are full
    }
}
