//! What `--compare` measured, as plain data: what `--json` writes and the table and the
//! chart are drawn from. At the bottom of the comparison's layers: it names no report,
//! chart or server process, so each of those can read it without reading each other.

use serde::Serialize;

use crate::fairness::FairnessReport;
use crate::findmax::{FindMaxReport, Slo};
use crate::run::{ChurnReport, EchoReport, IdleReport};
use crate::scenario::Scenario;

/// Everything `--compare` measured.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub settings: Settings,
    /// One entry per (server, scenario) that ran.
    pub runs: Vec<RunResult>,
    /// Two servers the table also sets against each other (`A vs B`), when both ran.
    #[serde(skip)]
    pub ratio: Option<(String, String)>,
}

/// The machine, for the reader of a table.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process could use.
    pub cpus: usize,
    /// The CPU's model name.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
}

/// The run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Warm-up seconds per echo scenario.
    pub warmup_s: f64,
    /// Measured seconds per echo scenario.
    pub duration_s: f64,
    /// Load-generator threads.
    pub threads: usize,
    /// Servers pinned to CPU 0, load generator to CPU 1.
    pub pinned: bool,
    /// Rounds per cell; each cell shows its median round.
    pub rounds: usize,
    /// With `--find-max`: the SLO every search held the servers to.
    pub find_max: Option<Slo>,
}

/// One (server, scenario) cell.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The server's name.
    pub model: String,
    /// The scenario.
    pub scenario: Scenario,
    /// What was measured: with `--rounds`, the median round's measurements.
    pub outcome: Outcome,
    /// Each round's headline number in the order run: msgs/s, or bytes per idle connection
    /// (`None` for a round that failed).
    pub rounds: Vec<Option<f64>>,
    /// The server's peak resident memory (VmHWM) at the end of the run, in bytes (the most
    /// over the rounds).
    pub server_peak_rss: Option<u64>,
    /// What went wrong, for the reader (empty when nothing did), in any round.
    pub problems: Vec<String>,
}

/// A run's measurements.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// An echo scenario.
    Echo(EchoReport),
    /// The churn scenario.
    Churn(ChurnReport),
    /// The idle scenario.
    Idle(IdleMemory),
    /// The fairness scenario.
    Fairness(Box<FairnessReport>),
    /// `--find-max`: the highest sustainable rate in an echo scenario.
    FindMax(Box<FindMaxReport>),
    /// The run could not happen (the server did not start, nothing could connect).
    Failed {
        /// Why.
        error: String,
    },
}

/// The idle scenario: how much resident memory each held connection cost the server.
#[derive(Debug, Clone, Serialize)]
pub struct IdleMemory {
    /// Server VmRSS before connecting, bytes.
    pub rss_before: u64,
    /// Server VmRSS with every connection held, bytes.
    pub rss_held: u64,
    /// `(rss_held - rss_before) / held`, when anything was held.
    pub bytes_per_connection: Option<f64>,
    /// The connections.
    pub connections: IdleReport,
}

impl RunResult {
    /// No errors, no corruption, nothing failed.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Outcome {
    /// The number a cell is ranked by: msgs/s, connections/s (churn), bytes per idle
    /// connection, the small connections' p99 beside the stream (fairness), or the highest
    /// sustainable rate; `None` if the run failed (or no rate was sustained).
    pub fn headline(&self) -> Option<f64> {
        match self {
            Outcome::Echo(e) => Some(e.msgs_per_s),
            Outcome::Churn(c) => Some(c.conns_per_s),
            Outcome::Idle(m) => m.bytes_per_connection,
            Outcome::Fairness(f) => Some(f.small_p99_us.beside_stream),
            Outcome::FindMax(m) => m.answer.rate_per_s,
            Outcome::Failed { .. } => None,
        }
    }

    /// The load generator may have set the pace in this run: a thread of it was (nearly)
    /// saturated, or it fell behind its schedule (the run is not `valid`).
    pub fn client_bound(&self) -> bool {
        match self {
            Outcome::Echo(e) => !e.valid,
            Outcome::Churn(c) => !c.valid,
            Outcome::Fairness(f) => f.client_bound(),
            Outcome::FindMax(m) => !m.valid,
            Outcome::Idle(_) | Outcome::Failed { .. } => false,
        }
    }

    /// Server CPU time per message (churn: per connection) and server CPU use, in
    /// microseconds and CPUs, where both were measured.
    pub fn server_cpu(&self) -> Option<(f64, f64)> {
        let per = |cpu: Option<f64>, rate: f64| cpu.filter(|_| rate > 0.0).map(|c| (c * 1e6 / rate, c));
        match self {
            Outcome::Echo(e) => per(e.cpu.server_cpu, e.msgs_per_s),
            Outcome::Churn(c) => per(c.cpu.server_cpu, c.conns_per_s),
            _ => None,
        }
    }
}

impl CompareReport {
    /// The servers that appear, in the order they first ran (the table's columns).
    pub fn models(&self) -> Vec<&str> {
        let mut models: Vec<&str> = Vec::new();
        for run in &self.runs {
            if !models.contains(&run.model.as_str()) {
                models.push(&run.model);
            }
        }
        models
    }

