//! Rung 2 of the ladder (docs/learn.md): a thread per connection, as the goroutine tutorial.
//!
//! Adds, over rung 1: every client at once. `std::net` wraps the same system calls as rung 1
//! (`TcpListener::bind` is `socket`, `bind` and `listen`); each accepted client gets an OS
//! thread that runs rung 1's read-write loop, so a slow client blocks only its own thread.
//!
//! Still lacks: cheap connections. Each one costs a thread: a stack (its touched pages stay
//! resident), a kernel stack, a scheduler entry and a context switch on every wake-up; ten
//! thousand idle clients are ten thousand sleeping threads. And nothing bounds their number.
//!
//! `cargo run --release --example ladder-2-thread-per-conn 127.0.0.1:7878` (port 0 works).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

/// Each thread's stack. Rust's default is 2 MiB of address space; the echo needs a few
/// KiB, and only the pages a thread touches cost memory either way.
const STACK: usize = 64 * 1024;

mod cli; // the address argument and the `listening on` line, shared by every rung

fn main() {
    cli::run("ladder-2-thread-per-conn", echo_server);
}

fn echo_server(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    cli::announce(listener.local_addr()?)?;
    loop {
        let client = match listener.accept() {
            Ok((client, _peer)) => client,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        // The thread owns the socket; when it returns, the socket is dropped (closed).
        let spawned = thread::Builder::new().stack_size(STACK).spawn(move || {
            if let Err(e) = echo(client) {
                eprintln!("connection: {e}");
            }
        });
        if let Err(e) = spawned {
            eprintln!("cannot start a thread: {e}"); // the closure, and the client, are dropped
        }
    }
}

/// Rung 1's loop, now on a thread of its own: blocking here blocks only this client.
fn echo(mut client: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match client.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => client.write_all(&buf[..n])?,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
