//! What `echoloop bench` leaves behind for other tools, and the search for the highest
//! sustainable rate: `--hdr-log` read back with the `hdrhistogram` crate's own reader and
//! `--csv` parsed, each holding exactly the report's round trips; `--find-max` stepping up
//! then bisecting, every step in the JSON, the chart drawn; `--threads` with `--pin`.
//! These check what is written and counted, never how fast anything is.
#![cfg(feature = "bench")]

use std::path::PathBuf;

use base64::Engine as _;
use echoloop::Model;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde_json::Value;

use crate::bench_smoke::{bench, bench_at, json};
use crate::util::{TestServer, config};

/// A file in the temporary directory, named for this test process; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!("echoloop-{}-{name}", std::process::id())))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Each interval of an HdrHistogram log: (start in ms, length in ms, its histogram).
fn read_hdr_log(path: &str) -> Vec<(u128, u128, Histogram<u64>)> {
    let bytes = std::fs::read(path).expect("the log was written");
    let mut intervals = Vec::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let LogEntry::Interval(h) = entry.expect("a well-formed log") else { continue };
        let compressed = base64::engine::general_purpose::STANDARD.decode(h.encoded_histogram()).unwrap();
        let histogram: Histogram<u64> = Deserializer::new().deserialize(&mut compressed.as_slice()).unwrap();
        intervals.push((h.start_timestamp().as_millis(), h.duration().as_millis(), histogram));
    }
    intervals
}

/// Closed and open loop: the interval log holds one histogram per 0.25 s of the 1 s window,
/// and together they hold exactly the report's round trips and its slowest one; the CSV
/// has a row per interval whose echoes add up to the same count.
#[test]
fn the_hdr_log_and_the_csv_hold_the_reports_round_trips() {
    let server = TestServer::start(config(Model::EventLoop));
    let addr = server.addr().to_string();
    for load in [&["--pipeline", "2"][..], &["--rate", "2000"]] {
        let (log, csv) = (TempFile::new("run.hlog"), TempFile::new("run.csv"));
        let mut args = vec![addr.as_str(), "-c", "4", "--warmup", "0.1", "--duration", "1", "--json"];
        args.extend_from_slice(load);
        args.extend_from_slice(&["--interval", "0.25", "--hdr-log", log.path(), "--csv", csv.path()]);
        let run = bench(&args);
        assert_eq!(run.code, 0, "{load:?}: {}", run.stderr);
        let report = json(&run);
        let msgs = report["msgs"].as_u64().unwrap();
        assert!(msgs > 0, "{report}");

        let intervals = read_hdr_log(log.path());
        let spans: Vec<(u128, u128)> = intervals.iter().map(|(start, length, _)| (*start, *length)).collect();
        assert_eq!(spans, [(0, 250), (250, 250), (500, 250), (750, 250)], "{load:?}");
        let logged: u64 = intervals.iter().map(|(_, _, h)| h.len()).sum();
        assert_eq!(logged, msgs, "{load:?}: the log's round trips are the report's");
        let slowest = intervals.iter().map(|(_, _, h)| h.max()).max().unwrap() as f64 / 1000.0;
        assert_eq!(slowest, report["latency"]["max_us"].as_f64().unwrap(), "{load:?}");

        let text = std::fs::read_to_string(csv.path()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("time_s,sent,echoed,msgs_per_s,p50_us,p99_us,p999_us,max_us,errors"));
        let rows: Vec<Vec<f64>> =
            lines.map(|l| l.split(',').map(|f| f.parse::<f64>().expect("a number")).collect()).collect();
        assert_eq!(rows.iter().map(|r| r[0]).collect::<Vec<_>>(), [0.0, 0.25, 0.5, 0.75], "{text}");
        assert_eq!(rows.iter().map(|r| r[2]).sum::<f64>() as u64, msgs, "{text}");
        assert!(rows.iter().all(|r| r.len() == 9 && r[1] > 0.0 && r[8] == 0.0), "{text}");
    }
}

/// `--find-max`: a closed-loop calibration, then open-loop steps up and by bisection, 12 at
/// most, each judged and in the JSON; the answer is the highest step that passed; the
/// chart is drawn; each step's line goes to stderr while the JSON takes stdout.
#[test]
fn find_max_reports_every_step_and_the_highest_that_passed() {
    let server = TestServer::start(config(Model::EventLoop));
    let addr = server.addr().to_string();
    let svg = TempFile::new("find-max.svg");
    let flags =
        format!("-c 4 --find-max --slo p99=20ms --warmup 0.1 --duration 0.2 --svg {} --json", svg.path());
    let run = bench_at(&addr, &flags);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = json(&run);
    let steps = report["steps"].as_array().unwrap();
    assert!((2..=12).contains(&steps.len()), "{} steps: {report}", steps.len());
    assert_eq!(steps[0]["phase"].as_str(), Some("calibrate"), "{report}");
    assert!(steps[0]["asked_per_s"].is_null() && steps[0]["achieved_per_s"].as_f64().unwrap() > 0.0);
    let asked = |s: &Value| s["asked_per_s"].as_f64().unwrap();
    for step in &steps[1..] {
        assert!(asked(step) > 0.0 && step["passed"].is_boolean(), "{step}");
        assert_eq!(step["passed"].as_bool(), Some(step["failed_because"].is_null()), "{step}");
    }
    let passed = steps[1..].iter().filter(|s| s["passed"] == true).map(asked);
    let failed = steps[1..].iter().filter(|s| s["passed"] == false).map(asked);
    let (best, lowest_failure) = (
        passed.fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r)))),
        failed.fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r)))),
    );
    assert_eq!(report["answer"]["rate_per_s"].as_f64(), best, "{report}");
    assert_eq!(report["answer"]["failed_at_per_s"].as_f64(), lowest_failure, "{report}");
    assert_eq!(report["slo"]["percentile"].as_str(), Some("p99"), "{report}");
    assert!(run.stderr.contains("step  1  calibrate"), "{}", run.stderr);
    let chart = std::fs::read_to_string(svg.path()).expect("the chart was drawn");
    assert!(
        chart.contains("<svg") && chart.contains("SLO 20.00 ms") && chart.contains("p999"),
        "{chart:.300}"
    );
}

/// `--threads 2 --pin 0,1`: each thread's CPU is reported; a CPU the machine does not
/// have is a usage error before any load.
#[test]
fn pinned_threads_each_report_their_cpu() {
    let server = TestServer::start(config(Model::EventLoop));
    let addr = server.addr().to_string();
    let run = bench_at(&addr, "-c 4 --threads 2 --pin 0 --warmup 0 --duration 0.3 --json");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = json(&run);
    let threads = report["generator"]["thread_cpu"].as_array().unwrap();
    assert_eq!(threads.len(), 2, "{report}");
    assert!(threads.iter().all(|t| t.as_f64().is_some_and(|c| (0.0..=1.5).contains(&c))), "{report}");
    let run = bench_at(&addr, "--pin 1000 --duration 0.2");
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--pin: there is no CPU 1000; this machine has CPUs 0-"), "{}", run.stderr);
}
