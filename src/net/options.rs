//! Per-connection socket options, the same for every model.

use std::io;

use log::warn;
use socket2::SockRef;

use crate::config::ServerConfig;

/// Per-connection socket options, the same for every model.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOptions {
    /// SO_SNDBUF, if set.
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF, if set.
    pub recv_buffer: Option<usize>,
}

impl SocketOptions {
    /// The options `config` asks for.
    pub fn from_config(config: &ServerConfig) -> Self {
        SocketOptions { send_buffer: config.send_buffer, recv_buffer: config.recv_buffer }
    }

    /// Warn where the kernel will apply less than asked: it caps SO_SNDBUF / SO_RCVBUF at
    /// net.core.wmem_max / rmem_max. Called once per server (not per worker or model).
    pub fn warn_if_capped(&self) {
        warn_if_over_sysctl("--send-buffer", self.send_buffer, "/proc/sys/net/core/wmem_max");
        warn_if_over_sysctl("--recv-buffer", self.recv_buffer, "/proc/sys/net/core/rmem_max");
    }

    /// Apply to a freshly accepted socket. TCP_NODELAY always: an echo is a reply, and
    /// Nagle's algorithm would hold it back waiting for the client's ACK.
    pub fn apply(&self, sock: SockRef<'_>, is_tcp: bool) -> io::Result<()> {
        if is_tcp {
            sock.set_tcp_nodelay(true)?;
            // A byte sent with MSG_OOB ("urgent") would otherwise be taken out of the stream
            // and never echoed; inline, it is echoed in its place like any other byte.
            sock.set_out_of_band_inline(true)?;
        }
        if let Some(size) = self.send_buffer {
            sock.set_send_buffer_size(size)?;
        }
        if let Some(size) = self.recv_buffer {
            sock.set_recv_buffer_size(size)?;
        }
        Ok(())
    }
}

/// Say what the kernel will really apply when `asked` is over the cap in `sysctl_path`.
fn warn_if_over_sysctl(flag: &str, asked: Option<usize>, sysctl_path: &str) {
    let Some(asked) = asked else { return };
    let cap = std::fs::read_to_string(sysctl_path).ok().and_then(|text| text.trim().parse::<usize>().ok());
    if let Some(cap) = cap.filter(|&cap| asked > cap) {
        let sysctl = sysctl_path.trim_start_matches("/proc/sys/").replace('/', ".");
        warn!("{flag} {asked}: the kernel caps it at {sysctl} = {cap} bytes; applying {cap}");
    }
}
