//! The Markdown table `ladder compare` prints, with what was measured, where and how.

use std::fmt::Write;
use std::process::Command;

use crate::Options;
use crate::measure::{Cell, Figure, Measured, Pinning, Rung};

/// The whole report: where and when, the table, and how to read it.
pub fn markdown(
    rungs: &[Rung],
    baseline: usize,
    options: &Options,
    measured: &Measured,
    pinning: &Pinning,
    command: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Measured {} on {}; {}.", now(), machine(), pinning.describe());
    let (before, after) = &measured.load;
    let _ = writeln!(out, "Load average (1 minute) {before} before the first run, {after} after the last.");
    let _ = writeln!(out, "Command: `cargo run --release --example ladder -- {command}`\n");
    let loads: Vec<String> = options
        .connections
        .iter()
        .map(|&n| if n == 1 { "1 connection".to_string() } else { format!("{n} connections") })
        .collect();
    let _ = writeln!(
        out,
        "| rung | {} | memory per idle connection | system calls per message |",
        loads.join(" | ")
    );
    let _ = writeln!(out, "|---|{}", "---|".repeat(loads.len() + 2));
    for (i, rung) in rungs.iter().enumerate() {
        let mut cells: Vec<String> =
            measured.throughput.iter().map(|row| throughput(&row[i], &row[baseline])).collect();
        cells.push(figure(&measured.memory[i], |bytes| human_bytes(*bytes)));
        cells.push(figure(&measured.syscalls[i], syscalls));
        let _ = writeln!(out, "| {} | {} |", rung.title, cells.join(" | "));
    }
    let baseline = rungs[baseline].title;
    let _ = write!(
        out,
        "\nThroughput: 128-byte messages echoed per second, closed loop (each connection sends \
         its next message when the echo is back), the median of {rounds} interleaved round(s) \
         of {d} s after {w} s of warm-up; CPU: the rung's, of one core, and per message; ×: the \
         median over rounds of msgs/s divided by {baseline}'s in the same round; \"load-bound\": the load generator used its whole CPU, \
         so the rung may be faster than shown. Memory: growth of the rung's VmRSS while \
         {idle} idle connections are held (each answered a 1-byte ping), divided by {idle}. \
         System calls: `strace -c -f` on the rung, one connection sending {rate} messages a \
         second for {strace_s} s, less a start and stop without load, divided by the messages.\n",
        rate = crate::syscalls::RATE,
        strace_s = options.duration + options.warmup,
        rounds = options.rounds,
        d = options.duration,
        w = options.warmup,
        idle = options.idle,
    );
    out
}

/// One throughput cell: the median round, its CPU, and the median ratio to the baseline.
fn throughput(rounds: &[Figure<Cell>], baseline: &[Figure<Cell>]) -> String {
    // A round without a value (one at a time, or failed) speaks for the cell.
    if let Some(missing) = rounds.iter().find(|round| as_value(round).is_none()) {
        return figure(missing, |_| String::new());
    }
    let values: Vec<&Cell> = rounds.iter().filter_map(as_value).collect();
    if values.is_empty() {
        return "no round".into();
    }
    let mut sorted = values.clone();
    sorted.sort_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
    let median = sorted[sorted.len() / 2];
    let mut text = human_rate(median.msgs_per_s);
    if let Some(cpu) = median.server_cpu {
        let per_message = cpu / median.msgs_per_s * 1e6;
        let _ = write!(text, " · CPU {:.0}%, {per_message:.1} µs/msg", cpu * 100.0);
    }
    let mut ratios: Vec<f64> = values
        .iter()
        .zip(baseline.iter().map(as_value))
        .filter_map(|(cell, base)| Some(cell.msgs_per_s / base?.msgs_per_s))
        .filter(|ratio| ratio.is_finite())
        .collect();
    ratios.sort_by(f64::total_cmp);
    if let Some(ratio) = ratios.get(ratios.len() / 2) {
        let _ = write!(text, " · {ratio:.2}×");
    }
    if values.iter().filter(|cell| cell.client_bound).count() * 2 > values.len() {
        text.push_str(" · load-bound");
    }
    text
}

fn as_value<T>(figure: &Figure<T>) -> Option<&T> {
    match figure {
        Figure::Value(value) => Some(value),
        _ => None,
    }
}

/// A figure as a cell: the value shown by `show`, or why there is none.
fn figure<T>(figure: &Figure<T>, show: impl Fn(&T) -> String) -> String {
    match figure {
        Figure::Value(value) => show(value),
        Figure::OneAtATime => "— (one at a time)".into(),
        Figure::Failed(why) => format!("failed: {}", why.replace('|', "/")),
        Figure::Unavailable(why) => format!("n/a: {why}"),
    }
}

/// `4.00: recvfrom 2.00, sendto 1.00, epoll_wait 1.00`: the total, then each call that
/// comes at least once in twenty messages.
fn syscalls(count: &crate::syscalls::Count) -> String {
    let parts: Vec<String> =
        count.by_name.iter().filter(|(_, n)| *n >= 0.05).map(|(name, n)| format!("{name} {n:.2}")).collect();
    format!("{:.2}: {}", count.per_message, parts.join(", "))
}

fn human_rate(per_second: f64) -> String {
    if per_second >= 1000.0 { format!("{:.1}k", per_second / 1000.0) } else { format!("{per_second:.0}") }
}

fn human_bytes(bytes: f64) -> String {
    if bytes >= 1024.0 { format!("{:.1} KiB", bytes / 1024.0) } else { format!("{bytes:.0} B") }
}

/// The date and time, as `date -u` tells it.
fn now() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
    out.ok().map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string()).unwrap_or_default()
}

/// `Linux 6.18.44, 2 CPUs (model), 24 GiB`: what the figures depend on.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease");
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo.lines().find_map(|line| line.strip_prefix("model name")?.split(':').nth(1));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = read("/proc/meminfo");
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:")?.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    format!(
        "Linux {}, {cpus} CPUs ({}), {} GiB",
        kernel.trim(),
        model.unwrap_or("unknown CPU").trim(),
        (mem_kib + (1 << 19)) >> 20
    )
}
