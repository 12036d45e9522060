//! The one place that knows which socket family is in use.
//!
//! Every model listens on TCP or on a Unix domain stream socket; above this module they are
//! just a [`Listener`] that yields [`Stream`]s. Socket options (SO_REUSEPORT, TCP_NODELAY,
//! SO_SNDBUF/SO_RCVBUF) are set here through `socket2`, and so is the Unix socket file's
//! lifecycle: a stale file is removed only if nothing answers on it, and ours is removed when
//! the listener is dropped.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net as unix;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockRef, Socket, Type};

use crate::addr::ListenAddr;

/// The kernel's accept queue length we ask for (it is capped by net.core.somaxconn).
const BACKLOG: i32 = 1024;

/// Add the address to an error, so the user sees which address failed and why.
pub fn with_addr(addr: &ListenAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
}

/// A bound, listening, *blocking* socket, as the threaded models use it. The event loop
/// turns it into a non-blocking [`Listener`] with [`StdListener::into_mio`].
#[derive(Debug)]
pub enum StdListener {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// Unix domain stream socket; the guard removes the socket file on drop.
    Unix(unix::UnixListener, SocketFile),
}

/// Bind and listen on `addr`. `reuse_port` lets several listeners share one TCP port, so the
/// kernel spreads incoming connections over them (`--workers`). Errors name the address.
pub fn bind(addr: &ListenAddr, reuse_port: bool) -> io::Result<StdListener> {
    match addr {
        ListenAddr::Tcp(sa) => bind_tcp(*sa, reuse_port).map(StdListener::Tcp),
        ListenAddr::Unix(path) => bind_unix(path),
    }
    .map_err(|e| with_addr(addr, e))
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
    remove_stale_socket(path)?;
    let listener = unix::UnixListener::bind(path)?;
    Ok(StdListener::Unix(listener, SocketFile(path.to_path_buf())))
}

/// A socket file left by a server that died is removed; a live one is "address in use";
/// anything that is not a socket is left alone.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // nothing there
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists and is not a socket"));
    }
    match unix::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "address already in use (another server is listening on it)",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// Removes our Unix socket file when the listener goes away.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            log::warn!("could not remove {}: {e}", self.0.display());
        }
    }
}

impl StdListener {
    /// The real bound address (the port the OS chose for port 0).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            StdListener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            StdListener::Unix(_, file) => Ok(ListenAddr::Unix(file.0.clone())),
        }
    }

    /// Switch to non-blocking mode and wrap for mio.
    pub fn into_mio(self) -> io::Result<Listener> {
        match self {
            StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Ok(Listener::Tcp(mio::net::TcpListener::from_std(l)))
            }
            StdListener::Unix(l, file) => {
                l.set_nonblocking(true)?;
                Ok(Listener::Unix(mio::net::UnixListener::from_std(l), file))
            }
        }
    }

    /// Block until a client connects (the threaded models).
    pub fn accept_blocking(&self) -> io::Result<(BlockingStream, Peer)> {
        match self {
            StdListener::Tcp(l) => l.accept().map(|(s, p)| (BlockingStream::Tcp(s), Peer(Some(p)))),
            StdListener::Unix(l, _) => l.accept().map(|(s, _)| (BlockingStream::Unix(s), Peer(None))),
        }
    }

    /// Make a thread blocked in [`StdListener::accept_blocking`] return with an error
    /// (Linux: `shutdown(2)` on a listening socket wakes `accept(2)` with EINVAL).
    pub fn wake_acceptor(&self) -> io::Result<()> {
        self.sock_ref().shutdown(std::net::Shutdown::Both)
    }

    fn sock_ref(&self) -> SockRef<'_> {
        match self {
            StdListener::Tcp(l) => SockRef::from(l),
            StdListener::Unix(l, _) => SockRef::from(l),
        }
    }
}

/// Who is on the other end, for logs: a TCP peer address, or nothing for a Unix socket
/// client (they are usually unnamed). Kept as a plain value so a connection costs no heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("unix-client"),
        }
    }
}

/// Per-connection socket options, the same for every model.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOptions {
    /// SO_SNDBUF, if set.
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF, if set.
    pub recv_buffer: Option<usize>,
}

impl SocketOptions {
    /// Apply to a freshly accepted socket. TCP_NODELAY always: an echo is a reply, and
    /// Nagle's algorithm would hold it back waiting for the client's ACK.
    pub fn apply(&self, sock: SockRef<'_>, is_tcp: bool) -> io::Result<()> {
        if is_tcp {
            sock.set_tcp_nodelay(true)?;
            // A byte sent with MSG_OOB ("urgent") would otherwise be taken out of the stream
            // and never echoed; inline, it is echoed in its place like any other byte.
            sock.set_out_of_band_inline(true)?;
        }
        if let Some(size) = self.send_buffer {
            sock.set_send_buffer_size(size)?;
        }
        if let Some(size) = self.recv_buffer {
            sock.set_recv_buffer_size(size)?;
        }
        Ok(())
    }
}

