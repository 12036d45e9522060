//! Socket activation: serve the sockets that the service manager passes in, instead of
//! binding them.
//!
//! The protocol (systemd's `sd_listen_fds(3)`, which other managers copy) is a convention
//! between a parent and the program it executes:
//!
//! - the manager binds the sockets itself (so port 7 needs no privilege in the server), and
//!   leaves them open across `exec` as file descriptors 3, 4, 5, ..., one per `Listen` line
//!   of the socket unit, in the unit's order;
//! - `LISTEN_FDS` says how many descriptors were passed, `LISTEN_FDNAMES` (optional) names
//!   them, colon-separated, and `LISTEN_PID` says which process they are for: a child that
//!   inherits the environment but not the sockets must not take fd 3 for one. So a
//!   `LISTEN_PID` that is not our pid means "not for us", and the variables are ignored;
//! - the receiver sets close-on-exec on what it takes and unsets the variables, so that its
//!   own children inherit neither.
//!
//! That is a few lines, so they are written out here rather than taken from a crate: we
//! also check what each descriptor *is* (`SO_TYPE`, `SO_DOMAIN`, `SO_ACCEPTCONN`, its
//! addresses) so that a wrong unit file gets a clear message naming the descriptor instead
//! of an `accept` error later, and the environment is changed by the binary, at a point
//! where it is known to run single-threaded (`std::env::remove_var` is `unsafe` for that
//! reason).
//!
//! What is served: listening TCP and Unix stream sockets (`ListenStream=`) and bound UDP
//! sockets (`ListenDatagram=`), in any order. Anything else (a connected socket, as
//! `Accept=yes` passes; a file; a Unix datagram socket; a closed descriptor) is refused with
//! one line that names the descriptor.
//!
//! `LISTEN_FDS` is a number anyone can set, so it is checked before anything is done per
//! descriptor: it must be at most [`MAX_INHERITED`], and every descriptor it claims must be
//! open. (Building a name for each of 2147483647 claimed descriptors first is how a reader
//! aborts on a failed allocation.)

use std::io;
use std::net::UdpSocket;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net as unix;
use std::path::PathBuf;

use socket2::{Domain, SockRef, Type};

use super::listener::{ListenSocket, StdListener};
use super::unix_file::SocketFile;
use crate::addr::ListenAddr;
use crate::error::Error;

/// The protocol's variables, which the binary reads and then unsets.
pub const LISTEN_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// The most sockets taken from a service manager. A socket unit with more `Listen` lines
/// than this is a mistake; a `LISTEN_FDS` above it is refused before any descriptor is
/// looked at.
const MAX_INHERITED: u32 = 1024;

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// How much of a value from the environment an error message quotes.
const QUOTE_MAX: usize = 40;

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

    /// How many descriptors were passed to process `pid`: 0 if none, or if they are for
    /// another process. A count that is not a number, or above [`MAX_INHERITED`], is a
    /// usage error. Nothing here depends on the count's size.
    fn claimed_count(&self, pid: u32) -> Result<u32, Error> {
        let (Some(listen_pid), Some(listen_fds)) = (&self.listen_pid, &self.listen_fds) else {
            return Ok(0);
        };
        if listen_pid.trim().parse::<u32>().ok() != Some(pid) {
            log::debug!(
                "LISTEN_PID={} is not our pid {pid}: the passed sockets are not ours",
                quote(listen_pid)
            );
            return Ok(0);
        }
        let count: u32 = listen_fds.trim().parse().map_err(|_| {
            usage(format!("LISTEN_FDS=\"{}\" is not a number of file descriptors", quote(listen_fds)))
        })?;
        if count > MAX_INHERITED {
            return Err(usage(format!(
                "LISTEN_FDS={count} is more sockets than echoloop takes from a service manager \
                 (at most {MAX_INHERITED})"
            )));
        }
        Ok(count)
    }

    /// `fd 3`, or `fd 3 (echoloop.socket)` when `LISTEN_FDNAMES` names every one of the
    /// `count` descriptors (a list of another length is ignored, as it cannot be matched).
    fn description(&self, index: u32, count: u32) -> String {
        let fd = FIRST_FD + index as RawFd;
        let names = self.listen_fdnames.as_deref().filter(|n| n.split(':').count() == count as usize);
        match names.and_then(|n| n.split(':').nth(index as usize)) {
            Some(name) if !name.is_empty() => format!("fd {fd} ({})", quote(name)),
            _ => format!("fd {fd}"),
        }
    }
}

