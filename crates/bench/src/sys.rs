//! What the load generator asks of the operating system: descriptor limits, CPU time,
//! CPU pinning, another process's memory and CPU from `/proc`, and signals to the servers
//! `--compare` starts. Linux only, like the rest of the benchmark (it reads `/proc`); each
//! call is small and says why it exists.

use std::io;
use std::time::Duration;

/// Raise this process's soft RLIMIT_NOFILE to its hard limit, and return the new soft
/// limit. Ten thousand connections need ten thousand descriptors, and the usual soft limit
/// is 1024. Child processes (the servers `--compare` starts) inherit the raised limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Descriptors kept for everything but connections: stdio, epoll, wakers, files.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// Raise the descriptor limit, and refuse at once if `connections` cannot fit under it.
pub fn require_descriptors(connections: usize) -> io::Result<()> {
    let limit = raise_nofile_limit()?;
    let needed = connections as u64 + RESERVED_DESCRIPTORS;
    if needed > limit {
        return Err(io::Error::other(format!(
            "--connections {connections} needs about {needed} file descriptors, but the limit is {limit} \
             (raise the hard limit: ulimit -Hn)"
        )));
    }
    Ok(())
}

/// What to blame when a connect fails for want of a local resource, and what to change:
/// the loopback port range (`EADDRNOTAVAIL`), or the descriptor limits (`EMFILE`,
/// `ENFILE`). `None` for any other error.
pub fn connect_bottleneck(e: &io::Error) -> Option<String> {
    match e.raw_os_error()? {
        libc::EADDRNOTAVAIL => {
            let range = local_port_range().map_or_else(
                || "unknown".to_string(),
                |(low, high)| format!("{low}-{high}, {} ports", high.saturating_sub(low) + 1),
            );
            Some(format!(
                "the ephemeral port range is the bottleneck: every local port toward this address is \
                 in use or in TIME_WAIT (/proc/sys/net/ipv4/ip_local_port_range: {range}); widen it \
                 (sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"), or open fewer connections \
                 (--connections, or a lower --rate in --mode churn)"
            ))
        }
        libc::EMFILE => Some(format!(
            "the descriptor limit is the bottleneck: this process may open {} files (RLIMIT_NOFILE); \
             raise it (ulimit -n, and the hard limit ulimit -Hn or LimitNOFILE=) or use fewer --connections",
            nofile_limit().map_or_else(|| "?".to_string(), |n| n.to_string())
        )),
        libc::ENFILE => Some(
            "the system-wide file table is full: raise fs.file-max (sysctl -w fs.file-max=...) or use \
             fewer --connections"
                .to_string(),
        ),
        libc::ENOMEM | libc::ENOBUFS => Some(
            "the kernel is out of memory for sockets: free memory (MemAvailable in /proc/meminfo), or \
             raise net.ipv4.tcp_mem if the sockets' buffers hit it, or use fewer --connections"
                .to_string(),
        ),
        _ => None,
    }
}

/// `/proc/sys/net/ipv4/ip_local_port_range`: the ports `connect` picks from.
pub fn local_port_range() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(|p| p.parse::<u32>().ok());
    Some((ports.next()??, ports.next()??))
}

/// The soft RLIMIT_NOFILE now.
pub fn nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// Descriptors process `pid` has open, counted in `/proc/PID/fd`; `None` if it is gone or
/// not ours to look at.
pub fn open_descriptors(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.count() as u64)
}

/// User plus system CPU time of this whole process (every thread) so far.
pub fn own_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32).saturating_mul(1000));
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// One line of `/proc/PID/stat`: the parent, and CPU time in clock ticks: user plus system,
/// of the process and of its children that have exited and been waited for.
struct Stat {
    /// `Z` for a zombie: exited, not yet waited for.
    state: char,
    ppid: u32,
    pgrp: u32,
    own_ticks: u64,
    children_ticks: u64,
    threads: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it. ppid
    // is field 4 and utime, stime, cutime, cstime fields 14 to 17: the 2nd and the 12th to
    // 15th after the ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: u32::try_from(number(1)?).ok()?,
        pgrp: u32::try_from(number(2)?).ok()?,
        own_ticks: number(11)? + number(12)?,
        children_ticks: number(13)? + number(14)?,
        threads: number(17)?,
    })
}

