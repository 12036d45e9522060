//! What the user reads: a single run as text or JSON, and `--compare` as one markdown
//! table (scenarios down, servers across) with the CPU table, legend and problems below it.
//! It reads the results; the SVG chart, beside it, reads them too, and neither reads the
//! other.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fairness::FairnessReport;
use crate::findmax::{FindMaxReport, Step};
use crate::histogram::Latency;
use crate::human::{bytes, count, micros};
use crate::results::{CompareReport, Outcome, RunResult};
use crate::run::{ChaosReport, ChurnReport, Cpu, DelayKind, EchoReport, IdleReport, UdpReport};
use crate::schedule::RateReport;

/// Where `--json` sends a report: JSON on stdout instead of text (`Some(None)`), JSON to a
/// file besides the text (`Some(Some(path))`), or text only (`None`).
pub type JsonTarget = Option<Option<PathBuf>>;

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

/// "128 B", or "1 B-64 KiB" when sizes vary; with the framing unless raw.
fn sizes(min: usize, max: usize, framing: crate::framing::Framing) -> String {
    let size =
        if min == max { bytes(min as f64) } else { format!("{}-{}", bytes(min as f64), bytes(max as f64)) };
    match framing {
        crate::framing::Framing::Raw => size,
        crate::framing::Framing::Line => format!("{size} lines"),
        crate::framing::Framing::Length => format!("{size} length-prefixed frames"),
    }
}

/// "s" for a plural.
fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The latency line.
fn latency_line(name: &str, l: &Latency) -> String {
    format!(
        "{name:<11} p50 {}  p99 {}  p99.9 {}  max {}\n",
        micros(l.p50_us),
        micros(l.p99_us),
        micros(l.p999_us),
        micros(l.max_us)
    )
}

/// The open-loop line: asked, sent, achieved, and whether the generator kept up.
fn rate_line(r: &RateReport, unit: &str) -> String {
    let mut s = format!(
        "rate        asked {}/s  sent {}/s  achieved {}/s  ({} of {} due sent > 1 ms late{})",
        count(r.asked_per_s),
        count(r.sent_per_s),
        count(r.achieved_per_s),
        r.late,
        r.due,
        if r.behind { "; BEHIND its schedule: the load was burstier or lower than asked" } else { "" }
    );
    if r.unanswered > 0 {
        let _ = write!(s, "; {} {unit} unanswered, counted at their age", r.unanswered);
    }
    s.push('\n');
    s
}

/// A single echo run, for people.
pub fn echo_text(r: &EchoReport) -> String {
    let mut s = String::new();
    let shape = match r.rate {
        Some(_) => "open loop".to_string(),
        None => format!("pipeline {}", r.pipeline),
    };
    let _ = writeln!(
        s,
        "echo {}: {} connections × {}, {shape}, {} thread{}; {:.1}s warm-up, {:.1}s measured",
        r.target,
        r.connections,
        sizes(r.size, r.size_max, r.framing),
        r.threads,
        plural(r.threads),
        r.warmup_s,
        r.duration_s,
    );
    let _ = writeln!(
        s,
        "throughput  {:.0} msgs/s  {:.1} MiB/s  ({} round trips measured, {} verified in all)",
        r.msgs_per_s, r.mib_per_s, r.msgs, r.total_msgs
    );
    if let Some(rate) = &r.rate {
        s.push_str(&rate_line(rate, "messages"));
    }
    let name = if r.rate.is_some() { "latency*" } else { "latency" };
    s.push_str(&latency_line(name, &r.latency));
    if r.rate.is_some() {
        s.push_str(
            "            * from each message's due time, not its send (coordinated omission corrected)\n",
        );
    }
    let _ = writeln!(s, "errors {}  mismatches {}", r.errors, r.mismatches);
    s.push_str(&generator_line(&r.cpu, r.valid));
    if let Some(e) = &r.first_error {
        let _ = writeln!(s, "first error: {e}");
    }
    s
}

