//! How the trace names what the ring does, so a student can follow one connection through
//! `RUST_LOG=echoloop=trace`:
//!
//! - a connection is always `fd=N`, its descriptor: what every request about it names, and
//!   what the accept completion that brought it returned;
//! - a listener goes by its role and its address, `LISTENER 127.0.0.1:7878`, and the
//!   shutdown eventfd by its role, `WAKER`;
//! - a completion says which request finished and how, `completion fd=9 recv n=6 (buffer 0)`,
//!   with `(more)` when a multishot request stays armed; an error is named as the man pages
//!   name it (`ECANCELED`), not as a negative number.
//!
//! Each name is a small `Display` value built inside the `trace!` call, so a disabled trace
//! formats nothing and looks nothing up.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use io_uring::cqueue;
use slab::Slab;

use super::Acceptor;
use super::connection::Connection;
use super::op::Op;
use crate::addr::ListenAddr;

/// `cqe` as the trace names it: the request it completes (looking the connection's
/// descriptor up in `connections`, a listener's address in `acceptors`) and its outcome.
pub(super) fn completion<'a>(
    cqe: &cqueue::Entry,
    connections: &Slab<Connection>,
    acceptors: &'a [Acceptor],
) -> impl fmt::Display + 'a {
    let (user_data, flags) = (cqe.user_data(), cqe.flags());
    let op = Op::decode(user_data);
    let fd = match op {
        Some(Op::Recv(key) | Op::Send(key)) => connections.get(key).map(Connection::fd),
        _ => None,
    };
    let listener = match op {
        Some(Op::Accept(i)) => acceptors.get(i).map(|acceptor| &acceptor.addr),
        _ => None,
    };
    let (more, bid) = (cqueue::more(flags), cqueue::buffer_select(flags));
    Completion { user_data, op, fd, listener, result: cqe.result(), more, bid }
}

/// One completion, with what the trace needs to name it.
struct Completion<'a> {
    user_data: u64,
    op: Option<Op>,
    /// The connection's descriptor, for a recv or a send of a connection still in the slab.
    fd: Option<RawFd>,
    /// The listener's address, for an accept.
    listener: Option<&'a ListenAddr>,
    result: i32,
    /// A multishot request that stays armed.
    more: bool,
    /// The provided buffer a recv landed in.
    bid: Option<u16>,
}

impl Completion<'_> {
    /// The connection's name, or the slot's if it is free (never expected: the loop warns).
    fn conn(&self, key: usize) -> ConnName {
        ConnName { fd: self.fd, key }
    }
}

/// `fd=9`, or `slot 4 (free)`.
struct ConnName {
    fd: Option<RawFd>,
    key: usize,
}

impl fmt::Display for ConnName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fd {
            Some(fd) => write!(f, "fd={fd}"),
            None => write!(f, "slot {} (free)", self.key),
        }
    }
}

impl fmt::Display for Completion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.op, self.result) {
            (Some(Op::Accept(i)), result) => {
                match self.listener {
                    Some(addr) => write!(f, "accept on LISTENER {addr}: ")?,
                    None => write!(f, "accept on listener {i} (unknown): ")?,
                }
                match result {
                    fd if fd >= 0 => write!(f, "fd={fd}")?,
                    e => write!(f, "{}", errno(e))?,
                }
            }
            (Some(Op::Wake), mask) if mask >= 0 => f.write_str("poll on WAKER: readable")?,
            (Some(Op::Wake), e) => write!(f, "poll on WAKER: {}", errno(e))?,
            (Some(Op::Cancel), n) if n >= 0 => write!(f, "cancel: result={n}")?,
            (Some(Op::Cancel), e) => write!(f, "cancel: {}", errno(e))?,
            (Some(Op::Recv(key)), n) => match (n, self.bid) {
                (0, _) => write!(f, "{} recv n=0 (EOF)", self.conn(key))?,
                (n, Some(bid)) if n > 0 => write!(f, "{} recv n={n} (buffer {bid})", self.conn(key))?,
                (n, None) if n > 0 => write!(f, "{} recv n={n} (no buffer named)", self.conn(key))?,
                (e, _) => write!(f, "{} recv {}", self.conn(key), errno(e))?,
            },
            (Some(Op::Send(key)), n) if n >= 0 => write!(f, "{} send n={n}", self.conn(key))?,
            (Some(Op::Send(key)), e) => write!(f, "{} send {}", self.conn(key), errno(e))?,
            (Some(Op::DatagramRecv(i)), n) => match (n, self.bid) {
                (n, Some(bid)) if n >= 0 => write!(f, "recvmsg on UDP socket {i}: n={n} (buffer {bid})")?,
                (n, None) if n >= 0 => write!(f, "recvmsg on UDP socket {i}: n={n} (no buffer named)")?,
                (e, _) => write!(f, "recvmsg on UDP socket {i}: {}", errno(e))?,
            },
            (Some(Op::DatagramSend(key)), n) if n >= 0 => write!(f, "reply {key} sendmsg n={n}")?,
            (Some(Op::DatagramSend(key)), e) => write!(f, "reply {key} sendmsg {}", errno(e))?,
            (None, result) => write!(f, "of unknown user_data {:#x}: result={result}", self.user_data)?,
        }
        if self.more {
            f.write_str(" (more)")?;
        }
        Ok(())
    }
}