/// The CPU time of process `pid` whose stat is `stat`, without its children. A process of
/// one thread is read to the nanosecond (the first field of `/proc/PID/schedstat`): the
/// kernel rounds `/proc/PID/stat` down to whole clock ticks (10 ms) per process, so a
/// hundred forked children that each ran 5 ms would add up to nothing. A process of
/// several threads (usually a long-lived server) is read from its ticks.
fn own_time(pid: u32, stat: &Stat) -> Option<Duration> {
    let precise = || -> Option<Duration> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
        Some(Duration::from_nanos(text.split_whitespace().next()?.parse().ok()?))
    };
    match stat.threads {
        1 => precise().or_else(|| ticks_to_duration(stat.own_ticks)),
        _ => ticks_to_duration(stat.own_ticks),
    }
}

fn ticks_to_duration(ticks: u64) -> Option<Duration> {
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_sec > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// `pid` and every process descended from it, `pid` first; empty once `pid` is gone. One
/// pass over `/proc` finds each process's parent (the kernel's per-task `children` lists
/// are not always built in).
pub fn process_tree(pid: u32) -> Vec<u32> {
    if read_stat(pid).is_none() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![pid] };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, read_stat(p)?.ppid)))
        .collect();
    let mut tree = vec![pid];
    let mut i = 0;
    while let Some(&parent) = tree.get(i) {
        tree.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(p, _)| *p));
        i += 1;
    }
    tree
}

/// Whether a process of group `pgid` is still running (zombies, which only wait to be
/// reaped by whoever adopted them, do not count).
pub fn group_is_running(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .any(|stat| stat.pgrp == pgid && stat.state != 'Z')
}

/// CPU time of a server and everything it started: a forking server (socat `fork`, ncat
/// `-k -e`) works in its children, and its own CPU time alone would read as nearly 0. Each
/// live process counts its own time ([`own_time`]) and that of its children already
/// waited for (which the kernel moved into the parent's account when they exited), so a
/// child that ends mid-run is neither lost nor counted twice.
pub fn tree_cpu_time(pid: u32) -> Option<Duration> {
    let tree = process_tree(pid);
    let stats: Vec<(u32, Stat)> = tree.iter().filter_map(|p| Some((*p, read_stat(*p)?))).collect();
    if stats.is_empty() {
        return None;
    }
    let own: Duration = stats.iter().filter_map(|(p, stat)| own_time(*p, stat)).sum();
    Some(own + ticks_to_duration(stats.iter().map(|(_, s)| s.children_ticks).sum())?)
}

/// Resident memory of process `pid` in bytes: `VmRSS` now, and `VmHWM`, its peak so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident now.
    pub rss: u64,
    /// The most that was ever resident (the "high-water mark").
    pub peak: u64,
}

/// Read `/proc/PID/status`; `None` once the process is gone.
pub fn process_memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_memory(&status)
}

/// The memory of a server and everything it started. One process: its VmRSS and VmHWM.
/// Several (a forking server): the sum of their proportional set sizes (`Pss` in
/// `/proc/PID/smaps_rollup`, where a page shared by N processes counts 1/N in each), so
/// that the pages a fork shares with its parent are counted once; the kernel keeps no
/// peak for a group of processes, so `peak` is the larger of that sum now and the first
/// process's own peak (callers sample it to find the most).
pub fn tree_memory(pid: u32) -> Option<Memory> {
    let tree = process_tree(pid);
    let root = process_memory(pid)?;
    if tree.len() <= 1 {
        return Some(root);
    }
    let pss: u64 = tree.iter().filter_map(|p| proportional_set_size(*p)).sum();
    Some(Memory { rss: pss, peak: pss.max(root.peak) })
}

/// `Pss` of `/proc/PID/smaps_rollup`, in bytes.
fn proportional_set_size(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&text, "Pss:").map(|kib| kib * 1024)
}

/// `KEY  123 kB` in a /proc text, as KiB.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

fn parse_memory(status: &str) -> Option<Memory> {
    Some(Memory { rss: kib_field(status, "VmRSS:")? * 1024, peak: kib_field(status, "VmHWM:")? * 1024 })
}

/// Pin the calling thread (and threads it starts later) to one CPU, so the load generator
/// and the server under test do not take turns on the same core.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET and sched_setaffinity only touch our copy.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The number of CPUs the machine has, whether or not this process may run on them.
pub fn configured_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or_else(usable_cpus)
}

/// The number of CPUs this process may run on.
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPU's model name, for reports ("AMD EPYC"); empty when unknown.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let line = info.lines().find(|l| l.starts_with("model name"));
    line.and_then(|l| l.split_once(':')).map_or_else(String::new, |(_, name)| name.trim().to_string())
}

