//! System calls per message, counted by `strace -c -f`: a run of the rung with light load,
//! less a run that only starts and stops, divided by the messages echoed.
//!
//! Why strace and not a counter in `/proc`: `/proc/PID/io` counts `read`-like and
//! `write`-like calls (`syscr`, `syscw`) that go through the file layer only, and the
//! socket calls the rungs make (`recvfrom`, `sendto`, `io_uring_enter`) do not. strace
//! stops the rung at every call, so the rung runs far slower; the count of calls per
//! message does not depend on speed at this load: every message arrives alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::measure::{Figure, Paths, Pinning, Rung, Running, bench};

/// The light load: one connection, messages at this rate (for as long as a throughput cell).
pub const RATE: u32 = 500;

/// What the calls came to.
pub struct Count {
    /// All calls, per message.
    pub per_message: f64,
    /// Each call, per message, most frequent first.
    pub by_name: Vec<(String, f64)>,
}

/// The rung's system calls per echoed message, or why they cannot be counted here.
pub fn per_message(paths: &Paths, pinning: &Pinning, rung: &Rung, seconds: f64) -> Figure<Count> {
    let present = Command::new("strace").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !present.is_ok_and(|status| status.success()) {
        return Figure::Unavailable("strace is not installed".into());
    }
    let counted = traced(paths, pinning, rung, None).and_then(|(idle, _)| {
        let (loaded, messages) = traced(paths, pinning, rung, Some(seconds))?;
        Ok(difference(&loaded, &idle, messages))
    });
    counted.map_or_else(Figure::Failed, Figure::Value)
}

/// Calls under load less calls without, per message.
fn difference(loaded: &BTreeMap<String, u64>, idle: &BTreeMap<String, u64>, messages: u64) -> Count {
    let mut by_name: Vec<(String, f64)> = loaded
        .iter()
        .map(|(name, &calls)| (name.clone(), calls.saturating_sub(idle.get(name).copied().unwrap_or(0))))
        .filter(|&(_, calls)| calls > 0)
        .map(|(name, calls)| (name, calls as f64 / messages as f64))
        .collect();
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    Count { per_message: by_name.iter().map(|(_, n)| n).sum(), by_name }
}

/// Run the rung under `strace -c -f`, with the light load for `load` seconds or none; stop it
/// with SIGTERM (so that strace writes its summary). Returns the calls by name, and the
/// messages echoed (each connection's ping included).
fn traced(
    paths: &Paths,
    pinning: &Pinning,
    rung: &Rung,
    load: Option<f64>,
) -> Result<(BTreeMap<String, u64>, u64), String> {
    let summary =
        std::env::temp_dir().join(format!("ladder-strace-{}-{}.txt", std::process::id(), rung.example));
    let mut command = pinning.command(0, Path::new("strace"));
    command.args(["-f", "-c", "-o"]).arg(&summary).arg("--").arg(paths.examples.join(rung.example));
    let mut strace = Running::start(command)?;
    let mut messages = 0;
    if let Some(seconds) = load {
        let (rate, seconds) = (RATE.to_string(), seconds.to_string());
        let args = ["-c", "1", "--rate", &rate, "--duration", &seconds, "--warmup", "0"];
        let json = bench(paths, pinning, strace.addr, &args, Duration::from_secs(60), || {})?;
        messages = json["total_msgs"].as_u64().unwrap_or(0) + 1;
    }
    for pid in children(strace.pid()) {
        // SAFETY: a process strace started for us; we only ask it to end.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let exited = strace.exited_within(Duration::from_secs(10));
    let text = std::fs::read_to_string(&summary).unwrap_or_default();
    let _ = std::fs::remove_file(&summary);
    if !exited || text.is_empty() {
        return Err("strace left no summary".into());
    }
    Ok((parse(&text), messages.max(1)))
}

/// The processes `pid` started (its threads' children).
fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|dir| dir.flatten().map(|e| e.path()));
    let lists =
        tasks.into_iter().flatten().map(|task: PathBuf| std::fs::read_to_string(task.join("children")));
    lists
        .flatten()
        .flat_map(|list| list.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<_>>())
        .collect()
}

/// `strace -c` rows: `% time  seconds  usecs/call  calls  [errors]  syscall`.
fn parse(summary: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in summary.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(count)) = (fields.last(), fields.get(3)) else { continue };
        if let (true, Ok(count)) = (*name != "total" && fields.len() >= 5, count.parse::<u64>()) {
            calls.insert(name.to_string(), count);
        }
    }
    calls
}
