//! What the user reads: a single run as text or JSON, and `--compare` as one markdown
//! table (scenarios down, servers across) with the CPU table, legend and problems below it.
//! It reads the results; the SVG chart, beside it, reads them too, and neither reads the
//! other.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::human::{bytes, count, micros};
use crate::results::{CompareReport, Outcome, RunResult};
use crate::run::{EchoReport, IdleReport};

/// Where `--json` sends a report: JSON on stdout instead of text (`Some(None)`), JSON to a
/// file besides the text (`Some(Some(path))`), or text only (`None`).
pub type JsonTarget = Option<Option<PathBuf>>;

/// Printed when the load generator was saturated.
pub const CLIENT_BOUND_WARNING: &str = "warning: the load generator used ≥ 95% of its CPU, so the server may be \
     faster than shown (try --threads 2, or --pin with --compare)";

/// Print `text`, or JSON instead of it (`--json`), or both (`--json PATH`).
pub fn emit<T: Serialize>(report: &T, json: &JsonTarget, text: String) -> io::Result<()> {
    match json {
        Some(None) => print_stdout(&format!("{}\n", to_json(report)?)),
        Some(Some(path)) => {
            write_file(path, &to_json(report)?)?;
            print_stdout(&text)
        }
        None => print_stdout(&text),
    }
}

fn to_json<T: Serialize>(report: &T) -> io::Result<String> {
    serde_json::to_string_pretty(report).map_err(io::Error::other)
}

fn print_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn write_file(path: &Path, contents: &str) -> io::Result<()> {
    std::fs::write(path, contents)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}

/// A single echo run, for people.
pub fn echo_text(r: &EchoReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "echo {}: {} connections × {}, pipeline {}, {} thread{}; {:.1}s warm-up, {:.1}s measured",
        r.target,
        r.connections,
        bytes(r.size as f64),
        r.pipeline,
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.warmup_s,
        r.duration_s,
    );
    let _ = writeln!(
        s,
        "throughput  {:.0} msgs/s  {:.1} MiB/s  ({} round trips measured, {} verified in all)",
        r.msgs_per_s, r.mib_per_s, r.msgs, r.total_msgs
    );
    let l = &r.latency;
    let _ = writeln!(
        s,
        "latency     p50 {}  p99 {}  p99.9 {}  max {}",
        micros(l.p50_us),
        micros(l.p99_us),
        micros(l.p999_us),
        micros(l.max_us)
    );
    let _ = writeln!(
        s,
        "errors {}  mismatches {}  load-generator CPU {}%{}",
        r.errors,
        r.mismatches,
        (r.client_cpu * 100.0).floor(), // so "95%" always comes with its ‡
        if r.client_bound { " ‡ (client-bound: the server may be faster than shown)" } else { "" }
    );
    if let Some(e) = &r.first_error {
        let _ = writeln!(s, "first error: {e}");
    }
    s
}

/// An idle run, for people.
pub fn idle_text(r: &IdleReport) -> String {
    let mut s = format!(
        "idle {}: held {} of {} connections for {:.1}s (connected {}, failed {}, dropped by the server {}; \
         connecting took {:.2}s)\n",
        r.target, r.held, r.requested, r.duration_s, r.connected, r.failed, r.dropped, r.connect_s
    );
    if let Some(e) = &r.first_error {
        let _ = writeln!(s, "first error: {e}");
    }
    s
}

/// One line on what went wrong in an echo run.
pub fn echo_problems(r: &EchoReport) -> String {
    let first = r.first_error.as_deref().map(|e| format!(" (first error: {e})")).unwrap_or_default();
    format!("{} connection errors, {} corrupted echoes{first}", r.errors, r.mismatches)
}

/// One line on what went wrong in an idle run.
pub fn idle_problems(r: &IdleReport) -> String {
    let first = r.first_error.as_deref().map(|e| format!(" (first error: {e})")).unwrap_or_default();
    format!(
        "held {} of {} connections: {} failed, {} dropped{first}",
        r.held, r.requested, r.failed, r.dropped
    )
}