/// `uname -r`, for reports; empty when unknown.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Send SIGTERM to the process group `pgid`: a server's cue to finish and exit, as a
/// service manager would stop it, and the same cue to the children a forking server left
/// serving connections. Only ever called with the group of a child we started in a group
/// of its own and have not reaped.
pub fn terminate_group(pgid: u32) -> io::Result<()> {
    signal_group(pgid, libc::SIGTERM)
}

/// SIGKILL to the process group `pgid` (as [`terminate_group`]), for what ignored SIGTERM.
pub fn kill_group(pgid: u32) -> io::Result<()> {
    signal_group(pgid, libc::SIGKILL)
}

fn signal_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid).map_err(io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a negative PID
    // names a process group.
    if unsafe { libc::kill(-pgid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// glibc and musl have it; the libc crate does not declare it for Linux.
unsafe extern "C" {
    fn pthread_getcpuclockid(thread: libc::pthread_t, clock: *mut libc::clockid_t) -> libc::c_int;
}

/// The CPU-time clock of the calling thread, which another thread may read with
/// [`clock_time`] for as long as this thread lives: that is how the load generator's
/// threads are each measured over exactly the window, from outside.
pub fn thread_cpu_clock() -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: pthread_self is always valid for the calling thread; the call writes the
    // clock id into our variable.
    (unsafe { pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0).then_some(clock)
}

/// The time on `clock` now; `None` if it is no longer valid (its thread has exited).
pub fn clock_time(clock: libc::clockid_t) -> Option<Duration> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes into the timespec we own.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(Duration::new(u64::try_from(now.tv_sec).ok()?, u32::try_from(now.tv_nsec).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_lines_are_parsed_as_kib() {
        let status = "Name:\techoloop\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t1\n";
        assert_eq!(parse_memory(status), Some(Memory { rss: 1024 * 1024, peak: 2048 * 1024 }));
        assert_eq!(parse_memory("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_is_visible_in_proc() {
        let pid = std::process::id();
        let memory = process_memory(pid).expect("own /proc status");
        assert!(memory.rss > 0 && memory.peak >= memory.rss);
        assert!(tree_cpu_time(pid).is_some());
        assert_eq!(process_tree(pid).first(), Some(&pid));
    }

    #[test]
    fn descriptors_are_counted_per_process() {
        use std::os::unix::process::CommandExt;
        use std::process::{Child, Command, Stdio};
        // Two children that start with only 0, 1 and 2 (a descriptor another test thread
        // opened without close-on-exec could otherwise slip into one of them, as it did);
        // the second opens three more before it becomes `sleep`.
        let spawn = |script: &str| -> Child {
            let mut command = Command::new("sh");
            command.args(["-c", script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            // SAFETY: the closure runs in the forked child before exec and calls only
            // close_range(2), which is async-signal-safe and touches no shared state.
            unsafe {
                command.pre_exec(|| {
                    libc::close_range(3, libc::c_uint::MAX, 0);
                    Ok(())
                });
            }
            command.spawn().unwrap()
        };
        let mut children =
            [spawn("exec sleep 10"), spawn("exec 7</dev/null 8</dev/null 9</dev/null; exec sleep 10")];
        let is_sleeping = |c: &Child| {
            std::fs::read_to_string(format!("/proc/{}/comm", c.id())).is_ok_and(|n| n == "sleep\n")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !children.iter().all(is_sleeping) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let counts = children.each_ref().map(|c| open_descriptors(c.id()));
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert_eq!(counts, [Some(3), Some(6)], "0, 1, 2; and 7, 8, 9 besides");
        assert_eq!(open_descriptors(u32::MAX), None);
    }

    #[test]
    fn resource_errors_on_connect_name_the_bottleneck() {
        let ports = connect_bottleneck(&io::Error::from_raw_os_error(libc::EADDRNOTAVAIL)).unwrap();
        assert!(ports.contains("ip_local_port_range") && ports.contains("TIME_WAIT"), "{ports}");
        let files = connect_bottleneck(&io::Error::from_raw_os_error(libc::EMFILE)).unwrap();
        assert!(files.contains("RLIMIT_NOFILE") && files.contains("ulimit -n"), "{files}");
        assert!(
            connect_bottleneck(&io::Error::from_raw_os_error(libc::ENFILE)).unwrap().contains("fs.file-max")
        );
        assert_eq!(connect_bottleneck(&io::Error::from_raw_os_error(libc::ECONNREFUSED)), None);
    }
}
