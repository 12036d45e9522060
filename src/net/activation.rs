//! Socket activation: serve a listening socket that the service manager passes in, instead
//! of binding one.
//!
//! The protocol (systemd's `sd_listen_fds(3)`, which other managers copy) is a convention
//! between a parent and the program it executes:
//!
//! - the manager binds the socket itself (so port 7 needs no privilege in the server), and
//!   leaves it open across `exec` as file descriptor 3 (then 4, 5, ... for more sockets);
//! - `LISTEN_FDS` says how many descriptors were passed, `LISTEN_FDNAMES` (optional) names
//!   them, colon-separated, and `LISTEN_PID` says which process they are for: a child that
//!   inherits the environment but not the sockets must not take fd 3 for one. So a
//!   `LISTEN_PID` that is not our pid means "not for us", and the variables are ignored;
//! - the receiver sets close-on-exec on what it takes and unsets the variables, so that its
//!   own children inherit neither.
//!
//! That is a few lines, so they are written out here rather than taken from a crate: we
//! also check what the descriptor *is* (a socket, a stream socket, listening: `SO_TYPE`,
//! `SO_ACCEPTCONN`, `SO_DOMAIN`) so that a wrong unit file gets a clear message instead of
//! an `accept` error later, and the environment is changed by the binary, at a point where
//! it is known to run single-threaded (`std::env::remove_var` is `unsafe` for that reason).
//!
//! A datagram socket (`ListenDatagram=`) is recognised and refused by name: `echoloop serve`
//! takes stream sockets (TCP, Unix). Serving an inherited UDP socket belongs in the arm of
//! [`check`] that refuses it, beside UDP support itself.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net as unix;
use std::path::PathBuf;

use socket2::{Domain, SockRef, Type};

use super::listener::StdListener;
use super::unix_file::SocketFile;
use crate::addr::ListenAddr;
use crate::error::Error;

/// The protocol's variables, which the binary reads and then unsets.
pub const LISTEN_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The values of [`LISTEN_VARS`] as this process found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivationEnv {
    /// `LISTEN_PID`: the process the sockets are for.
    pub listen_pid: Option<String>,
    /// `LISTEN_FDS`: how many descriptors, from 3 on.
    pub listen_fds: Option<String>,
    /// `LISTEN_FDNAMES`: their names (`FileDescriptorName=`, or the socket unit's name).
    pub listen_fdnames: Option<String>,
}

impl ActivationEnv {
    /// Read the variables (without changing the environment).
    pub fn from_env() -> ActivationEnv {
        let var = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        ActivationEnv {
            listen_pid: var("LISTEN_PID"),
            listen_fds: var("LISTEN_FDS"),
            listen_fdnames: var("LISTEN_FDNAMES"),
        }
    }

    /// The passed descriptors' names (one per descriptor, `fd N` where none is given), or
    /// `None` if nothing was passed to process `pid`.
    fn passed_to(&self, pid: u32) -> Result<Option<Vec<String>>, Error> {
        let (Some(listen_pid), Some(listen_fds)) = (&self.listen_pid, &self.listen_fds) else {
            return Ok(None);
        };
        if listen_pid.trim().parse::<u32>().ok() != Some(pid) {
            log::debug!("LISTEN_PID={listen_pid} is not our pid {pid}: the passed sockets are not ours");
            return Ok(None);
        }
        let count: usize = listen_fds
            .trim()
            .parse()
            .map_err(|_| usage(format!("LISTEN_FDS={listen_fds:?} is not a number of file descriptors")))?;
        let names: Vec<&str> =
            self.listen_fdnames.as_deref().map(|n| n.split(':').collect()).unwrap_or_default();
        Ok((count > 0).then(|| {
            (0..count)
                .map(|i| match names.get(i) {
                    Some(name) if names.len() == count => format!("fd {} ({name})", FIRST_FD + i as RawFd),
                    _ => format!("fd {}", FIRST_FD + i as RawFd),
                })
                .collect()
        }))
    }
}