    /// The scenarios that appear, in table order.
    pub fn scenarios(&self) -> Vec<Scenario> {
        Scenario::ALL.into_iter().filter(|s| self.runs.iter().any(|r| r.scenario == *s)).collect()
    }

    /// The run of `model` in `scenario`, if it ran.
    pub fn find(&self, model: &str, scenario: Scenario) -> Option<&RunResult> {
        self.runs.iter().find(|r| r.model == model && r.scenario == scenario)
    }

    /// The most a server was resident in any of its runs that measured something.
    pub fn peak_rss(&self, model: &str) -> Option<u64> {
        let measured =
            self.runs.iter().filter(|r| r.model == model && !matches!(r.outcome, Outcome::Failed { .. }));
        measured.filter_map(|r| r.server_peak_rss).max()
    }

    /// Whether any echo or churn run saturated the load generator.
    pub fn any_client_bound(&self) -> bool {
        self.runs.iter().any(|r| r.outcome.client_bound())
    }
}

/// Hand-made outcomes for unit tests of the comparison and its report.
#[cfg(test)]
pub mod fixtures {
    use super::*;
    use crate::histogram::Latency;
    use crate::run::{Cpu, Generator};

    pub fn echo(msgs_per_s: f64, p99_us: f64, client_bound: bool, mismatches: u64) -> Outcome {
        Outcome::Echo(EchoReport {
            target: "127.0.0.1:1".into(),
            requested: 1,
            connections: 1,
            size: 64,
            size_max: 64,
            framing: crate::framing::Framing::Raw,
            pipeline: 1,
            threads: 1,
            spin: false,
            warmup_s: 0.1,
            duration_s: 1.0,
            msgs: msgs_per_s as u64,
            total_msgs: msgs_per_s as u64,
            msgs_per_s,
            mib_per_s: 0.0,
            latency: Latency { p99_us, ..Latency::default() },
            rate: None,
            errors: 0,
            mismatches,
            first_error: None,
            cpu: Cpu {
                client_cpu: if client_bound { 0.99 } else { 0.5 },
                client_bound,
                server_cpu: Some(0.5),
                generator: Generator {
                    thread_cpu: vec![Some(if client_bound { 0.99 } else { 0.5 })],
                    delay: None,
                },
            },
            valid: !client_bound,
            warnings: if client_bound {
                vec!["load-generator thread 0 used 99% of a CPU".into()]
            } else {
                vec![]
            },
        })
    }

    pub fn idle(bytes_per_connection: f64, held: usize) -> Outcome {
        Outcome::Idle(IdleMemory {
            rss_before: 1 << 20,
            rss_held: (1 << 20) + (bytes_per_connection * held as f64) as u64,
            bytes_per_connection: Some(bytes_per_connection),
            connections: IdleReport {
                target: "127.0.0.1:1".into(),
                requested: 10_000,
                connected: held,
                failed: 10_000 - held,
                dropped: 0,
                held,
                connect_s: 1.0,
                duration_s: 0.3,
                first_error: None,
            },
        })
    }

    /// One cell of `model` in `scenario`.
    pub fn cell(model: &str, scenario: Scenario, outcome: Outcome, problems: &[&str]) -> RunResult {
        RunResult {
            model: model.into(),
            scenario,
            outcome,
            rounds: vec![],
            server_peak_rss: Some(4 << 20),
            problems: problems.iter().map(|p| p.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{cell, echo, idle};
    use super::*;

    fn report(runs: Vec<RunResult>) -> CompareReport {
        CompareReport {
            machine: Machine { cpus: 2, cpu_model: String::new(), kernel: String::new() },
            settings: Settings {
                warmup_s: 0.0,
                duration_s: 1.0,
                threads: 1,
                pinned: false,
                rounds: 1,
                find_max: None,
            },
            runs,
            ratio: None,
        }
    }

    #[test]
    fn columns_keep_the_order_servers_ran_in() {
        let r = report(vec![
            cell("zeta", Scenario::Many, echo(1.0, 1.0, false, 0), &[]),
            cell("alpha", Scenario::Many, echo(2.0, 1.0, false, 0), &[]),
            cell("zeta", Scenario::Latency, echo(3.0, 1.0, false, 0), &[]),
        ]);
        assert_eq!(r.models(), ["zeta", "alpha"]);
        assert_eq!(r.scenarios(), [Scenario::Latency, Scenario::Many]);
        assert_eq!(r.find("zeta", Scenario::Latency).and_then(|c| c.outcome.headline()), Some(3.0));
        assert!(r.find("alpha", Scenario::Latency).is_none());
    }

    #[test]
    fn peak_memory_ignores_failed_runs() {
        let mut failed = cell("a", Scenario::Idle, Outcome::Failed { error: "x".into() }, &["x"]);
        failed.server_peak_rss = Some(1 << 30);
        let r = report(vec![cell("a", Scenario::Idle, idle(100.0, 10), &[]), failed]);
        assert_eq!(r.peak_rss("a"), Some(4 << 20));
        assert_eq!(r.peak_rss("b"), None);
    }
}
