//! The one place that knows which socket family is in use.
//!
//! Every model listens on TCP or on a Unix domain stream socket; above this module they are
//! just a [`StdListener`] (blocking, for the threaded models) or a [`Listener`] (non-blocking,
//! for the event loop) that yields streams. Socket options (SO_REUSEPORT, TCP_NODELAY,
//! SO_SNDBUF/SO_RCVBUF) are set here through `socket2`, and so is the Unix socket file's
//! lifecycle ([`unix_file`]). What an `accept` error means, and how long to back off, is here
//! too ([`accept_errors`]), because every model accepts.
//!
//! - `listener.rs`: binding and the two listener types.
//! - `stream.rs`: the connection types and who is on the other end.
//! - `options.rs`: per-connection socket options.
//! - `unix_file.rs`: the socket file of a `unix:` address.
//! - `accept_errors.rs`: which accept errors are whose problem, and the back-off.
//! - `errors.rs`: the errors that are not failures (`would_block`, `interrupted`, `timed_out`).
//! - `activation.rs`: the sockets passed in by the service manager.
//! - `privileged.rs`: ports below 1024, without and with root.
//! - `descriptors.rs`: the descriptor limit, raised to the hard one at start.
//! - `udp_batch.rs`: many datagrams per system call, and trains the kernel splits or joins.

mod accept_errors;
mod activation;
mod descriptors;
mod errors;
mod listener;
mod options;
mod privileged;
mod stream;
mod udp_batch;
mod unix_file;

use std::io;
use std::net::SocketAddr;
use std::os::unix::net as unix;
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::addr::ListenAddr;
pub use accept_errors::{ACCEPT_BACKOFF, AcceptBackoff, AfterAcceptError};
pub use activation::{ActivationEnv, InheritedSocket, LISTEN_VARS, take_inherited_sockets};
pub use descriptors::{DescriptorLimit, raise_descriptor_limit};
pub use errors::{interrupted, timed_out, would_block};
pub use listener::{ListenSocket, Listener, StdListener};
pub use options::SocketOptions;
pub use privileged::note_if_root;
pub use stream::{BlockingStream, Peer, Stream, kernel_queues};
pub use udp_batch::{BATCH, Message, Offload, Receiver, Sender, Sent};
#[cfg(target_os = "linux")]
pub use udp_batch::{CONTROL_ROOM, SLOT as UDP_SLOT, SegmentControl, gro_segment_in};

/// UDP source ports never answered, in every model: 0 (no real sender uses it) and the
/// small services that answer every datagram (7 echo, 13 daytime, 17 qotd, 19 chargen), so
/// that two of them cannot be set answering each other (CERT CA-1996-01).
pub const RESERVED_SOURCE_PORTS: [u16; 5] = [0, 7, 13, 17, 19];

/// The kernel's accept queue length we ask for: as long as the system allows, which is
/// `net.core.somaxconn` (the kernel caps the request there; 4096 by default since Linux 5.4).
/// So raising that one setting is all a burst of connections needs (docs/scale.md).
const BACKLOG: i32 = i32::MAX;

/// Add the address to an error, so the user sees which address failed and why.
pub fn with_addr(addr: &ListenAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
}

/// The kernel buffer sizes a UDP socket is bound with (`--send-buffer`, `--recv-buffer`):
/// its socket is the one that sends and receives, as an accepted stream's is.
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpBuffers {
    /// SO_SNDBUF; `None` leaves the kernel default.
    pub send: Option<usize>,
    /// SO_RCVBUF; `None` leaves the kernel default.
    pub recv: Option<usize>,
}

/// Bind every address, in order, as one set: if one cannot be bound, the sockets bound
/// before it are closed again (and their Unix socket files removed), so nothing is left
/// behind, and the error names the address. `reuse_port` as for [`bind_any`].
pub fn bind_all(addrs: &[ListenAddr], reuse_port: bool, udp: UdpBuffers) -> io::Result<Vec<ListenSocket>> {
    addrs.iter().map(|addr| bind_any(addr, reuse_port, udp)).collect()
    // On an error, `collect` drops the sockets bound so far: that closes them.
}

/// Bind `addr`, whatever its kind: a listening stream socket, or a UDP socket. With
/// `reuse_port`, several sockets share one port and the kernel spreads connections (or
/// datagrams, by sender) over them (`--workers`). Errors name the address.
pub fn bind_any(addr: &ListenAddr, reuse_port: bool, udp: UdpBuffers) -> io::Result<ListenSocket> {
    match addr {
        ListenAddr::Udp(sa) => bind_udp(*sa, reuse_port, udp).map(ListenSocket::Datagram),
        _ => bind(addr, reuse_port).map(ListenSocket::Stream),
    }
}

/// Bind and listen on `addr`. `reuse_port` lets several listeners share one TCP port, so the
/// kernel spreads incoming connections over them (`--workers`). Errors name the address.
pub fn bind(addr: &ListenAddr, reuse_port: bool) -> io::Result<StdListener> {
    match addr {
        ListenAddr::Tcp(sa) => bind_tcp(*sa, reuse_port)
            .map(StdListener::Tcp)
            .map_err(|e| privileged::explain_bind_error(*sa, e)),
        ListenAddr::Unix(path) => bind_unix(path),
        ListenAddr::Udp(_) => Err(not_a_stream()),
    }
    .map_err(|e| with_addr(addr, e))
}

/// A `udp:` address where a stream (TCP or Unix) was needed.
fn not_a_stream() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "a udp: address carries datagrams, not a stream")
}

/// Bind a UDP socket on `addr` for the UDP echo, with the kernel buffer sizes asked for.
/// Errors name the address.
pub fn bind_udp(addr: SocketAddr, reuse_port: bool, buffers: UdpBuffers) -> io::Result<std::net::UdpSocket> {
    let bind = || -> io::Result<std::net::UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            socket.set_only_v6(true)?; // as for TCP: `[::]` means IPv6 only
        }
        if let Some(size) = buffers.send {
            socket.set_send_buffer_size(size)?;
        }
        if let Some(size) = buffers.recv {
            socket.set_recv_buffer_size(size)?;
        }
        socket.bind(&addr.into())?;
        Ok(socket.into())
    };
    bind().map_err(|e| with_addr(&ListenAddr::Udp(addr), e))
}

fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Lets a restarted server bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // `[::]:PORT` means IPv6 only, as written; say 0.0.0.0 for IPv4.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn bind_unix(path: &Path) -> io::Result<StdListener> {
    let (listener, file) = unix_file::bind(path)?;
    Ok(StdListener::Unix(listener, file))
}

/// Connect to a server, as `echoloop client` does (`client/`). `timeout` bounds a TCP
/// connect (a Unix connect does not wait on a network). Errors name the address.
pub fn connect(addr: &ListenAddr, timeout: Duration) -> io::Result<BlockingStream> {
    match addr {
        ListenAddr::Tcp(sa) => std::net::TcpStream::connect_timeout(sa, timeout).map(BlockingStream::Tcp),
        ListenAddr::Unix(path) => unix::UnixStream::connect(path).map(BlockingStream::Unix),
        ListenAddr::Udp(_) => Err(not_a_stream()),
    }
    .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))
}
