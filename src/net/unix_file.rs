//! The socket file of a `unix:PATH` address: removed before binding only if it is stale,
//! and removed again when our listener goes away, but only if it is still ours.
//!
//! A Unix socket leaves a file behind when its server dies, and `bind` then fails with
//! "address in use" although nobody listens. So before binding we *probe* the file: a
//! connection refused means stale (remove it); a connection made, or a full accept queue,
//! means a live server (refuse). The probe must not wait: a blocking `connect` to a live
//! server whose queue is full sleeps until it accepts, which may be never. A non-blocking
//! `connect` answers at once (Linux: EAGAIN for a full queue).
//!
//! On exit we remove the file only if it is the one we bound (same device and inode): if
//! someone deleted it and another server bound the same path meanwhile, the file is theirs.
//! A socket inherited from the service manager (socket activation) is never removed: the
//! manager created the file and keeps it for the next start.

use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net as unix;
use std::path::{Path, PathBuf};

use log::{debug, info, warn};
use socket2::{Domain, SockAddr, Socket, Type};

/// Bind a Unix stream listener on `path`, first removing a stale socket file there.
pub fn bind(path: &Path) -> io::Result<(unix::UnixListener, SocketFile)> {
    remove_stale_socket(path)?;
    let listener = unix::UnixListener::bind(path)?;
    let meta = std::fs::symlink_metadata(path)?;
    Ok((listener, SocketFile { path: path.to_path_buf(), identity: Some((meta.dev(), meta.ino())) }))
}

/// A socket file left by a server that died is removed; a live one is "address in use";
/// anything that is not a socket is left alone.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // nothing there
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(ErrorKind::AlreadyExists, "file exists and is not a socket"));
    }
    match probe(path) {
        Ok(()) => Err(in_use("another server is listening on it")),
        Err(e) if super::would_block(&e) => {
            Err(in_use("another server is listening on it, with a full accept queue"))
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            info!("removing stale socket file {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()), // removed meanwhile
        Err(e) => Err(e),
    }
}

/// Try to connect without waiting: `Ok` if a server took the connection, `WouldBlock` if it
/// is listening but its accept queue is full, `ConnectionRefused` if nobody listens.
fn probe(path: &Path) -> io::Result<()> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&SockAddr::unix(path)?)
    // `socket` drops here: a server that accepted it sees a client that left at once.
}

fn in_use(why: &str) -> io::Error {
    io::Error::new(ErrorKind::AddrInUse, format!("address already in use ({why})"))
}

/// Removes our Unix socket file when the listener goes away, if it is still ours.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the file our `bind` created; `None` if the file is not ours to
    /// remove (an inherited socket).
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    /// The file of a socket someone else bound (the service manager): named in messages,
    /// never removed.
    pub fn inherited(path: PathBuf) -> SocketFile {
        SocketFile { path, identity: None }
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let Some(identity) = self.identity else {
            debug!("not removing {}: the service manager owns it", self.path.display());
            return;
        };
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == identity => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    warn!("could not remove {}: {e}", self.path.display());
                }
            }
            Ok(_) => debug!("not removing {}: another server's socket is there now", self.path.display()),
            Err(e) => debug!("not removing {}: {e}", self.path.display()),
        }
    }
}
