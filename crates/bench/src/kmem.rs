//! The kernel's memory, before and after connections open: what a connection costs beside
//! the server's own (user-space) memory. Read from `/proc/meminfo` (slab, kernel stacks,
//! page tables), `/proc/net/sockstat` (socket buffers) and `/proc/slabinfo` (which slab caches
//! grew: `TCP`, `sock_inode_cache`, `dentry`, `filp`, `eventpoll_epi`...). `/proc/slabinfo` is
//! readable by root only; without it the caches are simply not listed.
//!
//! The numbers are the whole machine's: on loopback both ends of a connection (the load
//! generator's socket and the server's) are in them, and so is whatever else runs.

use std::collections::HashMap;

use serde::Serialize;

/// One reading of the kernel's memory.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `Slab` of `/proc/meminfo`, bytes: every slab cache (sockets, inodes, epoll entries).
    slab: u64,
    /// `KernelStack`, bytes: 16 KiB per thread (thread-per-connection shows here).
    kernel_stack: u64,
    /// `PageTables`, bytes.
    page_tables: u64,
    /// `TCP: ... mem N` of `/proc/net/sockstat`, in bytes: pages held by socket buffers.
    tcp_buffers: u64,
    /// Each slab cache's bytes in use (objects times their size), by name.
    caches: HashMap<String, u64>,
}

/// What grew between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    /// Slab bytes.
    pub slab: i64,
    /// Kernel stacks, bytes.
    pub kernel_stack: i64,
    /// Page tables, bytes.
    pub page_tables: i64,
    /// TCP socket buffers, bytes.
    pub tcp_buffers: i64,
    /// All four together.
    pub total: i64,
    /// The slab caches that grew most, largest first: (name, bytes).
    pub caches: Vec<(String, i64)>,
}

/// The caches listed in a [`Growth`].
const CACHES_LISTED: usize = 8;

impl Snapshot {
    /// Read the kernel's memory now; what cannot be read counts as 0.
    pub fn now() -> Snapshot {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let meminfo = read("/proc/meminfo");
        let kib = |key: &str| meminfo_kib(&meminfo, key) * 1024;
        Snapshot {
            slab: kib("Slab:"),
            kernel_stack: kib("KernelStack:"),
            page_tables: kib("PageTables:"),
            tcp_buffers: sockstat_tcp_pages(&read("/proc/net/sockstat")) * page_size(),
            caches: slab_caches(&read("/proc/slabinfo")),
        }
    }

    /// What grew from `self` to `later`.
    pub fn growth(&self, later: &Snapshot) -> Growth {
        let delta = |a: u64, b: u64| b as i64 - a as i64;
        let mut caches: Vec<(String, i64)> = later
            .caches
            .iter()
            .map(|(name, &bytes)| (name.clone(), delta(self.caches.get(name).copied().unwrap_or(0), bytes)))
            .filter(|(_, grew)| *grew > 0)
            .collect();
        caches.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        caches.truncate(CACHES_LISTED);
        let (slab, kernel_stack) =
            (delta(self.slab, later.slab), delta(self.kernel_stack, later.kernel_stack));
        let (page_tables, tcp_buffers) =
            (delta(self.page_tables, later.page_tables), delta(self.tcp_buffers, later.tcp_buffers));
        Growth {
            slab,
            kernel_stack,
            page_tables,
            tcp_buffers,
            total: slab + kernel_stack + page_tables + tcp_buffers,
            caches,
        }
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes (0 if unknown): what the kernel could give
/// without swapping.
pub fn mem_available() -> u64 {
    meminfo_kib(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default(), "MemAvailable:") * 1024
}

/// `KEY:   123 kB` of `/proc/meminfo`, in KiB (0 if absent).
fn meminfo_kib(meminfo: &str, key: &str) -> u64 {
    let line = meminfo.lines().find(|l| l.starts_with(key));
    line.and_then(|l| l[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// The `mem` of the `TCP:` line of `/proc/net/sockstat`, in pages (0 if absent).
fn sockstat_tcp_pages(sockstat: &str) -> u64 {
    let Some(line) = sockstat.lines().find(|l| l.starts_with("TCP:")) else { return 0 };
    let fields: Vec<&str> = line.split_whitespace().collect();
    let mem = fields.iter().position(|f| *f == "mem").and_then(|i| fields.get(i + 1));
    mem.and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Each cache of `/proc/slabinfo` (version 2.1): `name active_objs num_objs objsize ...`;
/// bytes in use = active objects times their size.
fn slab_caches(slabinfo: &str) -> HashMap<String, u64> {
    slabinfo
        .lines()
        .filter(|l| !l.starts_with("slabinfo") && !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?;
            let active: u64 = fields.next()?.parse().ok()?;
            let size: u64 = fields.nth(1)?.parse().ok()?;
            Some((name.to_string(), active * size))
        })
        .collect()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts_are_read() {
        let meminfo = "MemTotal:  100 kB\nSlab:   220804 kB\nKernelStack:  2160 kB\n";
        assert_eq!(meminfo_kib(meminfo, "Slab:"), 220_804);
        assert_eq!(meminfo_kib(meminfo, "PageTables:"), 0);
        let sockstat =
            "sockets: used 90\nTCP: inuse 2 orphan 0 tw 1537 alloc 2 mem 361\nUDP: inuse 1 mem 2\n";
        assert_eq!(sockstat_tcp_pages(sockstat), 361);
        let slabinfo = "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> ...\n\
                        TCP      19954  20000   2368   13    8 : tunables 0 0 0 : slabdata 1 1 0\n\
                        filp       100    128    192   21    1 : tunables 0 0 0 : slabdata 1 1 0\n";
        let caches = slab_caches(slabinfo);
        assert_eq!(caches.get("TCP"), Some(&(19_954 * 2368)));
        assert_eq!(caches.len(), 2);
    }

    #[test]
    fn growth_lists_the_caches_that_grew_most() {
        let cache = |pairs: &[(&str, u64)]| pairs.iter().map(|(n, b)| (n.to_string(), *b)).collect();
        let before = Snapshot {
            slab: 1000,
            caches: cache(&[("TCP", 100), ("filp", 50), ("dentry", 10)]),
            ..Snapshot::default()
        };
        let after = Snapshot {
            slab: 5000,
            tcp_buffers: 4096,
            caches: cache(&[("TCP", 2000), ("filp", 40), ("dentry", 300), ("new", 7)]),
            ..Snapshot::default()
        };
        let growth = before.growth(&after);
        assert_eq!((growth.slab, growth.total), (4000, 8096));
        let names: Vec<&str> = growth.caches.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["TCP", "dentry", "new"], "shrunk caches are left out");
    }
}