/// A negative completion result as the man pages name it: `-125` is `ECANCELED`.
fn errno(result: i32) -> impl fmt::Display {
    Errno(-result)
}

struct Errno(i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::ECANCELED => "ECANCELED",
            libc::ENOBUFS => "ENOBUFS",
            libc::EAGAIN => "EAGAIN",
            libc::EINTR => "EINTR",
            libc::ECONNRESET => "ECONNRESET",
            libc::EPIPE => "EPIPE",
            libc::ENOENT => "ENOENT",
            libc::EALREADY => "EALREADY",
            libc::EMFILE => "EMFILE",
            libc::ENFILE => "ENFILE",
            libc::ENOMEM => "ENOMEM",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::ECONNABORTED => "ECONNABORTED",
            errno => return write!(f, "{}", io::Error::from_raw_os_error(errno)),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(op: Option<Op>, fd: Option<RawFd>, result: i32, more: bool, bid: Option<u16>) -> String {
        let user_data = op.map_or(0xdead_0000, Op::encode);
        let listener = ListenAddr::Tcp("127.0.0.1:7878".parse().unwrap());
        let listener = matches!(op, Some(Op::Accept(0))).then_some(&listener);
        Completion { user_data, op, fd, listener, result, more, bid }.to_string()
    }

    #[test]
    fn a_completion_names_its_connection_by_descriptor_and_its_outcome_in_words() {
        let accepted = shown(Some(Op::Accept(0)), None, 9, true, None);
        assert_eq!(accepted, "accept on LISTENER 127.0.0.1:7878: fd=9 (more)");
        assert_eq!(shown(Some(Op::Recv(0)), Some(9), 6, false, Some(3)), "fd=9 recv n=6 (buffer 3)");
        assert_eq!(shown(Some(Op::Recv(0)), Some(9), 0, false, None), "fd=9 recv n=0 (EOF)");
        assert_eq!(shown(Some(Op::Recv(0)), Some(9), -libc::ENOBUFS, false, None), "fd=9 recv ENOBUFS");
        assert_eq!(shown(Some(Op::Send(4)), Some(9), 6, false, None), "fd=9 send n=6");
        assert_eq!(shown(Some(Op::Send(4)), None, 6, false, None), "slot 4 (free) send n=6");
        let cancelled = shown(Some(Op::Accept(0)), None, -libc::ECANCELED, false, None);
        assert_eq!(cancelled, "accept on LISTENER 127.0.0.1:7878: ECANCELED");
        let unknown = shown(Some(Op::Accept(3)), None, 9, false, None);
        assert_eq!(unknown, "accept on listener 3 (unknown): fd=9");
        assert_eq!(shown(Some(Op::Wake), None, 1, false, None), "poll on WAKER: readable");
        assert_eq!(shown(None, None, 0, false, None), "of unknown user_data 0xdead0000: result=0");
        let datagram = shown(Some(Op::DatagramRecv(1)), None, 300, true, Some(2));
        assert_eq!(datagram, "recvmsg on UDP socket 1: n=300 (buffer 2) (more)");
        let dry = shown(Some(Op::DatagramRecv(0)), None, -libc::ENOBUFS, false, None);
        assert_eq!(dry, "recvmsg on UDP socket 0: ENOBUFS");
        assert_eq!(shown(Some(Op::DatagramSend(5)), None, 128, false, None), "reply 5 sendmsg n=128");
    }

    #[test]
    fn an_unnamed_errno_reads_as_the_system_says_it() {
        assert!(errno(-libc::EXDEV).to_string().contains("os error"), "{}", errno(-libc::EXDEV));
    }
}