/// A socket inherited from the service manager, checked and ready to serve: a listening
/// stream socket (`ListenStream=`) or a bound UDP socket (`ListenDatagram=`), in blocking
/// mode.
#[derive(Debug)]
pub struct InheritedSocket {
    socket: ListenSocket,
    /// `fd 3 (echoloop.socket)`, for messages.
    description: String,
}

impl InheritedSocket {
    /// The address the socket is bound to (the `listening on` line).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        self.socket.local_addr()
    }

    /// Which descriptor it was, and its name if the manager gave one.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The socket, for the server to serve.
    pub(crate) fn into_inner(self) -> ListenSocket {
        self.socket
    }
}

/// Take every socket the service manager passed to this process, in the order passed; an
/// empty list when not socket-activated. A descriptor that cannot be served (see the
/// module docs) is a usage error naming it.
///
/// # Safety
///
/// The descriptors `env` names (3, and up) must be owned by nothing else in this process:
/// this takes ownership of them. That holds at the start of a process that the service
/// manager executed, before anything else could adopt fd 3.
pub unsafe fn take_inherited_sockets(env: &ActivationEnv) -> Result<Vec<InheritedSocket>, Error> {
    let count = env.claimed_count(std::process::id())?;
    // Every descriptor claimed must be open, before any is taken or described.
    if let Some(fd) = first_closed(FIRST_FD, count) {
        return Err(usage(format!("LISTEN_FDS={count} says fd {fd} was passed, but it is not open")));
    }
    let mut sockets = Vec::with_capacity(count as usize);
    for index in 0..count {
        let fd = FIRST_FD + index as RawFd;
        set_close_on_exec(fd)?;
        // SAFETY: `fd` is open (checked above), and by this function's contract nothing
        // else in the process owns it: we take it over, and close it when we are done.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let description = env.description(index, count);
        sockets.push(InheritedSocket { socket: check(owned, &description)?, description });
    }
    Ok(sockets)
}

/// The first of `count` descriptors from `first` on that is not open, if any.
fn first_closed(first: RawFd, count: u32) -> Option<RawFd> {
    // SAFETY: F_GETFD reads a descriptor's flags; it touches no memory, and answers EBADF
    // for a number that is not open.
    (0..count).map(|i| first + i as RawFd).find(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0)
}

/// Set close-on-exec on `fd`, as the protocol asks, so that a program we might start does
/// not inherit the socket.
fn set_close_on_exec(fd: RawFd) -> Result<(), Error> {
    // SAFETY: F_GETFD / F_SETFD read and set a descriptor's flags; they touch no memory.
    // (The descriptor is ours to change: see `take_inherited_sockets`'s contract.)
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) >= 0
    };
    if ok { Ok(()) } else { Err(io_error(&format!("fd {fd}"), "FD_CLOEXEC", io::Error::last_os_error())) }
}

/// Make sure `fd` is a socket we can serve, and wrap it by kind and family.
fn check(fd: OwnedFd, description: &str) -> Result<ListenSocket, Error> {
    let sock = SockRef::from(&fd);
    let kind = sock.r#type().map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTSOCK) => usage(format!("{description} is not a socket")),
        _ => io_error(description, "SO_TYPE", e),
    })?;
    let domain = sock.domain().map_err(|e| io_error(description, "SO_DOMAIN", e))?;
    if ![Domain::IPV4, Domain::IPV6, Domain::UNIX].contains(&domain) {
        return Err(usage(format!(
            "{description} is a {domain:?} socket; echoloop serves TCP, UDP and Unix sockets"
        )));
    }
    // The threaded models block in `accept` and `recv`; the manager may hand over a
    // non-blocking socket. (The event loop sets non-blocking mode itself.)
    sock.set_nonblocking(false).map_err(|e| io_error(description, "O_NONBLOCK", e))?;
    match kind {
        Type::STREAM => check_stream(fd, domain, description).map(ListenSocket::Stream),
        Type::DGRAM => check_datagram(fd, domain, description).map(ListenSocket::Datagram),
        _ => Err(usage(format!(
            "{description} is a {kind:?} socket; echoloop serves stream sockets (ListenStream=) \
             and UDP sockets (ListenDatagram=)"
        ))),
    }
}