/// The side-by-side markdown table, with the CPU table, legend, settings and problems.
pub fn table(report: &CompareReport) -> String {
    let models = report.models();
    let ratio =
        report.ratio.as_ref().filter(|(a, b)| models.contains(&a.as_str()) && models.contains(&b.as_str()));
    let ratio = ratio.map(|(a, b)| (a.as_str(), b.as_str()));
    let mut s = header(&models, ratio);
    for scenario in report.scenarios() {
        let _ = write!(s, "| {} |", scenario.title());
        for &model in &models {
            let _ = write!(s, " {} |", cell(report.find(model, scenario)));
        }
        if let Some((a, b)) = ratio {
            let _ = write!(s, " {} |", ratio_cell(report.find(a, scenario), report.find(b, scenario)));
        }
        s.push('\n');
    }
    s.push_str(&peak_rss_row(report, &models, ratio));
    s.push_str(&legend(report));
    s.push_str(&cpu_table(report, &models));
    s.push_str(&footer(report));
    s
}

/// The header row and the alignment row.
fn header(models: &[&str], ratio: Option<(&str, &str)>) -> String {
    let mut s = String::from("| scenario |");
    for model in models {
        let _ = write!(s, " {model} |");
    }
    if let Some((a, b)) = ratio {
        let _ = write!(s, " {a} vs {b} |");
    }
    let _ = writeln!(s, "\n|---|{}", "---:|".repeat(models.len() + usize::from(ratio.is_some())));
    s
}

/// Each server's peak resident memory over all its runs, and the ratio of the pair.
fn peak_rss_row(report: &CompareReport, models: &[&str], ratio: Option<(&str, &str)>) -> String {
    let mut s = String::from("| server peak RSS |");
    for &model in models {
        let _ = write!(s, " {} |", report.peak_rss(model).map_or("?".into(), |b| bytes(b as f64)));
    }
    if let Some((a, b)) = ratio {
        let cell = match (report.peak_rss(a), report.peak_rss(b)) {
            (Some(x), Some(y)) if x > 0 && y > 0 => memory_ratio(x as f64 / y as f64),
            _ => String::new(),
        };
        let _ = write!(s, " {cell} |");
    }
    s.push('\n');
    s
}

/// Server CPU per message, and server CPU use over the window. It ranks efficiency even
/// where throughput was capped by the load generator (‡): a server at 60% of a core while
/// the client is at 100% had room to spare.
fn cpu_table(report: &CompareReport, models: &[&str]) -> String {
    let echo_scenarios: Vec<_> = report.scenarios().into_iter().filter(|s| s.is_echo()).collect();
    if echo_scenarios.is_empty() {
        return String::new();
    }
    let mut s =
        String::from("\nServer CPU time per message · server CPU use (lower per message is better):\n\n");
    s.push_str(&header(models, None));
    for scenario in echo_scenarios {
        let _ = write!(s, "| {} |", scenario.title());
        for &model in models {
            let _ = write!(s, " {} |", cpu_cell(report.find(model, scenario)));
        }
        s.push('\n');
    }
    s
}

/// One cell of the CPU table.
fn cpu_cell(run: Option<&RunResult>) -> String {
    match run.map(|r| &r.outcome) {
        Some(Outcome::Echo(e)) => match e.server_cpu {
            Some(cpu) if e.msgs_per_s > 0.0 => {
                format!("{} · {:.0}%", micros(cpu * 1e6 / e.msgs_per_s), cpu * 100.0)
            }
            _ => "?".into(),
        },
        Some(_) => "failed".into(),
        None => "—".into(),
    }
}