/// The load generator's own line: each thread's CPU, how late it acted, and ‡ when the
/// run is not valid.
fn generator_line(cpu: &Cpu, valid: bool) -> String {
    // Floored, so that "95%" always comes with its ‡.
    let percent = |c: f64| format!("{}%", (c * 100.0).floor());
    let threads: Vec<String> =
        cpu.generator.thread_cpu.iter().map(|t| t.map_or_else(|| "?".into(), percent)).collect();
    let mut s = format!("generator   thread CPU {}", threads.join(" "));
    if let Some(d) = &cpu.generator.delay {
        let what = match d.kind {
            DelayKind::SendLateness => "send lateness",
            DelayKind::SchedulingDelay => "scheduling delay",
        };
        let _ = write!(
            s,
            "  {what} p50 {}  p99 {}  max {}",
            micros(d.p50_us),
            micros(d.p99_us),
            micros(d.max_us)
        );
    }
    if !valid {
        s.push_str("  ‡ NOT VALID: the generator may have set the pace (see the warning)");
    }
    s.push('\n');
    s
}

/// A churn run, for people.
pub fn churn_text(r: &ChurnReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "churn {}: up to {} connections at once, each echoing one {} message, {} thread{}; {:.1}s warm-up, {:.1}s measured",
        r.target,
        r.concurrency,
        sizes(r.size, r.size_max, r.framing),
        r.threads,
        plural(r.threads),
        r.warmup_s,
        r.duration_s
    );
    let _ = writeln!(
        s,
        "throughput  {:.0} connections/s  ({} measured, {} verified in all)",
        r.conns_per_s, r.connections, r.total_connections
    );
    if let Some(rate) = &r.rate {
        s.push_str(&rate_line(rate, "connections"));
    }
    s.push_str(&latency_line("connect+echo", &r.latency));
    let _ = writeln!(s, "errors {}  mismatches {}", r.errors, r.mismatches);
    s.push_str(&generator_line(&r.cpu, r.valid));
    if let Some(e) = &r.first_error {
        let _ = writeln!(s, "first error: {e}");
    }
    s
}

/// One line on what went wrong in a churn run.
pub fn churn_problems(r: &ChurnReport) -> String {
    let first = r.first_error.as_deref().map(|e| format!(" (first error: {e})")).unwrap_or_default();
    format!("{} failed connections, {} corrupted echoes{first}", r.errors, r.mismatches)
}

/// A UDP run, for people: the summary line gives datagrams echoed and lost.
pub fn udp_text(r: &UdpReport) -> String {
    let mut s = String::new();
    let shape = match r.rate {
        Some(_) => "open loop".to_string(),
        None => format!("pipeline {}", r.pipeline),
    };
    let _ = writeln!(
        s,
        "udp {}: {} socket{} × {}-byte datagrams{}, {shape}; {:.1}s warm-up, {:.1}s measured",
        r.target,
        r.sockets,
        plural(r.sockets),
        r.size,
        if r.size == r.size_max { String::new() } else { format!(" (to {})", r.size_max) },
        r.warmup_s,
        r.duration_s
    );
    let _ = writeln!(
        s,
        "datagrams   sent {}  echoed {}  lost {} (no reply within {}s)  late replies {}  mismatches {}",
        r.sent, r.echoed, r.lost, r.loss_timeout_s, r.late_replies, r.mismatches
    );
    let _ = writeln!(s, "throughput  {:.0} echoes/s  {:.1} MiB/s", r.msgs_per_s, r.mib_per_s);
    if let Some(rate) = &r.rate {
        s.push_str(&rate_line(rate, "datagrams"));
    }
    s.push_str(&latency_line("latency", &r.latency));
    s.push_str(&generator_line(&r.cpu, r.valid));
    if let Some(e) = &r.first_error {
        let _ = writeln!(s, "errors {}, first: {e}", r.errors);
    }
    s
}

