//! What an I/O error means to the caller, named once: three answers that are not failures.
//!
//! - [`would_block`]: "not now". A non-blocking socket has nothing to read, no room to
//!   write, or no connection queued: the readiness loop waits for the next event.
//! - [`interrupted`]: a signal arrived during the call (EINTR): call again.
//! - [`timed_out`]: a blocking socket's SO_RCVTIMEO / SO_SNDTIMEO expired (EAGAIN on Linux,
//!   which std reports as `WouldBlock`): nothing moved for that long.
//!
//! Every other error is a real failure of that one socket, which its caller handles.

use std::io::{self, ErrorKind};

/// Not ready: the call would have had to wait (EAGAIN / EWOULDBLOCK). Not an error.
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

/// A signal interrupted the call (EINTR): nothing happened, call again.
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == ErrorKind::Interrupted
}

/// A socket timeout expired on a blocking call: Linux says EAGAIN, other systems ETIMEDOUT.
pub fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_predicate_names_its_errno() {
        let os = io::Error::from_raw_os_error;
        assert!(would_block(&os(libc::EAGAIN)) && !would_block(&os(libc::EINTR)));
        assert!(interrupted(&os(libc::EINTR)) && !interrupted(&os(libc::EAGAIN)));
        assert!(timed_out(&os(libc::EAGAIN)) && timed_out(&os(libc::ETIMEDOUT)));
        assert!(!timed_out(&os(libc::ECONNRESET)));
    }
}