/// A non-blocking listener registered with a `mio::Poll`.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(mio::net::TcpListener),
    /// Unix domain stream socket; the guard removes the socket file on drop.
    Unix(mio::net::UnixListener, SocketFile),
}

impl Listener {
    /// Accept one connection without blocking; `WouldBlock` when the queue is empty.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, peer)| (Stream::Tcp(s), Peer(Some(peer)))),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| (Stream::Unix(s), Peer(None))),
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l, _) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l, _) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l, _) => l.deregister(r),
        }
    }
}

/// A non-blocking connection registered with a `mio::Poll`.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(mio::net::TcpStream),
    /// Unix domain stream socket.
    Unix(mio::net::UnixStream),
}

impl Stream {
    /// The socket, for options.
    pub fn sock_ref(&self) -> SockRef<'_> {
        match self {
            Stream::Tcp(s) => SockRef::from(s),
            Stream::Unix(s) => SockRef::from(s),
        }
    }

    /// Is this a TCP stream (for TCP-only options)?
    pub fn is_tcp(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }

    /// Half-close: send EOF (a FIN, behind every byte already written), keep reading.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    /// Bytes the kernel still holds for this socket: (received but unread, sent but not yet
    /// acknowledged by the peer). `(0, 0)` means a `close` now is a clean end: nothing
    /// unread to provoke a reset, and nothing of ours left that a reset could destroy.
    pub fn kernel_queues(&self) -> io::Result<(usize, usize)> {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        Ok((ioctl_count(fd, libc::FIONREAD)?, ioctl_count(fd, libc::TIOCOUTQ)?))
    }
}

/// An `ioctl` that reports a byte count (FIONREAD alias SIOCINQ, TIOCOUTQ alias SIOCOUTQ).
fn ioctl_count(fd: std::os::fd::RawFd, request: libc::Ioctl) -> io::Result<usize> {
    let mut count: libc::c_int = 0;
    // SAFETY: `fd` is an open socket borrowed for this call, and both requests write one
    // `c_int` through the pointer, which points at a live `c_int`.
    if unsafe { libc::ioctl(fd, request, &mut count) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(count).unwrap_or(0))
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // nothing is buffered in user space
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// A blocking connection, as the threaded models use it.
#[derive(Debug)]
pub enum BlockingStream {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// Unix domain stream socket.
    Unix(unix::UnixStream),
}

/// Connect to a server, as the client and the load generator do. `timeout` bounds a TCP
/// connect (a Unix connect does not wait on a network). Errors name the address.
pub fn connect(addr: &ListenAddr, timeout: Duration) -> io::Result<BlockingStream> {
    match addr {
        ListenAddr::Tcp(sa) => std::net::TcpStream::connect_timeout(sa, timeout).map(BlockingStream::Tcp),
        ListenAddr::Unix(path) => unix::UnixStream::connect(path).map(BlockingStream::Unix),
    }
    .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))
}

impl BlockingStream {
    /// A second handle on the same socket, so one thread can send while another receives.
    pub fn try_clone(&self) -> io::Result<BlockingStream> {
        match self {
            BlockingStream::Tcp(s) => s.try_clone().map(BlockingStream::Tcp),
            BlockingStream::Unix(s) => s.try_clone().map(BlockingStream::Unix),
        }
    }

    /// Switch to non-blocking mode and wrap for mio (the load generator connects blocking,
    /// then drives every connection from its event loop).
    pub fn into_mio(self) -> io::Result<Stream> {
        match self {
            BlockingStream::Tcp(s) => {
                s.set_nonblocking(true)?;
                Ok(Stream::Tcp(mio::net::TcpStream::from_std(s)))
            }
            BlockingStream::Unix(s) => {
                s.set_nonblocking(true)?;
                Ok(Stream::Unix(mio::net::UnixStream::from_std(s)))
            }
        }
    }

    /// The socket, for options, timeouts and `shutdown(2)`.
    pub fn sock_ref(&self) -> SockRef<'_> {
        match self {
            BlockingStream::Tcp(s) => SockRef::from(s),
            BlockingStream::Unix(s) => SockRef::from(s),
        }
    }

    /// Is this a TCP stream (for TCP-only options)?
    pub fn is_tcp(&self) -> bool {
        matches!(self, BlockingStream::Tcp(_))
    }
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Tcp(s) => s.read(buf),
            BlockingStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Tcp(s) => s.write(buf),
            BlockingStream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reading through a shared reference, as `std` allows for `&TcpStream`: the threaded models
/// keep a connection in an `Arc`, so the shutdown path can reach its socket while the
/// connection's own thread is blocked in `read` or `write` on it.
impl Read for &BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Tcp(s) => (&*s).read(buf),
            BlockingStream::Unix(s) => (&*s).read(buf),
        }
    }
}

/// Writing through a shared reference; see the `Read` impl above.
impl Write for &BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Tcp(s) => (&*s).write(buf),
            BlockingStream::Unix(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
