//! The one error type the crate returns, so the calling binary chooses an exit code from
//! what went wrong, not from an `io::ErrorKind` (an OS `EINVAL` is not a usage error).

use std::fmt;
use std::io;

/// Why `echoloop bench` did not succeed.
#[derive(Debug)]
pub enum Error {
    /// The request cannot run as asked (a target off this machine, an unknown `--models`
    /// name, a load that cannot exist). Nothing was sent. Exit code 2, like clap's errors.
    Usage(String),
    /// The run could not happen, or it ran and found errors or corrupted echoes (the report
    /// is already out). Exit code 1.
    Run(io::Error),
}

impl Error {
    /// The process exit code for this error: 2 for usage, 1 for a failed run.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Run(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => f.write_str(message),
            Error::Run(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Usage(_) => None,
            Error::Run(e) => Some(e),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Run(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_run_errors_exit_differently() {
        assert_eq!(Error::Usage("bad".into()).exit_code(), 2);
        // An OS EINVAL is a failed run, not a usage error.
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(Error::from(einval).exit_code(), 1);
    }
}
