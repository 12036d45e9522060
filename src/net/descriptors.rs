//! The descriptor limit. Every connection is a descriptor, and the soft `RLIMIT_NOFILE` a
//! process starts with is often 1024, far below what the hard limit (set by the service
//! manager or the administrator) allows. A server meant to hold many connections raises its
//! soft limit to the hard one at start; only root can raise the hard limit (up to
//! `fs.nr_open`), and this does not try. docs/scale.md has the whole list of limits.

use std::fmt;
use std::io;

/// Descriptors a server needs besides its connections: stdio, the poll or ring, the
/// listeners, wakers, the signal thread's, a metrics socket. A generous round number.
pub const RESERVED_DESCRIPTORS: u64 = 32;

/// The descriptor limit after [`raise_descriptor_limit`]: what it was, and what it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorLimit {
    /// The soft limit the process started with.
    pub was: u64,
    /// The soft limit now: the hard limit, unless raising it failed.
    pub now: u64,
    /// The hard limit: the most an unprivileged process may raise its soft limit to.
    pub hard: u64,
}

impl DescriptorLimit {
    /// About how many connections fit under the limit, all servers of the process together.
    pub fn connections(&self) -> u64 {
        self.now.saturating_sub(RESERVED_DESCRIPTORS)
    }

    /// If `connections` (what `--max-connections` allows, over every worker) cannot fit
    /// under the limit, one line saying so and what to change.
    pub fn shortfall(&self, connections: u64) -> Option<String> {
        (connections > self.connections()).then(|| {
            format!(
                "--max-connections allows {connections} connections, but the descriptor limit is {}: \
                 past about {} open connections accept fails with EMFILE and backs off \
                 (raise the hard limit: ulimit -Hn, or LimitNOFILE= in a systemd unit; at most fs.nr_open)",
                self.now,
                self.connections()
            )
        })
    }
}

impl fmt::Display for DescriptorLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.now > self.was {
            write!(f, "descriptor limit {} (raised from {} to the hard limit)", self.now, self.was)
        } else if self.now == self.hard {
            write!(f, "descriptor limit {} (the hard limit)", self.now)
        } else {
            write!(f, "descriptor limit {} (hard limit {})", self.now, self.hard)
        }
    }
}

/// Raise this process's soft RLIMIT_NOFILE to its hard limit, and say what it was and is.
pub fn raise_descriptor_limit() -> io::Result<DescriptorLimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(DescriptorLimit { was, now: limit.rlim_cur, hard: limit.rlim_max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_what_changed_and_what_does_not_fit() {
        let raised = DescriptorLimit { was: 1024, now: 20_000, hard: 20_000 };
        assert_eq!(raised.to_string(), "descriptor limit 20000 (raised from 1024 to the hard limit)");
        let already = DescriptorLimit { was: 20_000, ..raised };
        assert_eq!(already.to_string(), "descriptor limit 20000 (the hard limit)");
        assert_eq!(raised.shortfall(10_000), None);
        let short = raised.shortfall(30_000).unwrap();
        assert!(
            short.contains("30000") && short.contains("19968") && short.contains("ulimit -Hn"),
            "{short}"
        );
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let limit = raise_descriptor_limit().unwrap();
        assert_eq!(limit.now, limit.hard);
        assert!(limit.was <= limit.now);
    }
}
