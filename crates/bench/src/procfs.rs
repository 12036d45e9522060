//! Which local process listens on an address, found through `/proc` (Linux), so that
//! `--mode chaos` can watch a server it did not start.
//!
//! The kernel lists every listening socket with its inode: `/proc/net/tcp` and
//! `/proc/net/tcp6` (state `0A` = LISTEN), `/proc/net/unix` (flag `00010000` = accepting).
//! Each process's `/proc/PID/fd/N` links to `socket:[INODE]` for the sockets it holds, so
//! the listener's inode leads to its process. Only processes this user may inspect can be
//! found (another user's server needs `--server-pid`, and even then its `/proc` may be
//! closed to us).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::target::Target;

/// The PID of the process listening on `target`, or why it cannot be found.
pub fn find_listener(target: &Target) -> Result<u32, String> {
    let inodes = match target {
        Target::Tcp(addr) => tcp_listeners(*addr),
        Target::Unix(path) => unix_listeners(path),
        Target::Udp(_) => return Err("a UDP service has no listening socket to look for".into()),
    };
    if inodes.is_empty() {
        return Err(format!("no socket listening on {target} in /proc/net"));
    }
    owner_of(&inodes).ok_or_else(|| {
        format!("a socket listens on {target}, but no process of ours holds it (another user's?)")
    })
}

/// Inodes of TCP sockets listening on `addr`'s port, on its address or on every address.
fn tcp_listeners(addr: SocketAddr) -> Vec<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).filter_map(|line| tcp_listener(line, addr)).collect::<Vec<_>>())
        .collect()
}

/// One line of `/proc/net/tcp{,6}`: its inode if it is a listener that accepts `addr`.
fn tcp_listener(line: &str, addr: SocketAddr) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
    if *state != "0A" {
        return None;
    }
    let (ip, port) = local.split_once(':')?;
    let (ip, port) = (parse_hex_ip(ip)?, u16::from_str_radix(port, 16).ok()?);
    let accepts =
        port == addr.port() && (ip == addr.ip() || ip.is_unspecified() || mapped(ip) == Some(addr.ip()));
    accepts.then(|| inode.parse().ok())?
}

/// An address as `/proc/net/tcp` prints it: the bytes of the kernel's 32-bit words, each
/// word in host (little-endian) order.
fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> =
        (0..hex.len() / 8).map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()).collect();
    let bytes: Vec<u8> = words?.into_iter().flat_map(u32::to_le_bytes).collect();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?))),
        _ => None,
    }
}

/// `::ffff:127.0.0.1` as `127.0.0.1`: a dual-stack listener shows IPv4 peers so.
fn mapped(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// Inodes of Unix stream sockets accepting on `path`.
fn unix_listeners(path: &Path) -> Vec<u64> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    text.lines().skip(1).filter_map(|line| unix_listener(line, &absolute)).collect()
}

/// One line of `/proc/net/unix`: `Num RefCount Protocol Flags Type St Inode Path`.
fn unix_listener(line: &str, path: &Path) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (flags, inode, bound) = (fields.get(3)?, fields.get(6)?, fields.get(7)?);
    let accepting = u32::from_str_radix(flags, 16).ok()? & 0x0001_0000 != 0;
    (accepting && Path::new(bound) == path).then(|| inode.parse().ok())?
}

/// The first process (by PID) holding one of `inodes` among its descriptors.
fn owner_of(inodes: &[u64]) -> Option<u32> {
    let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids: Vec<u32> =
        fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return false }; // not ours, or gone
        fds.filter_map(Result::ok).any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|link| links.iter().any(|l| link.as_os_str() == l.as_str()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;

    #[test]
    fn proc_net_addresses_are_little_endian_words() {
        assert_eq!(parse_hex_ip("0100007F"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(parse_hex_ip("00000000000000000000000001000000"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(
            parse_hex_ip("0000000000000000FFFF00000100007F").and_then(mapped),
            Some(Ipv4Addr::LOCALHOST.into())
        );
        assert_eq!(parse_hex_ip("12345"), None);
    }

    #[test]
    fn listening_lines_match_their_own_port_and_wildcards() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let line = |local: &str, state: &str| {
            format!("0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000 1000 0 4242 1")
        };
        assert_eq!(tcp_listener(&line("0100007F:1F90", "0A"), addr), Some(4242));
        assert_eq!(
            tcp_listener(&line("00000000:1F90", "0A"), addr),
            Some(4242),
            "0.0.0.0 takes loopback too"
        );
        assert_eq!(tcp_listener(&line("0100007F:1F91", "0A"), addr), None, "another port");
        assert_eq!(tcp_listener(&line("0100007F:1F90", "01"), addr), None, "established, not listening");
        let unix = "0000000000000000: 00000002 00000000 00010000 0001 01 777 /tmp/e.sock";
        assert_eq!(unix_listener(unix, Path::new("/tmp/e.sock")), Some(777));
        assert_eq!(unix_listener(&unix.replace("00010000", "00000000"), Path::new("/tmp/e.sock")), None);
    }

    #[test]
    fn this_process_is_found_by_its_listeners() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target::Tcp(tcp.local_addr().unwrap());
        assert_eq!(find_listener(&target), Ok(std::process::id()));
        let path = std::env::temp_dir().join(format!("echoloop-procfs-{}.sock", std::process::id()));
        let _ = fs::remove_file(&path);
        let unix = UnixListener::bind(&path).unwrap();
        let found = find_listener(&Target::Unix(path.clone()));
        drop(unix);
        let _ = fs::remove_file(&path);
        assert_eq!(found, Ok(std::process::id()));
        drop(tcp);
        let error = find_listener(&target).unwrap_err();
        assert!(error.contains("no socket listening"), "{error}");
    }
}
