//! How many connections this load generator can open, and what stops it first, said in one
//! line before it starts, with the setting that would move each limit:
//!
//! - descriptors: one per connection, under this process's `RLIMIT_NOFILE` (raised to the
//!   hard limit at start; `ulimit -Hn`, `LimitNOFILE=`, at most `fs.nr_open`);
//! - ports (TCP): toward one server, each source address has the ephemeral port range
//!   (`net.ipv4.ip_local_port_range`), so sources times ports (`--source`);
//! - memory: each connection costs the kernel about [`KERNEL_BYTES_PER_CONNECTION`] (both
//!   ends, on loopback), out of `MemAvailable`.
//!
//! When a connect fails for a local resource all the same, its error names the bottleneck
//! too (`sys::connect_bottleneck`).

use std::fmt;

use serde::Serialize;

use crate::human::{bytes, count};
use crate::kmem;
use crate::source;
use crate::sys;
use crate::target::Target;

/// Kernel memory per idle loopback connection, both ends: two TCP sockets with their inodes,
/// dentries, files and epoll entries, measured at about 7.5 KiB (docs/scale.md).
pub const KERNEL_BYTES_PER_CONNECTION: u64 = 8 * 1024;

/// Connections each limit allows, and which one is the lowest.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// Connections asked for.
    pub asked: usize,
    /// Under the descriptor limit (less the descriptors kept for everything else).
    pub descriptors: u64,
    /// The soft descriptor limit.
    pub descriptor_limit: u64,
    /// Under the port range, for TCP: source addresses times ports.
    pub ports: Option<u64>,
    /// Source addresses (1 without `--source`).
    pub sources: usize,
    /// Ports per source address.
    pub port_range: u64,
    /// In the memory available, at [`KERNEL_BYTES_PER_CONNECTION`].
    pub memory: u64,
    /// `MemAvailable`, bytes.
    pub mem_available: u64,
}

impl Ceiling {
    /// The limits in force now for `asked` connections to `target`. Call after the
    /// descriptor limit was raised.
    pub fn now(target: &Target, asked: usize) -> Ceiling {
        let descriptor_limit = sys::nofile_limit().unwrap_or(0);
        let sources = source::installed().map_or(1, |s| s.addrs().len());
        let port_range =
            sys::local_port_range().map_or(0, |(low, high)| u64::from(high.saturating_sub(low)) + 1);
        let mem_available = kmem::mem_available();
        Ceiling {
            asked,
            descriptors: descriptor_limit.saturating_sub(sys::RESERVED_DESCRIPTORS),
            descriptor_limit,
            ports: matches!(target, Target::Tcp(_)).then_some(sources as u64 * port_range),
            sources,
            port_range,
            memory: mem_available / KERNEL_BYTES_PER_CONNECTION,
            mem_available,
        }
    }

    /// The lowest limit: how many connections can open.
    pub fn connections(&self) -> u64 {
        self.descriptors.min(self.ports.unwrap_or(u64::MAX)).min(self.memory)
    }

    /// Fewer connections fit than were asked for.
    pub fn too_low(&self) -> bool {
        self.connections() < self.asked as u64
    }
}

impl fmt::Display for Ceiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let descriptors = format!(
            "the descriptor limit allows {} (RLIMIT_NOFILE {}: ulimit -Hn, LimitNOFILE=, fs.nr_open)",
            self.descriptors, self.descriptor_limit
        );
        let ports = self.ports.map(|ports| {
            format!(
                "the ports allow {ports} ({} source address{} x {} ports: --source, net.ipv4.ip_local_port_range)",
                self.sources,
                if self.sources == 1 { "" } else { "es" },
                self.port_range
            )
        });
        let memory = format!(
            "memory allows about {} (MemAvailable {} at ~{} of kernel memory per connection, both ends)",
            count(self.memory as f64),
            bytes(self.mem_available as f64),
            bytes(KERNEL_BYTES_PER_CONNECTION as f64)
        );
        let lowest = self.connections();
        let mut limits = vec![(self.descriptors, descriptors)];
        limits.extend(ports.map(|p| (self.ports.unwrap_or(u64::MAX), p)));
        limits.push((self.memory, memory));
        limits.sort_by_key(|(n, _)| *n);
        let said: Vec<&str> = limits.iter().map(|(_, s)| s.as_str()).collect();
        let verdict = if (self.asked as u64) <= lowest { "room for" } else { "NOT enough for" };
        write!(f, "ceiling {lowest} connections ({verdict} {}): {}", self.asked, said.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceiling(asked: usize, descriptors: u64, sources: usize) -> Ceiling {
        Ceiling {
            asked,
            descriptors,
            descriptor_limit: descriptors + 64,
            ports: Some(sources as u64 * 28_232),
            sources,
            port_range: 28_232,
            memory: 2_900_000,
            mem_available: 2_900_000 * KERNEL_BYTES_PER_CONNECTION,
        }
    }

    #[test]
    fn the_lowest_limit_comes_first_with_its_setting() {
        let line = ceiling(19_900, 19_936, 19).to_string();
        assert!(
            line.starts_with("ceiling 19936 connections (room for 19900): the descriptor limit"),
            "{line}"
        );
        assert!(line.contains("536408 (19 source addresses x 28232 ports"), "{line}");
        let ports = ceiling(30_000, 1_048_000, 1).to_string();
        assert!(
            ports.starts_with("ceiling 28232 connections (NOT enough for 30000): the ports allow 28232"),
            "{ports}"
        );
        assert!(ports.contains("net.ipv4.ip_local_port_range"), "{ports}");
        let memory = ceiling(10, 10_000_000, 1000).to_string();
        assert!(memory.contains("): memory allows about 2.90M"), "{memory}");
    }

    #[test]
    fn unix_sockets_have_no_ports() {
        let unix = Ceiling::now(&Target::Unix("/tmp/x.sock".into()), 10);
        assert_eq!(unix.ports, None);
        assert!(!unix.to_string().contains("ports"));
    }
}