/// A stream socket must be listening: `Accept=yes` passes one connection instead.
fn check_stream(fd: OwnedFd, domain: Domain, description: &str) -> Result<StdListener, Error> {
    let listening =
        SockRef::from(&fd).is_listener().map_err(|e| io_error(description, "SO_ACCEPTCONN", e))?;
    if !listening {
        return Err(usage(format!(
            "{description} is a stream socket but not listening (a connection?): with \
             Accept=yes the service manager passes one connection, not the listener; use Accept=no"
        )));
    }
    if domain == Domain::UNIX {
        let listener = unix::UnixListener::from(fd);
        let path = unix_path(&listener, description)?;
        return Ok(StdListener::Unix(listener, SocketFile::inherited(path)));
    }
    Ok(StdListener::Tcp(std::net::TcpListener::from(fd)))
}

/// A datagram socket must be UDP, bound to a port, and not connected to one peer (a
/// connected socket would hear only that peer; an echo answers everyone).
fn check_datagram(fd: OwnedFd, domain: Domain, description: &str) -> Result<UdpSocket, Error> {
    if domain == Domain::UNIX {
        return Err(usage(format!(
            "{description} is a Unix datagram socket; echoloop echoes datagrams over UDP only \
             (ListenDatagram=PORT)"
        )));
    }
    let socket = UdpSocket::from(fd);
    let local = socket.local_addr().map_err(|e| io_error(description, "getsockname", e))?;
    if local.port() == 0 {
        return Err(usage(format!("{description} is a UDP socket bound to no port")));
    }
    if let Ok(peer) = socket.peer_addr() {
        return Err(usage(format!(
            "{description} is a UDP socket connected to {peer}; echoloop answers every sender, \
             so it needs an unconnected socket (ListenDatagram=)"
        )));
    }
    Ok(socket)
}

/// The file a Unix listener is bound to. Abstract and unnamed sockets have none, and no
/// `unix:PATH` address could name them to a client.
fn unix_path(listener: &unix::UnixListener, description: &str) -> Result<PathBuf, Error> {
    let addr = listener.local_addr().map_err(|e| io_error(description, "getsockname", e))?;
    if let Some(path) = addr.as_pathname() {
        return Ok(path.to_path_buf());
    }
    let what = match addr.as_abstract_name() {
        Some(name) => format!("the abstract name @{}", quote(&String::from_utf8_lossy(name))),
        None => "no name".to_string(),
    };
    Err(usage(format!(
        "{description} is a Unix socket with {what}; echoloop serves Unix sockets bound to a path"
    )))
}

/// `value` for a one-line message: control characters escaped, and cut short (at a
/// character boundary) if it is long.
fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_MAX) {
        Some((end, _)) => format!("{}...", value[..end].escape_debug()),
        None => value.escape_debug().to_string(),
    }
}

fn usage(message: String) -> Error {
    Error::Usage(format!("socket activation: {message}"))
}

