//! `peer-tokio`: the echo server from tokio's README, as a reference point. It runs on the
//! `current_thread` runtime, so it uses one core like echoloop's event loop and `peer-epoll`,
//! and a comparison measures the runtime, not a thread count.
//!
//! A task per connection with its own 16 KiB buffer: read, then `write_all` what was read
//! (the task waits while the client does not read: that is its backpressure), and on EOF
//! shut down the sending side once everything is echoed. Accept errors other than a client
//! that already left (EMFILE and friends) pause accepting for 100 ms instead of spinning.
//! SIGINT or SIGTERM ends the runtime, closing every connection, and the process exits 0.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// Each connection's read buffer.
const BUF_SIZE: usize = 16 * 1024;
/// How long accepting pauses after an accept error.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    echoloop_peers::run("peer-tokio", |addr| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        runtime.block_on(serve(addr))
    })
}

/// Bind, announce the address, and accept until SIGINT or SIGTERM.
async fn serve(addr: SocketAddr) -> io::Result<()> {
    let cannot_bind = |e: io::Error| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"));
    let listener = TcpListener::bind(addr).await.map_err(cannot_bind)?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    echoloop_peers::announce(listener.local_addr()?)?;
    tokio::select! {
        () = accept_loop(listener) => {}
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if stream.set_nodelay(true).is_ok() {
                    // An error ends only this connection (a reset, a broken pipe): nothing to report.
                    tokio::spawn(async move { echo(stream).await.ok() });
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {} // that client left: next
            Err(e) if e.kind() == ErrorKind::Interrupted => {}       // a signal: retry
            Err(_) => tokio::time::sleep(ACCEPT_PAUSE).await, // EMFILE & co: retrying at once would spin
        }
    }
}

/// Echo until EOF, then shut down our sending side: by then `write_all` has sent everything.
async fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0; BUF_SIZE];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return stream.shutdown().await,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: retry
            Err(e) => return Err(e),
        };
        stream.write_all(&buf[..n]).await?;
    }
}
