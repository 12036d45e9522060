//! The one error type at the library's edge, so `main` chooses the exit code from what went
//! wrong (the user asked for something impossible, or the system said no) instead of
//! reading meaning into an `io::ErrorKind`: an OS `EINVAL` is not a usage error.

use std::fmt;
use std::io;

/// Why a server could not start (or a client could not run).
#[derive(Debug)]
pub enum Error {
    /// The request itself cannot work (a flag combination, a value): fix the command line.
    /// Exit code 2, like clap's own usage errors.
    Usage(String),
    /// The system refused (an address in use, a permission, a failed socket call). Exit code 1.
    Io(io::Error),
}

impl Error {
    /// The process exit code for this error: 2 for usage, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Io(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => f.write_str(msg),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Usage(_) => None,
            Error::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_exits_2_and_an_os_einval_exits_1() {
        assert_eq!(Error::Usage("--workers must be at least 1".into()).exit_code(), 2);
        let einval = Error::from(io::Error::from_raw_os_error(libc::EINVAL));
        assert_eq!(einval.exit_code(), 1);
    }
}
