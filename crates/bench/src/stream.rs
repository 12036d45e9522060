//! Connections to a [`Target`]: opened blocking, proved alive with a 1-byte ping, then
//! handed to mio as one non-blocking [`Stream`] type whatever the socket family.
//!
//! Why connect blocking and ping: connections are opened one at a time, and each must
//! echo one byte before the next is opened. Then the server has accepted and served every
//! connection before any load starts, and connects never outrun a slow accept loop: a full
//! listen backlog drops SYNs, and a dropped SYN costs a one-second retransmit that would
//! stall the whole phase.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::proxy::{self, ProxyVersion};
use crate::target::Target;

/// A connected, non-blocking socket, for a `mio::Poll`.
#[derive(Debug)]
pub enum Stream {
    /// TCP (with TCP_NODELAY).
    Tcp(mio::net::TcpStream),
    /// A Unix domain stream socket.
    Unix(mio::net::UnixStream),
}

/// Connect to `target`, send `ping` (one byte, framed as the server expects; after a PROXY
/// header if `proxy` says so) and wait for it to come back, and return the socket
/// non-blocking. `limit` bounds the TCP connect and
/// the wait for the ping's echo. Errors name the target, and the bottleneck when it is a
/// local resource (ports, descriptors).
pub fn connect(
    target: &Target,
    ping: &[u8],
    proxy: Option<ProxyVersion>,
    limit: Duration,
) -> io::Result<Stream> {
    let named = |e: io::Error| connect_error(target, e, limit);
    match target {
        Target::Tcp(addr) => {
            let socket = crate::source::connect(addr, limit).map_err(named)?;
            // Our messages are whole requests: do not let Nagle hold them back.
            socket.set_nodelay(true)?;
            socket.set_read_timeout(Some(limit))?;
            if let Some(version) = proxy {
                proxy::send(version, &mut &socket, Some((socket.local_addr()?, socket.peer_addr()?)))?;
            }
            ping_pong(&socket, ping, limit)?;
            socket.set_nonblocking(true)?;
            Ok(Stream::Tcp(mio::net::TcpStream::from_std(socket)))
        }
        Target::Udp(_) => Err(io::Error::new(ErrorKind::InvalidInput, format!("{target} is not a stream"))),
        Target::Unix(path) => {
            let socket = UnixStream::connect(path).map_err(named)?;
            socket.set_read_timeout(Some(limit))?;
            if let Some(version) = proxy {
                proxy::send(version, &mut &socket, None)?;
            }
            ping_pong(&socket, ping, limit)?;
            socket.set_nonblocking(true)?;
            Ok(Stream::Unix(mio::net::UnixStream::from_std(socket)))
        }
    }
}

/// Start connecting to `target` without waiting: the socket is returned at once, and is
/// connected when it turns writable and [`Stream::connected`] says so. A Unix socket whose
/// server's backlog is full gives `WouldBlock` (try again later), not an error. `limit` is
/// only for the words of an error.
pub fn connect_nonblocking(target: &Target, limit: Duration) -> io::Result<Stream> {
    match target {
        Target::Tcp(addr) => {
            let socket =
                crate::source::connect_nonblocking(*addr).map_err(|e| connect_error(target, e, limit))?;
            socket.set_nodelay(true)?;
            Ok(Stream::Tcp(socket))
        }
        Target::Udp(_) => Err(io::Error::new(ErrorKind::InvalidInput, format!("{target} is not a stream"))),
        Target::Unix(path) => match mio::net::UnixStream::connect(path) {
            Ok(socket) => Ok(Stream::Unix(socket)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(e), // backlog full: not ours to name
            Err(e) => Err(connect_error(target, e, limit)),
        },
    }
}

/// A failed connect in one line: the target, what happened, and the local bottleneck if
/// that was the cause. `limit` is the `--connect-timeout` that a timed-out connect ran into.
pub fn connect_error(target: &Target, e: io::Error, limit: Duration) -> io::Error {
    let hint = crate::sys::connect_bottleneck(&e).map(|h| format!(": {h}")).unwrap_or_default();
    io::Error::new(e.kind(), format!("cannot connect to {target}: {}{hint}", failure(&e, limit)))
}

/// What a failed connect means, in the words a person would use: refused, unreachable,
/// timed out after `--connect-timeout`; otherwise the system's own words. (The kernel's
/// message stays beside the first two, which have several causes.)
pub fn failure(e: &io::Error, limit: Duration) -> String {
    let errno = e.raw_os_error();
    match e.kind() {
        ErrorKind::ConnectionRefused => {
            format!("refused: nothing listens there, or a firewall rejects ({e})")
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => format!("unreachable: {e}"),
        _ if matches!(errno, Some(libc::EHOSTUNREACH | libc::ENETUNREACH)) => format!("unreachable: {e}"),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => format!(
            "timed out after --connect-timeout {}s: no answer (a host that is down, or a firewall that drops packets)",
            limit.as_secs_f64()
        ),
        ErrorKind::NotFound => format!("no such socket file ({e})"),
        _ => e.to_string(),
    }
}

/// Send `ping` and wait (under the socket's read timeout) for it to come back.
fn ping_pong(mut socket: impl Read + Write, ping: &[u8], limit: Duration) -> io::Result<()> {
    socket.write_all(ping)?;
    let mut answer = [0u8; 8];
    let answer = &mut answer[..ping.len()];
    match socket.read_exact(answer) {
        Ok(()) if answer == ping => Ok(()),
        Ok(()) => Err(io::Error::new(ErrorKind::InvalidData, "the 1-byte ping came back wrong")),
        // A read timeout shows as WouldBlock or TimedOut, depending on the platform.
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            let msg = format!("no answer to a 1-byte ping within {}s", limit.as_secs_f64());
            Err(io::Error::new(ErrorKind::TimedOut, msg))
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("ping: {e}"))),
    }
}

