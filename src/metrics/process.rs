//! The standard `process_*` metrics every Prometheus client exports, read from `/proc` at
//! each scrape (as the Go and Python clients do): CPU time, resident memory, descriptors
//! open and allowed, start time.

use std::fs;
use std::io;
use std::sync::OnceLock;

/// The process at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Descriptors open now.
    pub open_fds: u64,
    /// The soft limit on descriptors (RLIMIT_NOFILE).
    pub max_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Read this process's figures (the start time once: it never changes).
pub fn sample() -> io::Result<ProcessSample> {
    static START_TIME: OnceLock<f64> = OnceLock::new();
    let fields = StatFields::parse(&fs::read_to_string("/proc/self/stat")?)?;
    let ticks = clock_ticks_per_second();
    let start_time_seconds = match START_TIME.get() {
        Some(&start) => start,
        None => {
            let boot_time = boot_time(&fs::read_to_string("/proc/stat")?)?;
            *START_TIME.get_or_init(|| boot_time as f64 + fields.start_ticks as f64 / ticks)
        }
    };
    Ok(ProcessSample {
        cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
        resident_bytes: fields.rss_pages.saturating_mul(page_size()),
        open_fds: fs::read_dir("/proc/self/fd")?.count() as u64,
        max_fds: max_fds()?,
        start_time_seconds,
    })
}

/// The fields of `/proc/self/stat` used here (proc(5) numbers them from 1).
#[derive(Debug, PartialEq, Eq)]
struct StatFields {
    /// (14) user-mode CPU time, in clock ticks.
    utime: u64,
    /// (15) kernel-mode CPU time, in clock ticks.
    stime: u64,
    /// (22) start time after boot, in clock ticks.
    start_ticks: u64,
    /// (24) resident set size, in pages.
    rss_pages: u64,
}

impl StatFields {
    fn parse(stat: &str) -> io::Result<StatFields> {
        // Field 2, the command name, is in parentheses and may hold spaces and ')': the
        // fields after it start after the last ')'. There, field 3 is at index 0.
        let after_name =
            stat.rfind(')').map(|i| &stat[i + 1..]).ok_or_else(|| malformed("/proc/self/stat"))?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| -> io::Result<u64> {
            fields.get(n - 3).and_then(|f| f.parse().ok()).ok_or_else(|| malformed("/proc/self/stat"))
        };
        Ok(StatFields {
            utime: field(14)?,
            stime: field(15)?,
            start_ticks: field(22)?,
            rss_pages: field(24)?,
        })
    }
}

/// The `btime` line of `/proc/stat`: when the system booted, in seconds since the epoch.
fn boot_time(proc_stat: &str) -> io::Result<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| malformed("/proc/stat"))
}

fn malformed(file: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{file}: unexpected format"))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 } // Linux's USER_HZ everywhere
}

fn page_size() -> u64 {
    // SAFETY: as above.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

fn max_fds() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own, and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a ')' in it, as a process may name itself.
        let stat = "4242 (echo loop) x) S 1 4242 4242 0 -1 4194560 300 0 0 0 12 34 0 0 20 0 3 0 5678 \
                    10000000 789 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let fields = StatFields::parse(stat).unwrap();
        assert_eq!(fields, StatFields { utime: 12, stime: 34, start_ticks: 5678, rss_pages: 789 });
        assert!(StatFields::parse("4242 (short) S 1 2").is_err());
        assert!(StatFields::parse("no parenthesis").is_err());
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        assert_eq!(boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n").unwrap(), 1_700_000_000);
        assert!(boot_time("cpu 1\n").is_err());
    }

    /// The real figures of this test process are plausible.
    #[test]
    fn this_process_has_cpu_memory_and_descriptors() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let sample = sample().unwrap();
        assert!(sample.resident_bytes > 1 << 20, "{sample:?}");
        assert!(sample.open_fds >= 3 && sample.open_fds <= sample.max_fds, "{sample:?}");
        assert!(sample.start_time_seconds <= now + 1.0 && sample.start_time_seconds > now - 86_400.0 * 365.0);
        assert!(sample.cpu_seconds >= 0.0);
    }
}