fn io_error(description: &str, what: &str, e: io::Error) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("socket activation: {description}: {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn env(pid: &str, fds: &str, names: Option<&str>) -> ActivationEnv {
        ActivationEnv {
            listen_pid: Some(pid.into()),
            listen_fds: Some(fds.into()),
            listen_fdnames: names.map(Into::into),
        }
    }

    /// Every error here is one short line: the message a user reads, however hostile the
    /// environment.
    #[track_caller]
    fn assert_usage_line(e: &Error, contains: &str) {
        let message = e.to_string();
        assert_eq!(e.exit_code(), 2, "{message}");
        assert!(message.contains(contains), "{message:?} does not contain {contains:?}");
        assert!(message.len() < 240 && !message.contains('\n'), "not one short line: {message:?}");
    }

    fn check_err(fd: impl Into<OwnedFd>) -> Error {
        check(fd.into(), "fd 3").expect_err("the descriptor was accepted")
    }

    #[test]
    fn only_our_pid_counts() {
        assert_eq!(env("41", "1", None).claimed_count(42).unwrap(), 0);
        assert_eq!(env("not a pid", "1", None).claimed_count(42).unwrap(), 0);
        assert_eq!(ActivationEnv::default().claimed_count(42).unwrap(), 0);
        let no_pid = ActivationEnv { listen_fds: Some("1".into()), ..Default::default() };
        assert_eq!(no_pid.claimed_count(42).unwrap(), 0);
        assert_eq!(env("42", "0", None).claimed_count(42).unwrap(), 0);
        assert_eq!(env(" 42\n", "3", None).claimed_count(42).unwrap(), 3);
        // Not ours: even a hostile count is not looked at.
        assert_eq!(env("41", "2147483647", None).claimed_count(42).unwrap(), 0);
    }

    #[test]
    fn names_label_the_descriptors() {
        assert_eq!(env("42", "1", None).description(0, 1), "fd 3");
        let named = env("42", "3", Some("echo:udp:"));
        assert_eq!(named.description(0, 3), "fd 3 (echo)");
        assert_eq!(named.description(1, 3), "fd 4 (udp)");
        assert_eq!(named.description(2, 3), "fd 5", "an empty name is no name");
        // A name count that does not match cannot be matched to descriptors: ignored.
        assert_eq!(env("42", "1", Some("a:b")).description(0, 1), "fd 3");
        // A long or strange name is shortened and escaped: messages stay one short line.
        let long = format!("{}\n", "x".repeat(5000));
        let description = env("42", "1", Some(&long)).description(0, 1);
        assert!(description.len() < 60 && !description.contains('\n'), "{description:?}");
    }

    #[test]
    fn a_count_that_is_not_a_number_is_a_usage_error() {
        for bad in ["many", "-1", "", "+", "3 4", "99999999999"] {
            let e = env("42", bad, None).claimed_count(42).unwrap_err();
            assert_usage_line(&e, "is not a number of file descriptors");
        }
        let e = env("42", "many", None).claimed_count(42).unwrap_err();
        assert!(e.to_string().contains("LISTEN_FDS=\"many\""), "{e}");
        let e = env("42", &"7".repeat(1_000_000), None).claimed_count(42).unwrap_err();
        assert_usage_line(&e, "LISTEN_FDS=\"7777");
    }

    /// Regression: `LISTEN_FDS=2147483647` aborted the process (a name was built for every
    /// claimed descriptor before anything was checked: a 51 GB allocation), and
    /// `LISTEN_FDS=100000` printed one 989 KB line.
    #[test]
    fn a_huge_count_is_refused_before_any_descriptor_is_looked_at() {
        for huge in ["2147483647", "4294967295", "100000", "1025"] {
            let e = env("42", huge, Some("a:b")).claimed_count(42).unwrap_err();
            assert_usage_line(&e, &format!("LISTEN_FDS={huge} is more sockets than"));
        }
        let ours = std::process::id().to_string();
        // SAFETY: refused before any descriptor is taken (that is what is tested).
        let e = unsafe { take_inherited_sockets(&env(&ours, "2147483647", None)) }.unwrap_err();
        assert_usage_line(&e, "at most 1024");
    }

    #[test]
    fn descriptors_that_are_not_open_are_found_first() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(first_closed(file.as_raw_fd(), 1), None);
        let beyond_any_limit = RawFd::MAX - 2;
        assert_eq!(first_closed(beyond_any_limit - 1, 3), Some(beyond_any_limit - 1));
        // Through the entry point: the claim runs past the last open descriptor, and the
        // error names one that is not open, before any descriptor is taken.
        let ours = std::process::id().to_string();
        // SAFETY: refused before any descriptor is taken: far fewer than 1024 are open.
        let e = unsafe { take_inherited_sockets(&env(&ours, "1024", None)) }.unwrap_err();
        assert_usage_line(&e, "was passed, but it is not open");
    }

    #[test]
    fn nothing_passed_is_an_empty_list() {
        // SAFETY: no descriptor is claimed for us.
        let sockets = unsafe { take_inherited_sockets(&ActivationEnv::default()) }.unwrap();
        assert!(sockets.is_empty());
    }

    #[test]
    fn a_listening_tcp_socket_keeps_its_address_and_blocks() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let ListenSocket::Stream(checked) = check(listener.into(), "fd 3").unwrap() else {
            panic!("a TCP listener is a stream")
        };
        assert_eq!(checked.local_addr().unwrap(), ListenAddr::Tcp(addr));
        let StdListener::Tcp(tcp) = checked else { panic!("not TCP") };
        // SAFETY: F_GETFL on a descriptor we own.
        let flags = unsafe { libc::fcntl(tcp.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0, "set back to blocking for the threaded models");
    }

    #[test]
    fn a_listening_unix_socket_is_served_and_its_file_left_alone() {
        let path = std::env::temp_dir().join(format!("echoloop-activation-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = unix::UnixListener::bind(&path).unwrap();
        let ListenSocket::Stream(checked) = check(listener.into(), "fd 4").unwrap() else {
            panic!("a Unix listener is a stream")
        };
        assert_eq!(checked.local_addr().unwrap(), ListenAddr::Unix(path.clone()));
        drop(checked);
        assert!(path.exists(), "the service manager's socket file was removed");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_bound_udp_socket_is_a_datagram_socket() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let inherited =
            InheritedSocket { socket: check(socket.into(), "fd 5").unwrap(), description: "fd 5".into() };
        assert_eq!(inherited.local_addr().unwrap(), ListenAddr::Udp(addr));
        assert!(matches!(inherited.into_inner(), ListenSocket::Datagram(_)));
    }

    #[test]
    fn a_file_is_refused_by_number() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_usage_line(&check_err(file), "fd 3 is not a socket");
    }

    #[test]
    fn connected_stream_sockets_are_refused() {
        let (stream, _peer) = unix::UnixStream::pair().unwrap();
        assert_usage_line(&check_err(stream), "fd 3 is a stream socket but not listening");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_usage_line(&check_err(tcp), "Accept=no");
    }

    #[test]
    fn a_bound_tcp_socket_that_does_not_listen_is_refused() {
        let socket = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        assert_usage_line(&check_err(socket), "not listening");
    }

    #[test]
    fn udp_sockets_that_cannot_echo_are_refused() {
        let unbound = socket2::Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        assert_usage_line(&check_err(unbound), "fd 3 is a UDP socket bound to no port");
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect("127.0.0.1:9").unwrap();
        assert_usage_line(&check_err(connected), "fd 3 is a UDP socket connected to 127.0.0.1:9");
    }

    #[test]
    fn other_kinds_of_socket_are_refused() {
        let (datagram, _peer) = unix::UnixDatagram::pair().unwrap();
        assert_usage_line(&check_err(datagram), "fd 3 is a Unix datagram socket");
        let seqpacket = socket2::Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        assert_usage_line(&check_err(seqpacket), "fd 3 is a SOCK_SEQPACKET socket");
        let netlink = socket2::Socket::new(Domain::from(libc::AF_NETLINK), Type::DGRAM, None).unwrap();
        assert_usage_line(&check_err(netlink), "echoloop serves TCP, UDP and Unix sockets");
    }

    #[test]
    fn an_abstract_unix_socket_is_refused() {
        let addr =
            unix::SocketAddr::from_abstract_name(format!("echoloop-test-{}", std::process::id())).unwrap();
        let listener = unix::UnixListener::bind_addr(&addr).unwrap();
        assert_usage_line(&check_err(listener), "abstract name @echoloop-test-");
    }
}
