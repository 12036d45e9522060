//! Lingering: a connection that the *server* ends (it is shutting down, or the client sent a
//! frame over `--max-frame`) does not close the moment its last echo is handed to the kernel.
//!
//! Closing at once would be wrong: `close(2)` on a socket whose receive queue holds unread
//! bytes (or gets some later, from a client still sending) makes the kernel send a reset and
//! throw away the echoes still in our send queue (RFC 2525, "Failure to RST on close with
//! data pending"; Linux `tcp_close`). The client would lose echoes it was owed. So:
//!
//! 1. Once nothing is left to hand to the kernel, ask it what it still holds ([`begin`]).
//!    Nothing either way: close now, cleanly. Otherwise send our FIN behind the echoes
//!    (`shutdown(Write)`) and linger.
//! 2. While lingering, read and discard whatever the client still sends, until its EOF, or
//!    until the client has acknowledged every byte we sent, our FIN included ([`done`]):
//!    then a close cannot lose anything of ours, even if it resets a client that is still
//!    sending (one that never stops, as a line that never ends, must not keep us reading
//!    forever).
//! 3. No event announces an acknowledgement, so whoever lingers checks every
//!    [`LINGER_CHECK`]; the grace period (`--shutdown-grace`) bounds the whole wait.
//!
//! The loops follow all three steps. The blocking models skip the FIN of step 1: their stop
//! reached the socket as `shutdown(SHUT_RD)`, and Linux answers data that arrives on a socket
//! shut for reading *after* its FIN with a reset (RFC 1122 4.2.2.13), the very thing this
//! avoids; they discard and check [`done`] in the same rhythm.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::time::Duration;

use log::trace;
use socket2::Socket;

use crate::net::{interrupted, kernel_queues};

/// While lingering, how often the kernel's queues are checked for "the client has
/// acknowledged every byte and our FIN".
pub const LINGER_CHECK: Duration = Duration::from_millis(20);

/// The server ends this connection and has handed the kernel everything it owes: close now,
/// or linger? True if it must linger: our FIN has been sent behind the echoes, and the
/// caller enters its lingering phase. False: the kernel holds nothing either way, and a
/// close now is a clean end. `conn` names the connection in the trace.
pub fn begin(socket: &Socket, conn: fmt::Arguments<'_>) -> io::Result<bool> {
    let queues = kernel_queues(socket)?;
    if queues.unread == 0 && queues.unacknowledged == 0 {
        return Ok(false);
    }
    trace!(
        "{conn} all echoed; kernel holds unread={} unacked={}: FIN sent, lingering until the client closes",
        queues.unread, queues.unacknowledged
    );
    socket.shutdown(Shutdown::Write)?;
    Ok(true)
}

/// Lingering may end: the client has acknowledged every byte we sent (our FIN included), so
/// a close loses nothing of ours. A socket that cannot even say so is done too: it is broken.
///
/// Before saying so, it discards what the client sent and we have not read yet (a bounded
/// amount): the client may have taken its last echo a moment ago, before our next read of
/// the bytes it sent earlier, and a close with those still queued would end a client that
/// has stopped sending with a reset instead of a clean EOF (Unix sockets report it too).
pub fn done(socket: &Socket) -> bool {
    let acknowledged = kernel_queues(socket).map_or(true, |queues| queues.unacknowledged == 0);
    if acknowledged {
        discard_unread(socket);
    }
    acknowledged
}

/// Read and drop what the receive queue holds, up to [`DISCARD_MAX`] bytes, without ever
/// blocking (`MSG_DONTWAIT`, whatever the socket's mode: the io-uring and blocking models'
/// sockets may be blocking). Errors end it: the close that follows is all that is left.
fn discard_unread(socket: &Socket) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
    let mut discarded = 0;
    while discarded < DISCARD_MAX {
        match socket.recv_with_flags(&mut buf, libc::MSG_DONTWAIT) {
            Ok(0) => return, // the client's EOF: nothing more can arrive
            Ok(n) => discarded += n,
            Err(e) if interrupted(&e) => continue,
            Err(_) => return, // `WouldBlock`: the queue is empty; anything else: broken
        }
    }
}

/// At most this much is discarded at the end of lingering (a client still sending at full
/// speed refills the queue as fast as we empty it).
const DISCARD_MAX: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn nothing_held_closes_at_once_and_unread_bytes_make_it_linger() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let socket = socket2::SockRef::from(&ours);
        assert!(!begin(&socket, format_args!("test")).unwrap(), "nothing held: close now");
        theirs.write_all(b"still sending").unwrap();
        assert!(begin(&socket, format_args!("test")).unwrap(), "unread bytes: linger");
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).unwrap(); // our FIN went out
        assert!(rest.is_empty());
    }

    /// The client took its last echo and stopped sending, but bytes it sent earlier are still
    /// unread when lingering ends: the close must end it with an EOF, not a reset.
    #[test]
    fn done_discards_unread_input_so_the_close_is_clean() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(&[7; 100_000]).unwrap();
        let socket = socket2::SockRef::from(&ours);
        assert!(begin(&socket, format_args!("test")).unwrap(), "unread bytes: linger");
        assert!(done(&socket), "nothing of ours is unread by the client");
        drop(ours);
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).expect("a clean EOF, not a reset");
        assert!(rest.is_empty());
    }
}
