//! The listening socket, blocking ([`StdListener`], the threaded models) or registered with
//! a `mio::Poll` ([`Listener`], the event loop); and [`ListenSocket`], a bound socket of
//! either kind a server serves (a stream listener, or a UDP socket).

use std::io;
use std::os::unix::net as unix;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use socket2::SockRef;

use super::stream::{BlockingStream, Peer, Stream};
use super::unix_file::SocketFile;
use crate::addr::ListenAddr;

/// A bound socket that a server serves: a stream listener (TCP, Unix) or a UDP socket,
/// each in blocking mode (the event loop makes its own non-blocking).
#[derive(Debug)]
pub enum ListenSocket {
    /// A listening TCP or Unix stream socket.
    Stream(StdListener),
    /// A bound UDP socket: datagrams, each answered to its sender.
    Datagram(std::net::UdpSocket),
}

impl ListenSocket {
    /// The real bound address (the port the OS chose for port 0).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            ListenSocket::Stream(listener) => listener.local_addr(),
            ListenSocket::Datagram(socket) => socket.local_addr().map(ListenAddr::Udp),
        }
    }
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

impl StdListener {
    /// The real bound address (the port the OS chose for port 0).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            StdListener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            StdListener::Unix(_, file) => Ok(ListenAddr::Unix(file.path().to_path_buf())),
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

    /// Make [`StdListener::accept_blocking`] give up after `timeout` with `WouldBlock`
    /// (SO_RCVTIMEO, which `accept(2)` honours), so an accepting thread can do something
    /// else now and then (ping a watchdog); `None` waits for ever.
    pub fn set_accept_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.sock_ref().set_read_timeout(timeout)
    }

    fn sock_ref(&self) -> SockRef<'_> {
        match self {
            StdListener::Tcp(l) => SockRef::from(l),
            StdListener::Unix(l, _) => SockRef::from(l),
        }
    }
}

/// A non-blocking listener registered with a `mio::Poll`.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(mio::net::TcpListener),
    /// Unix domain stream socket; the guard removes the socket file on drop.
    Unix(mio::net::UnixListener, #[expect(dead_code, reason = "held for its Drop")] SocketFile),
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
