//! `ServerConfig`: the limits every model shares, so a comparison between models measures the
//! I/O model and nothing else. The CLI converts into this type; no clap type leaks past it.

use std::time::Duration;

use crate::addr::ListenAddr;

/// Which I/O model serves the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Model {
    /// One thread, one `mio::Poll`, every connection in a slab (per worker with `workers > 1`).
    #[default]
    EventLoop,
    /// One OS thread per connection over blocking `std::net` sockets.
    ThreadPerConn,
    /// One connection at a time on the accepting thread.
    Blocking,
    /// One thread, one io_uring: completions instead of readiness (Linux).
    IoUring,
}

impl Model {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Model::EventLoop => "event-loop",
            Model::ThreadPerConn => "thread-per-conn",
            Model::Blocking => "blocking",
            Model::IoUring => "io-uring",
        }
    }
}

/// Everything a server needs to know before it binds.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: ListenAddr,
    /// Which I/O model serves connections.
    pub model: Model,
    /// Independent event loops sharing the port through SO_REUSEPORT (event loop only).
    pub workers: usize,
    /// Live connections per server (per worker); more are accepted and closed at once.
    pub max_connections: usize,
    /// Close a connection after this long without any bytes moving; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Per connection, the most bytes read but not yet echoed (the backpressure cap).
    pub max_pending: usize,
    /// SO_SNDBUF for accepted sockets; `None` leaves the kernel default.
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF for accepted sockets; `None` leaves the kernel default.
    pub recv_buffer: Option<usize>,
    /// How long a shutdown waits for pending echoes to flush.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: crate::addr::DEFAULT_ADDR.parse().expect("the default address parses"),
            model: Model::EventLoop,
            workers: 1,
            max_connections: 10_000,
            idle_timeout: None,
            max_pending: 64 * 1024,
            send_buffer: None,
            recv_buffer: None,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl ServerConfig {
    /// A default configuration listening on `addr`.
    pub fn new(addr: ListenAddr) -> Self {
        ServerConfig { addr, ..ServerConfig::default() }
    }

    /// Reject combinations that cannot work, with a message that names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        if self.workers > 1 && self.model != Model::EventLoop {
            return Err(format!("--workers applies to the event-loop model, not {}", self.model.name()));
        }
        if self.workers > 1 && matches!(self.addr, ListenAddr::Unix(_)) {
            return Err(format!(
                "--workers {} needs a TCP address: SO_REUSEPORT does not apply to {}",
                self.workers, self.addr
            ));
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_pending == 0 {
            return Err("--max-pending must be at least 1 byte".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn workers_need_tcp_and_the_event_loop() {
        let mut config = ServerConfig::new("unix:/tmp/x.sock".parse().unwrap());
        config.workers = 2;
        assert!(config.validate().unwrap_err().contains("SO_REUSEPORT"));
        let mut config = ServerConfig { workers: 2, model: Model::Blocking, ..Default::default() };
        assert!(config.validate().unwrap_err().contains("blocking"));
        config.workers = 0;
        assert!(config.validate().unwrap_err().contains("at least 1"));
    }

    #[test]
    fn zero_limits_are_rejected() {
        let config = ServerConfig { max_pending: 0, ..Default::default() };
        assert!(config.validate().is_err());
        let config = ServerConfig { max_connections: 0, ..Default::default() };
        assert!(config.validate().is_err());
    }
}