/// What the cells and marks mean.
fn legend(report: &CompareReport) -> String {
    let mut s = String::from(
        "\nCells: messages/s · p99 round trip (higher / lower is better). Idle row: server RSS growth ÷ \
         connections held. Peak RSS: the most the server was resident in any scenario.\n",
    );
    if report.any_client_bound() {
        s.push_str("‡ the load generator used ≥ 95% of its CPU: that server may be faster than shown.\n");
    }
    s
}

/// How it ran, and what went wrong.
fn footer(report: &CompareReport) -> String {
    let mut s = String::from("\n");
    let m = &report.machine;
    let t = &report.settings;
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), Linux {}. Each cell: a fresh server, {:.1}s warm-up, {:.1}s measured, \
         {} load-generator thread{}; {}.",
        m.cpus,
        if m.cpu_model.is_empty() { "unknown CPU" } else { &m.cpu_model },
        m.kernel,
        t.warmup_s,
        t.duration_s,
        t.threads,
        if t.threads == 1 { "" } else { "s" },
        if t.pinned { "servers pinned to CPU 0, load generator to CPU 1" } else { "not pinned" },
    );
    if t.rounds > 1 {
        s.push_str(&rounds_note(report));
    }
    let problems: Vec<_> = report.runs.iter().filter(|r| !r.is_clean()).collect();
    if !problems.is_empty() {
        s.push_str("\n⚠ Problems:\n");
        for r in problems {
            let _ = writeln!(s, "- {} · {}: {}", r.model, r.scenario.name(), r.problems.join("; "));
        }
    }
    s
}

/// With `--rounds`: how the rounds were run, and the cell whose rounds differed most.
fn rounds_note(report: &CompareReport) -> String {
    let mut s = format!(
        "{} rounds, interleaved (A B C A B C); each cell is its median round.",
        report.settings.rounds
    );
    if let Some((spread, run)) = widest_spread(report) {
        let _ = write!(
            s,
            " Widest spread between rounds: {:.0}% of the median ({} · {}).",
            spread * 100.0,
            run.model,
            run.scenario.name()
        );
    }
    s.push('\n');
    s
}

/// The cell whose rounds differed most: (max − min) ÷ median, and the cell.
fn widest_spread(report: &CompareReport) -> Option<(f64, &RunResult)> {
    let spread = |r: &RunResult| -> Option<f64> {
        let mut values: Vec<f64> = r.rounds.iter().copied().collect::<Option<_>>()?;
        values.sort_by(f64::total_cmp);
        let median = values.get(values.len() / 2).copied().filter(|m| *m > 0.0)?;
        Some((values.last()? - values.first()?) / median)
    };
    report.runs.iter().filter_map(|r| Some((spread(r)?, r))).max_by(|a, b| a.0.total_cmp(&b.0))
}

/// One table cell.
fn cell(run: Option<&RunResult>) -> String {
    let Some(run) = run else { return "—".into() };
    let warn = if run.is_clean() { "" } else { " ⚠" };
    match &run.outcome {
        Outcome::Echo(e) => {
            let bound = if e.client_bound { " ‡" } else { "" };
            format!("{}/s · {}{bound}{warn}", count(e.msgs_per_s), micros(e.latency.p99_us))
        }
        Outcome::Idle(m) => match m.bytes_per_connection {
            Some(b) if m.connections.held == m.connections.requested => format!("{}{warn}", bytes(b)),
            Some(b) => format!("{} (held {}){warn}", bytes(b), m.connections.held),
            None => format!("none held{warn}"),
        },
        Outcome::Failed { .. } => "failed ⚠".into(),
    }
}