/// A listening socket inherited from the service manager, checked and ready to serve.
#[derive(Debug)]
pub struct InheritedSocket {
    listener: StdListener,
    /// `fd 3 (echoloop.socket)`, for messages.
    description: String,
}

impl InheritedSocket {
    /// The address the socket is bound to (the `listening on` line).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        self.listener.local_addr()
    }

    /// Which descriptor it was, and its name if the manager gave one.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The listener, for the server to serve.
    pub(crate) fn into_listener(self) -> StdListener {
        self.listener
    }
}

/// Take the listening socket the service manager passed to this process, if `env` says it
/// passed one: `Ok(None)` when not socket-activated. A socket that is not what `echoloop
/// serve` can serve (not a socket, a datagram socket, not listening, more than one) is a
/// usage error that says what was passed instead.
///
/// # Safety
///
/// The descriptors `env` names (3, and up) must be owned by nothing else in this process:
/// this takes ownership of them. That holds at the start of a process that the service
/// manager executed, before anything else could adopt fd 3.
pub unsafe fn take_inherited_socket(env: &ActivationEnv) -> Result<Option<InheritedSocket>, Error> {
    let Some(names) = env.passed_to(std::process::id())? else { return Ok(None) };
    if names.len() > 1 {
        return Err(usage(format!(
            "the service manager passed {} sockets ({}); echoloop serves exactly one: \
             give the socket unit a single Listen line",
            names.len(),
            names.join(", ")
        )));
    }
    let description = names.into_iter().next().unwrap_or_default();
    let fd = FIRST_FD;
    if !set_close_on_exec(fd) {
        return Err(usage(format!("LISTEN_FDS says {description} was passed, but it is not open")));
    }
    // SAFETY: fd 3 is open (checked just above), and by this function's contract nothing
    // else in the process owns it: we take it over, and close it when we are done.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = check(owned, &description)?;
    Ok(Some(InheritedSocket { listener, description }))
}

/// Set close-on-exec on `fd`, as the protocol asks, so that a program we might start does
/// not inherit the listening socket; false if `fd` is not open.
fn set_close_on_exec(fd: RawFd) -> bool {
    // SAFETY: F_GETFD / F_SETFD read and set a descriptor's flags; they touch no memory,
    // and answer EBADF for a number that is not open. (The descriptor is ours to change:
    // see `take_inherited_socket`'s contract.)
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) >= 0
    }
}

/// Make sure `fd` is a listening stream socket we can serve, and wrap it by family.
fn check(fd: OwnedFd, description: &str) -> Result<StdListener, Error> {
    let sock = SockRef::from(&fd);
    let kind = sock.r#type().map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTSOCK) => usage(format!("{description} is not a socket")),
        _ => Error::Io(io::Error::new(e.kind(), format!("{description}: cannot read SO_TYPE: {e}"))),
    })?;
    if kind == Type::DGRAM {
        return Err(usage(format!(
            "{description} is a datagram socket (ListenDatagram=); echoloop serve takes stream \
             sockets (ListenStream=): TCP or Unix"
        )));
    }
    if kind != Type::STREAM {
        return Err(usage(format!(
            "{description} is not a stream socket (SO_TYPE {kind:?}): use ListenStream="
        )));
    }
    let listening = sock.is_listener().map_err(|e| io_error(description, "SO_ACCEPTCONN", e))?;
    if !listening {
        return Err(usage(format!(
            "{description} is a stream socket but not listening: with Accept=yes the service \
             manager passes one connection, not the listener; use Accept=no"
        )));
    }
    let domain = sock.domain().map_err(|e| io_error(description, "SO_DOMAIN", e))?;
    // Threaded models block in `accept`; the manager may hand over a non-blocking socket.
    sock.set_nonblocking(false).map_err(|e| io_error(description, "O_NONBLOCK", e))?;
    if domain == Domain::IPV4 || domain == Domain::IPV6 {
        return Ok(StdListener::Tcp(std::net::TcpListener::from(fd)));
    }
    if domain == Domain::UNIX {
        let listener = unix::UnixListener::from(fd);
        let path = unix_path(&listener, description)?;
        return Ok(StdListener::Unix(listener, SocketFile::inherited(path)));
    }
    Err(usage(format!("{description} is a {domain:?} socket; echoloop serves TCP and Unix sockets")))
}

