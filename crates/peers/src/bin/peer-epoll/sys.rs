//! Thin wrappers over the `libc` calls the loop makes: each turns the C return convention
//! (-1 and `errno`) into an `io::Result` and owns what it creates as an `OwnedFd`, which
//! closes on drop. All of this binary's `unsafe` is here, each block with its reason.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A C return value of -1 becomes the `errno` error.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Same for calls that return a byte count.
fn check_len(ret: libc::ssize_t) -> io::Result<usize> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret as usize) }
}

/// Wrap a descriptor a call just returned, so that it is closed exactly once.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful call that created it; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A new epoll instance.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the flag is valid.
    check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(owned)
}

/// Add (`EPOLL_CTL_ADD`) or change (`EPOLL_CTL_MOD`) the interest of `fd`; the event's data is
/// the descriptor itself, which is how the loop finds the connection again.
pub fn epoll_ctl(epoll: &OwnedFd, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: fd as u64 };
    // SAFETY: `event` is a valid, initialised struct that outlives the call.
    check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) }).map(drop)
}

/// Wait for events into `events` (its whole capacity), at most `timeout_ms` (-1: no limit).
pub fn epoll_wait(epoll: &OwnedFd, events: &mut Vec<libc::epoll_event>, timeout_ms: i32) -> io::Result<()> {
    events.clear();
    let room = events.capacity().min(i32::MAX as usize) as i32;
    // SAFETY: the kernel writes at most `room` events into the vector's spare capacity.
    let n = check(unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), room, timeout_ms) })?;
    // SAFETY: the kernel initialised the first `n <= room` entries.
    unsafe { events.set_len(n as usize) };
    Ok(())
}

/// Accept one connection, already non-blocking and close-on-exec.
pub fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: null address pointers are allowed: we do not ask for the peer's address.
    check(unsafe { libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), flags) }).map(owned)
}

/// `read(2)` into `buf`.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    check_len(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `send(2)` from `buf`; MSG_NOSIGNAL: a closed peer is an EPIPE error, never a SIGPIPE.
pub fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    check_len(unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
}

/// Set an integer socket option to `value`.
pub fn set_option(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a valid c_int for the duration of the call and `len` is its size.
    check(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&raw const value).cast(), len) }).map(drop)
}

/// Block SIGINT and SIGTERM and return a descriptor that becomes readable when one arrives,
/// so that a stop request is one more event in the epoll set.
pub fn stop_signals() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid; the old mask is not asked for.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        check(libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()))?;
    }
    // SAFETY: `set` is initialised; -1 asks for a new descriptor.
    check(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) }).map(owned)
}
