//! `--mode idle`: a crowd of connections held open, for what a connection costs and how
//! many a machine holds; with `--active N`, N more echo at `--rate` beside the idle crowd,
//! and their latency says whether the crowd slows the server down.
//!
//! The run, in order:
//! 1. one line on what limits the crowd ([`Ceiling`]) and, with `--server-pid`, the server's
//!    memory and the kernel's before a connection opens;
//! 2. the idle connections, opened in ten slices, each slice's connections per second
//!    reported (a server whose accept slows as connections pile up shows it here);
//! 3. after a settling second, the memory again: the server's growth divided by the
//!    connections is its user-space cost per idle connection; the kernel's growth beside it;
//! 4. with `--active N`, the echo load (`--rate`, `--size`, `--duration`) on N more
//!    connections while the crowd is held, with its latency report; without, the crowd is
//!    held for `--duration`;
//! 5. every idle connection is checked: the server must not have closed one.

use std::fmt::Write as _;
use std::io;
use std::thread;
use std::time::Duration;

use serde::Serialize;

use crate::ceiling::Ceiling;
use crate::human::{bytes, count};
use crate::kmem::{self, Growth};
use crate::progress::Progress;
use crate::report;
use crate::run::{self, EchoReport, IdleReport, IdleSet, Load};
use crate::source;
use crate::sys;
use crate::target::Target;

/// The idle connections are opened in this many slices, each timed.
const SLICES: usize = 10;

/// How long the server is left to settle after the last connection, before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// What a crowd run saw.
#[derive(Debug, Clone, Serialize)]
pub struct CrowdReport {
    /// The idle connections: opened, held, dropped (the plain `--mode idle` report).
    #[serde(flatten)]
    pub idle: IdleReport,
    /// What limits the number of connections here.
    pub ceiling: Ceiling,
    /// The idle connections opened per second, over the whole connect phase.
    pub connects_per_s: f64,
    /// The same, slice by slice (each a tenth of the connections, in order).
    pub slices_per_s: Vec<f64>,
    /// With `--source`: each source address and the connections it opened.
    pub sources: Vec<(String, u64)>,
    /// With `--server-pid`: the server's memory before and while the crowd was held.
    pub server: Option<ServerMemory>,
    /// The kernel's memory growth over the same moments (the whole machine's).
    pub kernel: KernelMemory,
    /// With `--active N`: the echo load beside the crowd.
    pub active: Option<EchoReport>,
}

/// The server's resident memory before the crowd and while holding it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMemory {
    /// The server's PID.
    pub pid: u32,
    /// VmRSS before the first connection, bytes.
    pub rss_before: u64,
    /// VmRSS with the idle crowd held, bytes.
    pub rss_held: u64,
    /// `(rss_held - rss_before) / held`: user-space memory per idle connection.
    pub bytes_per_connection: f64,
}

/// The kernel's memory growth while the crowd opened.
#[derive(Debug, Clone, Serialize)]
pub struct KernelMemory {
    /// What grew (slab, kernel stacks, page tables, socket buffers; the largest caches).
    pub growth: Growth,
    /// `growth.total / held`: kernel memory per idle connection, both ends on loopback.
    pub bytes_per_connection: f64,
}

impl CrowdReport {
    /// Every idle connection held to the end, and the active load (if any) clean.
    pub fn is_clean(&self) -> bool {
        self.idle.is_clean() && self.active.as_ref().is_none_or(EchoReport::is_clean)
    }

    /// One line on what went wrong.
    pub fn problems(&self) -> String {
        let mut problems = Vec::new();
        if !self.idle.is_clean() {
            problems.push(report::idle_problems(&self.idle));
        }
        if let Some(active) = self.active.as_ref().filter(|a| !a.is_clean()) {
            problems.push(format!("active: {}", report::echo_problems(active)));
        }
        problems.join("; ")
    }
}

/// Open `connections` to `target` (`active` of them echoing `load`, the rest idle), hold
/// them, and report. `server_pid` is whose memory to read.
pub fn run(
    target: &Target,
    connections: usize,
    active: usize,
    load: &Load,
    server_pid: Option<u32>,
    progress: &Progress,
) -> io::Result<CrowdReport> {
    let idle_count = connections - active;
    let ceiling = Ceiling::now(target, connections);
    if ceiling.too_low() {
        progress.warn(&format!("warning: {ceiling}")); // at once, not only in the report
    }
    let (server_before, kernel_before) = (server_pid.and_then(sys::process_memory), kmem::Snapshot::now());
    let Opened { sets, slices_per_s, stopped } = open_in_slices(target, idle_count, load, progress);
    progress.finish();
    if let Some(why) = &stopped {
        progress.warn(&format!("stopped opening connections: {why}"));
        if sets.is_empty() {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, why.clone()));
        }
    }
    thread::sleep(SETTLE);
    let held: usize = sets.iter().map(IdleSet::held).sum();
    let kernel_growth = kernel_before.growth(&kmem::Snapshot::now());
    let server = server_pid.zip(server_before).and_then(|(pid, before)| {
        let rss_held = sys::process_memory(pid)?.rss;
        let grew = rss_held.saturating_sub(before.rss) as f64;
        Some(ServerMemory {
            pid,
            rss_before: before.rss,
            rss_held,
            bytes_per_connection: grew / held.max(1) as f64,
        })
    });
    let kernel = KernelMemory {
        bytes_per_connection: kernel_growth.total as f64 / held.max(1) as f64,
        growth: kernel_growth,
    };
    let active_report = match active {
        0 => None,
        n => {
            progress.warn(&format!(
                "holding {held} idle connections; {n} more echo at {} messages/s",
                count(load.rate.unwrap_or(0.0))
            ));
            Some(run::run_echo(target, &Load { connections: n, ..load.clone() }, server_pid, progress)?)
        }
    };
    if active_report.is_none() {
        progress.warn(&format!("holding {held} connections for {:.1}s", load.duration.as_secs_f64()));
    }
    let idle = match &active_report {
        Some(_) => IdleReport {
            duration_s: (load.warmup + load.duration).as_secs_f64(), // held while the others echoed
            ..hold_all(sets, Duration::ZERO, idle_count)?
        },
        None => hold_all(sets, load.duration, idle_count)?,
    };
    let idle = IdleReport {
        failed: idle.requested - idle.connected, // a slice never tried counts as failed too
        first_error: idle.first_error.or(stopped),
        ..idle
    };
    let connect_s = idle.connect_s;
    Ok(CrowdReport {
        connects_per_s: idle.connected as f64 / connect_s.max(1e-9),
        idle,
        ceiling,
        slices_per_s,
        sources: source::usage().into_iter().map(|(addr, n)| (addr.to_string(), n)).collect(),
        server,
        kernel,
        active: active_report,
    })
}