/// One line on what went wrong in a UDP run (losses are not a problem).
pub fn udp_problems(r: &UdpReport) -> String {
    let first = r.first_error.as_deref().map(|e| format!(" (first error: {e})")).unwrap_or_default();
    format!("{} wrong replies, {} socket errors{first}", r.mismatches, r.errors)
}

/// A chaos run, for people: the well-behaved clients, the hostile ones, the server, the
/// verdict.
pub fn chaos_text(r: &ChaosReport) -> String {
    let mut s = format!(
        "chaos {}: {} well-behaved connections, beside hostile clients\n",
        r.target, r.chaos.connections
    );
    for (phase, run) in [("calm", &r.calm), ("chaos", &r.chaos)] {
        let _ = writeln!(
            s,
            "{phase:<6} {:.0} msgs/s  p99 {}  errors {}  mismatches {}  ({} verified)",
            run.msgs_per_s,
            micros(run.latency.p99_us),
            run.errors,
            run.mismatches,
            run.total_msgs
        );
    }
    if let Some(ratio) = r.p99_ratio {
        let _ = writeln!(s, "p99 under chaos: {ratio:.2}× the calm p99");
    }
    for h in &r.hostile {
        let _ = writeln!(
            s,
            "hostile {:<13} {} client{}: {} connections, {} errors, {} wrong echoes",
            serde_json::to_value(h.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            h.clients,
            plural(h.clients),
            h.connections,
            h.errors,
            h.wrong_echoes
        );
    }
    s.push_str(&server_text(r));
    match r.problems.as_slice() {
        [] => s.push_str("verdict: passed\n"),
        problems => {
            let _ = writeln!(s, "verdict: FAILED: {}", problems.join("; "));
        }
    }
    s
}

/// What the server did during the chaos, or why it was not watched.
fn server_text(r: &ChaosReport) -> String {
    let w = &r.server;
    let (Some(pid), Some(rss), Some(fds)) = (w.pid, w.rss, w.fds) else {
        return format!("server: {}\n", w.found_by);
    };
    let came_back = match w.came_back {
        Some(true) => format!("came back in {:.1}s", w.settle_s),
        _ => format!("did NOT come back within {:.1}s", w.settle_s),
    };
    format!(
        "server pid {pid} ({}): RSS {} / {} / {}, descriptors {} / {} / {} (before / peak / after): {came_back}\n",
        w.found_by,
        bytes(rss.before as f64),
        bytes(rss.peak as f64),
        bytes(rss.after as f64),
        fds.before,
        fds.peak,
        fds.after
    )
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

/// One `--find-max` step, as it is judged.
pub fn step_line(step: &Step, slo: crate::findmax::Slo) -> String {
    let Some(asked) = step.asked_per_s else {
        return format!(
            "step {:>2}  calibrate  closed loop {}/s, {} {}: the search starts below half that",
            step.step,
            count(step.achieved_per_s),
            slo.percentile.name(),
            micros(step.percentile_us)
        );
    };
    let phase =
        serde_json::to_value(step.phase).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let verdict = match &step.failed_because {
        None => "pass".to_string(),
        Some(why) => format!("FAIL: {why}"),
    };
    format!(
        "step {:>2}  {phase:<9}  asked {:>7}/s  achieved {:>7}/s ({:5.1}%)  {} {:>9}  {verdict}",
        step.step,
        count(asked),
        count(step.achieved_per_s),
        100.0 * step.achieved_per_s / asked,
        slo.percentile.name(),
        micros(step.percentile_us),
    )
}

/// The answer of a `--find-max` search, for people (the step lines came before it).
pub fn findmax_text(r: &FindMaxReport) -> String {
    let mut s = format!(
        "find-max {}: {} connections × {}, open loop, {:.1}s warm-up and {:.1}s measured per step; SLO {}\n",
        r.target,
        r.connections,
        bytes(r.size as f64),
        r.warmup_s,
        r.duration_s,
        r.slo
    );
    let failed_at =
        r.answer.failed_at_per_s.map(|f| format!(", failed at {}/s", count(f))).unwrap_or_default();
    match (r.answer.rate_per_s, &r.answer.latency) {
        (Some(rate), Some(l)) => {
            let _ = writeln!(
                s,
                "highest sustainable rate: {}/s ({} steps{failed_at}); at it p50 {}  p99 {}  p99.9 {}",
                count(rate),
                r.steps.len(),
                micros(l.p50_us),
                micros(l.p99_us),
                micros(l.p999_us)
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "no rate tried was sustained within the SLO ({} steps{failed_at})",
                r.steps.len()
            );
        }
    }
    if !r.valid {
        s.push_str("‡ NOT VALID: the load generator may have set the pace at the steps around the answer\n");
    }
    s
}

/// The side-by-side markdown table, with the CPU table, legend, settings and problems.
pub fn table(report: &CompareReport) -> String {
    let models = report.models();
    let ratio =
        report.ratio.as_ref().filter(|(a, b)| models.contains(&a.as_str()) && models.contains(&b.as_str()));
    let ratio = ratio.map(|(a, b)| (a.as_str(), b.as_str()));
    let mut s = header(&models, ratio);
    for scenario in report.scenarios() {
        let _ = write!(s, "| {} |", row_title(report, scenario));
        for &model in &models {
            let _ = write!(s, " {} |", cell(report.find(model, scenario)));
        }
        if let Some((a, b)) = ratio {
            let _ = write!(s, " {} |", ratio_cell(report.find(a, scenario), report.find(b, scenario)));
        }
        s.push('\n');
    }
    s.push_str(&peak_rss_row(report, &models, ratio));
    s.push_str(&legend(report, ratio));
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
        let _ = write!(s, " {a} ÷ {b} |");
    }
    let _ = writeln!(s, "\n|---|{}", "---:|".repeat(models.len() + usize::from(ratio.is_some())));
    s
}

/// A row's label: the scenario, and with `--find-max` what was searched for.
fn row_title(report: &CompareReport, scenario: crate::scenario::Scenario) -> String {
    match report.settings.find_max {
        Some(slo) if scenario.is_echo() => format!("highest rate with {slo}: {}", scenario.title()),
        _ => scenario.title(),
    }
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
    let measured = |s: &crate::scenario::Scenario| {
        report.runs.iter().any(|r| r.scenario == *s && r.outcome.server_cpu().is_some())
    };
    let echo_scenarios: Vec<_> = report.scenarios().into_iter().filter(measured).collect();
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
    match run.map(|r| (&r.outcome, r.outcome.server_cpu())) {
        Some((_, Some((per, cpu)))) => format!("{} · {:.0}%", micros(per), cpu * 100.0),
        Some((Outcome::Failed { .. }, _)) => "failed".into(),
        Some(_) => "?".into(),
        None => "—".into(),
    }
}

/// What the cells and marks mean.
fn legend(report: &CompareReport, ratio: Option<(&str, &str)>) -> String {
    let mut s = String::from(
        "\nCells: messages/s · p99 round trip (higher / lower is better). Churn row: connections/s · p99 \
         connect+echo. Idle row: server RSS growth ÷ connections held. Fairness row: the small connections' \
         p99 alone → beside the stream · the stream's MiB/s. Peak RSS: the most the server (with any process \
         it started) was resident in any scenario.\n",
    );
    if report.settings.find_max.is_some() {
        s.push_str(
            "Find-max rows: the highest open-loop rate answered at ≥ 99% within the SLO · the SLO's percentile at it.\n",
        );
    }
    if let Some((a, b)) = ratio {
        let _ = writeln!(
            s,
            "{a} ÷ {b}: {a}'s msgs/s over {b}'s (connections/s in the churn row, the highest rate in find-max \
             rows; memory in the idle and peak RSS rows, said as more or less)."
        );
    }
    if report.any_client_bound() {
        s.push_str(
            "‡ the load generator may have set the pace (a thread of it at ≥ 95% of a CPU, or behind its \
             schedule): that server may be faster than shown.\n",
        );
    }
    if report.runs.iter().any(|r| !r.is_clean()) {
        s.push_str("⚠ the run had problems: see below.\n");
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

/// One table cell, with its marks: ‡ the generator may have set the pace, ⚠ problems.
fn cell(run: Option<&RunResult>) -> String {
    let Some(run) = run else { return "—".into() };
    let bound = if run.outcome.client_bound() { " ‡" } else { "" };
    let warn = if run.is_clean() { "" } else { " ⚠" };
    format!("{}{bound}{warn}", cell_value(&run.outcome))
}

/// What a cell says, without its marks.
fn cell_value(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Echo(e) => format!("{}/s · {}", count(e.msgs_per_s), micros(e.latency.p99_us)),
        Outcome::Churn(c) => format!("{} conns/s · {}", count(c.conns_per_s), micros(c.latency.p99_us)),
        Outcome::Idle(m) => match m.bytes_per_connection {
            Some(b) if m.connections.held == m.connections.requested => bytes(b),
            Some(b) => format!("{} (held {})", bytes(b), m.connections.held),
            None => "none held".into(),
        },
        Outcome::Fairness(f) => fairness_cell(f),
        Outcome::FindMax(m) => match (m.answer.rate_per_s, &m.answer.latency) {
            (Some(rate), Some(latency)) => {
                format!(
                    "{}/s · {} {}",
                    count(rate),
                    m.slo.percentile.name(),
                    micros(m.slo.percentile.of(latency))
                )
            }
            _ => format!("none within {}", m.slo),
        },
        Outcome::Failed { .. } => "failed".into(),
    }
}

/// "p99 80 µs → 2.50 ms · 812 MiB/s".
fn fairness_cell(f: &FairnessReport) -> String {
    format!(
        "p99 {} → {} · {:.0} MiB/s",
        micros(f.small_p99_us.alone),
        micros(f.small_p99_us.beside_stream),
        f.stream_mib_per_s
    )
}

/// One line for the progress of `--compare`: the server, the scenario, the cell.
pub fn cell_line(run: &RunResult) -> String {
    let first_problem = run.problems.first().map(|p| format!(" ({p})")).unwrap_or_default();
    format!("{} · {}: {}{first_problem}", run.model, run.scenario.name(), cell(Some(run)))
}

/// The first server of the pair against the second: msgs/s ratio, or memory ratio for the
/// idle row.
fn ratio_cell(first: Option<&RunResult>, second: Option<&RunResult>) -> String {
    let (Some(a), Some(b)) = (first, second) else { return String::new() };
    match (&a.outcome, &b.outcome) {
        (Outcome::Echo(x), Outcome::Echo(y)) if y.msgs_per_s > 0.0 => {
            format!("{:.2}×", x.msgs_per_s / y.msgs_per_s)
        }
        (Outcome::Churn(x), Outcome::Churn(y)) if y.conns_per_s > 0.0 => {
            format!("{:.2}×", x.conns_per_s / y.conns_per_s)
        }
        (Outcome::FindMax(x), Outcome::FindMax(y)) => match (x.answer.rate_per_s, y.answer.rate_per_s) {
            (Some(p), Some(q)) if q > 0.0 => format!("{:.2}×", p / q),
            _ => String::new(),
        },
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
            settings: Settings {
                warmup_s: 0.5,
                duration_s: 2.0,
                threads: 1,
                pinned: true,
                rounds: 1,
                find_max: None,
            },
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
            "| scenario | event-loop | thread-per-conn | blocking | event-loop ÷ thread-per-conn |"
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
        assert!(table.contains("‡ the load generator may have set the pace"), "{table}");
        assert!(
            table.contains("event-loop ÷ thread-per-conn: event-loop's msgs/s over thread-per-conn's"),
            "{table}"
        );
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
        let unpaired = super::table(&unpaired);
        assert!(!unpaired.lines().next().unwrap().contains(" ÷ ") && !unpaired.contains("'s msgs/s over"));
    }
}
