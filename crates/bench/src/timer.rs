//! A timer an event loop can poll: a Linux `timerfd`, registered with mio like a socket.
//!
//! Why not the poll timeout: mio rounds `epoll_wait`'s timeout up to whole milliseconds,
//! so an open-loop schedule with messages due every 50 µs would wake up to a millisecond
//! late, and the generator would count itself behind when it was only asleep. A `timerfd`
//! fires at nanosecond resolution (plus the kernel's timer slack, 50 µs by default), and
//! its expiry is just one more readiness event among the sockets'.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// A one-shot timer on the monotonic clock (the clock `Instant` reads).
pub struct Timer(OwnedFd);

impl Timer {
    /// A disarmed, non-blocking timer.
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes plain integers and returns a new descriptor or -1.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we just opened and own alone.
        Ok(Timer(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Fire once, `after` from now (at least 1 ns: a zero time would disarm it). Arming
    /// again replaces the previous expiry and clears a pending one.
    pub fn fire_in(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: after.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        // SAFETY: the descriptor is ours; `spec` is a valid itimerspec; old value unwanted.
        if unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consume an expiry, so that the next one is a new edge for an edge-triggered poll.
    pub fn clear(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into our buffer. A WouldBlock (nothing expired: the
        // event was stale) and any other result alike leave nothing to do.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), expirations.as_mut_ptr().cast(), expirations.len()) };
    }
}

impl Source for Timer {
    fn register(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(registry, token, interest)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    #[test]
    fn the_timer_wakes_a_poll_at_sub_millisecond_resolution() {
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new().unwrap();
        poll.registry().register(&mut timer, Token(7), Interest::READABLE).unwrap();
        let mut events = Events::with_capacity(4);
        for _ in 0..3 {
            let start = Instant::now();
            timer.fire_in(Duration::from_micros(300)).unwrap();
            poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
            let waited = start.elapsed();
            assert_eq!(events.iter().map(|e| e.token()).collect::<Vec<_>>(), [Token(7)]);
            // Not before it was due; and well short of the 5 s poll timeout.
            assert!(waited >= Duration::from_micros(300) && waited < Duration::from_secs(1), "{waited:?}");
            timer.clear();
        }
    }
}
