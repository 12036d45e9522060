//! Privileged ports: binding a port below `net.ipv4.ip_unprivileged_port_start` (1024 unless
//! changed; the echo protocol's own port is 7) needs root or CAP_NET_BIND_SERVICE.
//!
//! Without either, `bind` fails with a bare EACCES, so the error here names the port and the
//! two ways that keep the server unprivileged: let the service manager bind the port and
//! pass the socket in (socket activation, `contrib/systemd`), or give the binary just the
//! one capability. As root it works; we say once that running the whole server as root is
//! more privilege than the port needs.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;

use log::info;

/// Where the kernel keeps the first unprivileged port.
const PORT_START_SYSCTL: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// The first port anyone may bind (the kernel's setting, or its default, 1024).
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string(PORT_START_SYSCTL).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1024)
}

/// Does binding this address need privilege, when ports from `start` on do not? (Port 0
/// lets the kernel pick a free high port.)
fn is_privileged(addr: SocketAddr, start: u16) -> bool {
    addr.port() != 0 && addr.port() < start
}

/// If `e` is a bind refused for lack of privilege on a privileged port, say so and how to
/// fix it; any other error is returned as it is.
pub fn explain_bind_error(addr: SocketAddr, e: io::Error) -> io::Error {
    explain(addr, e, unprivileged_port_start())
}

fn explain(addr: SocketAddr, e: io::Error, start: u16) -> io::Error {
    if e.kind() != ErrorKind::PermissionDenied || !is_privileged(addr, start) {
        return e;
    }
    let exe = std::env::current_exe().map_or_else(|_| "echoloop".into(), |p| p.display().to_string());
    io::Error::new(
        e.kind(),
        format!(
            "{e}: port {port} is privileged (below {start}) and needs root or CAP_NET_BIND_SERVICE. \
             Run it as a socket-activated service, which binds the port for it (see contrib/systemd), \
             or grant the binary that one capability: sudo setcap cap_net_bind_service=+ep {exe}",
            port = addr.port(),
        ),
    )
}

/// After binding: running as root on a privileged port works, but the whole server then
/// runs as root for the sake of one `bind`; say what would not need that.
pub fn note_if_root(addr: SocketAddr) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && is_privileged(addr, unprivileged_port_start()) {
        info!(
            "running as root to listen on privileged port {}: consider socket activation with \
             DynamicUser=yes (contrib/systemd), so the server never runs as root",
            addr.port()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> io::Error {
        io::Error::from_raw_os_error(libc::EACCES)
    }

    #[test]
    fn a_denied_privileged_port_gets_the_remedies() {
        let message = explain("127.0.0.1:7".parse().unwrap(), denied(), 1024).to_string();
        assert!(message.contains("port 7 is privileged (below 1024)"), "{message}");
        assert!(message.contains("contrib/systemd"), "{message}");
        assert!(message.contains("setcap cap_net_bind_service=+ep"), "{message}");
    }

    #[test]
    fn other_errors_and_ports_are_left_alone() {
        let high = explain("127.0.0.1:1024".parse().unwrap(), denied(), 1024);
        assert!(!high.to_string().contains("privileged"), "{high}");
        let in_use = io::Error::from_raw_os_error(libc::EADDRINUSE);
        let low = explain("127.0.0.1:7".parse().unwrap(), in_use, 1024);
        assert!(!low.to_string().contains("privileged"), "{low}");
        assert!(!is_privileged("0.0.0.0:0".parse().unwrap(), 1024));
    }
}