/// The first server of the pair against the second: msgs/s ratio, or memory ratio for the
/// idle row.
fn ratio_cell(first: Option<&RunResult>, second: Option<&RunResult>) -> String {
    let (Some(a), Some(b)) = (first, second) else { return String::new() };
    match (&a.outcome, &b.outcome) {
        (Outcome::Echo(x), Outcome::Echo(y)) if y.msgs_per_s > 0.0 => {
            format!("{:.2}×", x.msgs_per_s / y.msgs_per_s)
        }
        (Outcome::Idle(x), Outcome::Idle(y)) => match (x.bytes_per_connection, y.bytes_per_connection) {
            (Some(p), Some(q)) if p > 0.0 && q > 0.0 => memory_ratio(p / q),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

/// The first server's memory over the second's, said the way round that reads best:
/// "167× less memory", "1.20× more memory".
fn memory_ratio(r: f64) -> String {
    match r {
        r if (r - 1.0).abs() < 0.005 => "the same memory".into(),
        r if r < 1.0 => format!("{:.0}× less memory", 1.0 / r),
        r => format!("{r:.2}× more memory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::fixtures::{cell, echo, idle};
    use crate::results::{Machine, Settings};
    use crate::scenario::Scenario;

    fn sample() -> CompareReport {
        CompareReport {
            machine: Machine { cpus: 2, cpu_model: "Test CPU".into(), kernel: "6.1".into() },
            settings: Settings { warmup_s: 0.5, duration_s: 2.0, threads: 1, pinned: true, rounds: 1 },
            runs: vec![
                cell("event-loop", Scenario::Latency, echo(50_000.0, 30.0, false, 0), &[]),
                cell("event-loop", Scenario::Many, echo(200_000.0, 12_000.0, true, 0), &[]),
                cell("event-loop", Scenario::Idle, idle(150.0, 10_000), &[]),
                cell("thread-per-conn", Scenario::Latency, echo(40_000.0, 35.0, false, 0), &[]),
                cell(
                    "thread-per-conn",
                    Scenario::Many,
                    echo(100_000.0, 30_000.0, false, 3),
                    &["3 corrupted"],
                ),
                cell("thread-per-conn", Scenario::Idle, idle(15_000.0, 9_000), &["held 9000 of 10000"]),
                cell("blocking", Scenario::Latency, Outcome::Failed { error: "no".into() }, &["no"]),
            ],
            ratio: Some(("event-loop".into(), "thread-per-conn".into())),
        }
    }

    #[test]
    fn table_lays_out_models_across_and_scenarios_down() {
        let table = table(&sample());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| scenario | event-loop | thread-per-conn | blocking | event-loop vs thread-per-conn |"
        );
        assert_eq!(lines[2], "| 1 conn · 64 B | 50.0k/s · 30.0 µs | 40.0k/s · 35.0 µs | failed ⚠ | 1.25× |");
        assert_eq!(
            lines[3],
            "| 2000 conns · 128 B | 200.0k/s · 12.00 ms ‡ | 100.0k/s · 30.00 ms ⚠ | — | 2.00× |"
        );
        assert_eq!(
            lines[4],
            "| 10000 idle conns: RSS per conn | 150 B | 14.6 KiB (held 9000) ⚠ | — | 100× less memory |"
        );
        assert_eq!(lines[5], "| server peak RSS | 4 MiB | 4 MiB | ? | the same memory |");
        assert!(table.contains("‡ the load generator used ≥ 95%"), "{table}");
        assert!(table.contains("- thread-per-conn · many: 3 corrupted"), "{table}");
        assert!(table.contains("servers pinned to CPU 0"), "{table}");
        assert!(table.contains("| 1 conn · 64 B | 10.0 µs · 50% | 12.5 µs · 50% | failed |"), "{table}");
    }

    #[test]
    fn no_ratio_column_unless_both_of_the_pair_ran() {
        let mut report = sample();
        report.runs.retain(|r| r.model != "thread-per-conn");
        let table = table(&report);
        assert!(table.starts_with("| scenario | event-loop | blocking |\n|---|---:|---:|\n"), "{table}");
        let unpaired = CompareReport { ratio: None, ..sample() };
        assert!(!super::table(&unpaired).contains(" vs "));
    }
}