/// The file a Unix listener is bound to. Abstract and unnamed sockets have none, and no
/// `unix:PATH` address could name them to a client.
fn unix_path(listener: &unix::UnixListener, description: &str) -> Result<PathBuf, Error> {
    let addr = listener.local_addr().map_err(|e| io_error(description, "getsockname", e))?;
    if let Some(path) = addr.as_pathname() {
        return Ok(path.to_path_buf());
    }
    let what = match addr.as_abstract_name() {
        Some(name) => format!("the abstract name @{}", String::from_utf8_lossy(name)),
        None => "no name".to_string(),
    };
    Err(usage(format!(
        "{description} is a Unix socket with {what}; echoloop serves Unix sockets bound to a path"
    )))
}

fn usage(message: String) -> Error {
    Error::Usage(format!("socket activation: {message}"))
}

fn io_error(description: &str, what: &str, e: io::Error) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("socket activation: {description}: {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: &str, fds: &str, names: Option<&str>) -> ActivationEnv {
        ActivationEnv {
            listen_pid: Some(pid.into()),
            listen_fds: Some(fds.into()),
            listen_fdnames: names.map(Into::into),
        }
    }

    #[test]
    fn only_our_pid_counts() {
        assert_eq!(env("41", "1", None).passed_to(42).unwrap(), None);
        assert_eq!(ActivationEnv::default().passed_to(42).unwrap(), None);
        let no_pid = ActivationEnv { listen_fds: Some("1".into()), ..Default::default() };
        assert_eq!(no_pid.passed_to(42).unwrap(), None);
        assert_eq!(env("42", "0", None).passed_to(42).unwrap(), None);
    }

    #[test]
    fn names_label_the_descriptors() {
        assert_eq!(env("42", "1", None).passed_to(42).unwrap(), Some(vec!["fd 3".to_string()]));
        assert_eq!(
            env("42", "2", Some("echo:other")).passed_to(42).unwrap(),
            Some(vec!["fd 3 (echo)".to_string(), "fd 4 (other)".to_string()])
        );
        // A name count that does not match is ignored, as sd_listen_fds_with_names would.
        assert_eq!(env("42", "1", Some("a:b")).passed_to(42).unwrap(), Some(vec!["fd 3".to_string()]));
    }

    #[test]
    fn a_bad_count_is_a_usage_error() {
        let e = env("42", "many", None).passed_to(42).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("LISTEN_FDS=\"many\""), "{e}");
    }

    #[test]
    fn what_is_not_a_listening_stream_socket_is_refused_by_name() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let e = check(OwnedFd::from(file), "fd 3").unwrap_err();
        assert!(e.to_string().contains("fd 3 is not a socket"), "{e}");

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = check(OwnedFd::from(udp), "fd 3 (echo)").unwrap_err();
        assert!(e.to_string().contains("fd 3 (echo) is a datagram socket"), "{e}");

        let (stream, _peer) = unix::UnixStream::pair().unwrap();
        let e = check(OwnedFd::from(stream), "fd 3").unwrap_err();
        assert!(e.to_string().contains("not listening"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn a_listening_tcp_socket_keeps_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let checked = check(OwnedFd::from(listener), "fd 3").unwrap();
        assert_eq!(checked.local_addr().unwrap(), ListenAddr::Tcp(addr));
    }

    #[test]
    fn an_abstract_unix_socket_is_refused() {
        let addr =
            unix::SocketAddr::from_abstract_name(format!("echoloop-test-{}", std::process::id())).unwrap();
        let listener = unix::UnixListener::bind_addr(&addr).unwrap();
        let e = check(OwnedFd::from(listener), "fd 3").unwrap_err();
        assert!(e.to_string().contains("abstract name @echoloop-test-"), "{e}");
    }
}
