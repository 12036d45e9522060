//! TEMPORARY placeholder: being written (thread-per-connection model).
use crate::{config::ServerConfig, net::StdListener, shutdown::ShutdownHandle, stats::Summary};
/// Serve with one thread per connection.
pub fn serve(_l: StdListener, _c: &ServerConfig, _s: &ShutdownHandle) -> std::io::Result<Summary> {
    Err(std::io::Error::other("thread-per-conn: not built yet"))
}