/// What the bench needs of a socket of either family, so that [`Stream`] can forward to
/// whichever it holds in one place (a virtual call costs nothing beside the system call).
trait Socket: Read + Write + Source {
    fn shutdown_both(&self) -> io::Result<()>;
}

impl Socket for mio::net::TcpStream {
    fn shutdown_both(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Both)
    }
}

impl Socket for mio::net::UnixStream {
    fn shutdown_both(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Both)
    }
}

impl Stream {
    fn socket(&mut self) -> &mut dyn Socket {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    /// Close both directions at once (the bench is giving up on this connection).
    pub fn shutdown(&mut self) -> io::Result<()> {
        self.socket().shutdown_both()
    }

    /// After [`connect_nonblocking`], once [`Stream::connected`]: send the PROXY header.
    pub fn send_proxy_header(&mut self, version: ProxyVersion) -> io::Result<()> {
        let ends = match self {
            Stream::Tcp(s) => Some((s.local_addr()?, s.peer_addr()?)),
            Stream::Unix(_) => None,
        };
        proxy::send(version, self, ends)
    }

    /// After [`connect_nonblocking`], once writable: `Ok(true)` connected, `Ok(false)` still
    /// connecting (the event was for something else), `Err` the connect failed (mio's
    /// `TcpStream::connect` docs: `take_error`, then `peer_addr`).
    pub fn connected(&self) -> io::Result<bool> {
        match self {
            Stream::Tcp(s) => {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                match s.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Stream::Unix(_) => Ok(true), // a Unix connect completes at once, or fails
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket().read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // nothing is buffered in user space
    }
}

impl Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        self.socket().register(registry, token, interest)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        self.socket().reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket().deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    const LIMIT: Duration = Duration::from_secs(5);

    /// A listener on port 0 whose one connection is handled by `serve` on a thread.
    fn one_shot(serve: fn(TcpStream)) -> (Target, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target::Tcp(listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            socket.set_read_timeout(Some(LIMIT)).unwrap();
            serve(socket);
        });
        (target, server)
    }

    #[test]
    fn a_ping_that_comes_back_gives_a_non_blocking_stream() {
        let (target, server) = one_shot(|mut s| {
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).unwrap();
            s.write_all(&byte).unwrap();
            let _ = s.read(&mut byte); // hold the connection open until the client closes
        });
        let mut stream = connect(&target, b"!", None, LIMIT).unwrap();
        // The server holds the connection open and sends nothing: a blocking read would hang.
        let error = stream.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WouldBlock);
        drop(stream);
        server.join().unwrap();
    }

    /// With `--proxy-protocol`, the header naming the connection's ends comes before the ping.
    #[test]
    fn a_proxy_header_goes_before_the_ping() {
        let (target, server) = one_shot(|mut s| {
            let (client, server) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
            let expected = format!(
                "PROXY TCP4 {} {} {} {}\r\n!",
                client.ip(),
                server.ip(),
                client.port(),
                server.port()
            );
            let mut got = vec![0u8; expected.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(String::from_utf8_lossy(&got), expected);
            s.write_all(b"!").unwrap();
            let _ = s.read(&mut [0u8; 1]); // hold the connection open until the client closes
        });
        let stream = connect(&target, b"!", Some(ProxyVersion::V1), LIMIT).unwrap();
        drop(stream);
        server.join().unwrap();
    }

    #[test]
    fn a_wrong_ping_answer_is_refused() {
        let (target, server) = one_shot(|mut s| {
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).unwrap();
            s.write_all(b"?").unwrap();
        });
        let error = connect(&target, b"!", None, LIMIT).unwrap_err();
        server.join().unwrap();
        assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
    }

    #[test]
    fn refused_connections_name_the_target() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = Target::Tcp(([127, 0, 0, 1], port).into());
        let error = connect(&target, b"!", None, LIMIT).unwrap_err().to_string();
        assert!(error.starts_with(&format!("cannot connect to 127.0.0.1:{port}: refused: ")), "{error}");
    }

    #[test]
    fn connect_failures_say_what_happened() {
        let limit = Duration::from_millis(1500);
        let say = |e: io::Error| failure(&e, limit);
        assert!(
            say(io::Error::from_raw_os_error(libc::ECONNREFUSED)).starts_with("refused: nothing listens")
        );
        assert!(say(io::Error::from_raw_os_error(libc::EHOSTUNREACH)).starts_with("unreachable: "));
        assert!(say(io::Error::from_raw_os_error(libc::ENETUNREACH)).starts_with("unreachable: "));
        let timed_out = say(io::Error::new(ErrorKind::TimedOut, "connection timed out"));
        assert!(timed_out.starts_with("timed out after --connect-timeout 1.5s"), "{timed_out}");
        assert!(say(io::Error::from_raw_os_error(libc::ENOENT)).starts_with("no such socket file"));
        let target = Target::Tcp(([192, 0, 2, 1], 7).into());
        let error = connect_error(&target, io::Error::from_raw_os_error(libc::EHOSTUNREACH), limit);
        assert_eq!(
            error.to_string(),
            "cannot connect to 192.0.2.1:7: unreachable: No route to host (os error 113)"
        );
    }
}