/// Open `count` idle connections in [`SLICES`] slices; each slice's connections per second.
/// A slice in which a connection failed ends the phase: the server (or this machine) has
/// stopped taking more, and what is held so far is the result; the first error says why.
fn open_in_slices(target: &Target, count: usize, load: &Load, progress: &Progress) -> Opened {
    let mut opened = Opened { sets: Vec::with_capacity(SLICES), slices_per_s: Vec::new(), stopped: None };
    for slice in 0..SLICES {
        let n = count * (slice + 1) / SLICES - count * slice / SLICES;
        if n == 0 {
            continue;
        }
        match run::open_idle(target, n, load.framing, load.proxy, load.connect_timeout, progress) {
            Ok(set) => {
                opened.slices_per_s.push(set.opened() as f64 / set.connect_time().as_secs_f64().max(1e-9));
                let failed = set.failed() > 0;
                opened.sets.push(set);
                if failed {
                    opened.stopped = Some(format!("connections failed in slice {} of {SLICES}", slice + 1));
                    break;
                }
            }
            Err(e) => {
                opened.stopped = Some(e.to_string());
                break;
            }
        }
    }
    opened
}

/// What the connect phase opened.
struct Opened {
    /// One set per slice that opened at least one connection.
    sets: Vec<IdleSet>,
    /// Each slice's connections per second.
    slices_per_s: Vec<f64>,
    /// Why opening stopped before `count`, if it did.
    stopped: Option<String>,
}

/// Hold the slices for `duration` (at least one look at each), and add up their reports.
fn hold_all(sets: Vec<IdleSet>, duration: Duration, requested: usize) -> io::Result<IdleReport> {
    let mut total: Option<IdleReport> = None;
    for (i, set) in sets.into_iter().enumerate() {
        // Closures during the first slice's hold wait in the others' epoll ready lists.
        let report = set.hold(if i == 0 { duration } else { Duration::ZERO })?;
        total = Some(match total {
            None => report,
            Some(t) => IdleReport {
                connected: t.connected + report.connected,
                failed: t.failed + report.failed,
                dropped: t.dropped + report.dropped,
                held: t.held + report.held,
                connect_s: t.connect_s + report.connect_s,
                first_error: t.first_error.or(report.first_error),
                ..t
            },
        });
    }
    let total = total.ok_or_else(|| io::Error::other("not one idle connection opened"))?;
    Ok(IdleReport { requested, ..total })
}

/// The report, for people.
pub fn text(r: &CrowdReport) -> String {
    let mut s = report::idle_text(&r.idle);
    let slices: Vec<String> = r.slices_per_s.iter().map(|rate| count(*rate)).collect();
    let _ = writeln!(s, "opening: {:.0} connections/s (by tenth: {} /s)", r.connects_per_s, slices.join(" "));
    if let (Some(min), Some(max)) = (r.sources.iter().map(|s| s.1).min(), r.sources.iter().map(|s| s.1).max())
    {
        let range = source::installed().map_or_else(String::new, |s| s.to_string());
        let _ = writeln!(s, "sources: {range}, {min}-{max} connections each");
    }
    let _ = writeln!(s, "{}", r.ceiling);
    if let Some(m) = &r.server {
        let _ = writeln!(
            s,
            "server pid {}: RSS {} before, {} holding {} idle connections: {:.1} B per connection",
            m.pid,
            bytes(m.rss_before as f64),
            bytes(m.rss_held as f64),
            r.idle.held,
            m.bytes_per_connection
        );
    }
    let k = &r.kernel;
    let caches: Vec<String> =
        k.growth.caches.iter().map(|(name, grew)| format!("{name} {}", bytes(*grew as f64))).collect();
    let _ = writeln!(
        s,
        "kernel (whole machine, both ends): {} ({} per connection; slab {}, kernel stacks {}, page tables {}, \
         socket buffers {}); caches: {}",
        signed(k.growth.total as f64),
        signed(k.bytes_per_connection),
        signed(k.growth.slab as f64),
        signed(k.growth.kernel_stack as f64),
        signed(k.growth.page_tables as f64),
        signed(k.growth.tcp_buffers as f64),
        caches.join(", ")
    );
    if let Some(active) = &r.active {
        s.push_str("active: ");
        s.push_str(&report::echo_text(active));
    }
    s
}

/// A growth in bytes, with its sign: "+1.5 MiB", "-12 KiB".
fn signed(n: f64) -> String {
    if n < 0.0 { format!("-{}", bytes(-n)) } else { format!("+{}", bytes(n)) }
}
