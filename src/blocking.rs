//! TEMPORARY placeholder: being written (blocking model).
use crate::{config::ServerConfig, net::StdListener, shutdown::ShutdownHandle, stats::Summary};
/// Serve with one connection at a time.
pub fn serve(_l: StdListener, _c: &ServerConfig, _s: &ShutdownHandle) -> std::io::Result<Summary> {
    Err(std::io::Error::other("blocking: not built yet"))
}
