//! Connected sockets: non-blocking ([`Stream`], the event loop) and blocking
//! ([`BlockingStream`], the threaded models, the client), and [`Peer`] for logs.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net as unix;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use socket2::SockRef;

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

/// A connected, non-blocking socket, as the event loop registers it with `mio` (the io-uring
/// model keeps its sockets in the same type, and never registers them).
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(mio::net::TcpStream),
    /// Unix domain stream socket.
    Unix(mio::net::UnixStream),
}

impl Stream {
    /// Take ownership of a socket accepted by other means than [`Listener::accept`] (the
    /// io-uring model's accept returns a bare descriptor): TCP if `tcp`, else Unix.
    ///
    /// [`Listener::accept`]: super::Listener::accept
    pub fn from_fd(fd: OwnedFd, tcp: bool) -> Stream {
        if tcp {
            Stream::Tcp(mio::net::TcpStream::from_std(fd.into()))
        } else {
            Stream::Unix(mio::net::UnixStream::from_std(fd.into()))
        }
    }

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

    /// The client's address, asked of the kernel (`getpeername`): for a log line, which is
    /// rare enough that a connection need not carry the address (32 bytes) all its life. A
    /// Unix client is unnamed, and a TCP socket already reset has no peer any more: `Peer(None)`.
    pub fn peer(&self) -> Peer {
        let addr = self.is_tcp().then(|| self.sock_ref().peer_addr().ok()?.as_socket()).flatten();
        Peer(addr)
    }

    /// Its descriptor, for requests that name it (io_uring).
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// What the kernel still holds for one connected socket: what lingering before a close
/// decides on (see `crate::lifecycle::linger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelQueues {
    /// Bytes received and not yet read (FIONREAD).
    pub unread: usize,
    /// Bytes sent and not yet acknowledged by the peer, our FIN included (TIOCOUTQ).
    pub unacknowledged: usize,
}

/// Ask the kernel what it holds for `socket`.
pub fn kernel_queues(socket: &socket2::Socket) -> io::Result<KernelQueues> {
    let fd = socket.as_raw_fd();
    Ok(KernelQueues {
        unread: ioctl_count(fd, libc::FIONREAD)?,
        unacknowledged: ioctl_count(fd, libc::TIOCOUTQ)?,
    })
}

/// An `ioctl` that reports a byte count (FIONREAD alias SIOCINQ, TIOCOUTQ alias SIOCOUTQ).
fn ioctl_count(fd: RawFd, request: libc::Ioctl) -> io::Result<usize> {
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
    /// One `writev`: the event loop sends a frame's held start and its end in one call.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
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

impl BlockingStream {
    /// A second handle on the same socket, so one thread can send while another receives.
    pub fn try_clone(&self) -> io::Result<BlockingStream> {
        match self {
            BlockingStream::Tcp(s) => s.try_clone().map(BlockingStream::Tcp),
            BlockingStream::Unix(s) => s.try_clone().map(BlockingStream::Unix),
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
