//! `--find-max --slo p99=2ms`: the highest open-loop rate a server sustains.
//!
//! *Sustains* means two things at once, each step checked on its own open-loop run (one
//! `--warmup`, one `--duration`): the server answered at least 99 % of the rate asked (a
//! server that cannot keep up answers at its own pace, and the rest queues), and the chosen
//! percentile of the round trips, counted from each message's due time, stayed within the
//! SLO. A step with errors or wrong bytes fails. A step the generator could not offer as
//! asked (a saturated thread, or behind its schedule) is judged all the same (its lateness
//! counts in its latencies, so it rarely passes) but carries the generator's warning, and
//! the answer is not valid if a step around it does.
//!
//! The search is deterministic and bounded. The first step measures the closed-loop
//! throughput on the same connections (unless `--rate` gives a start); the rates asked then
//! lie on a grid of powers of two from 1000/s (or from `--rate`): up by doubling from the
//! grid point below half that throughput while steps pass (down by halving while they
//! fail), then by bisection (on a log scale) between the highest rate that passed and the
//! lowest that failed, until the two are within 2.5 % of each other: 12 steps at most.
//! Two runs whose calibrations fall between the same grid points, and that judge each step
//! alike, ask exactly the same rates and give the same answer.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::histogram::Latency;
use crate::run::EchoReport;

/// The most steps a search takes, the closed-loop calibration included.
pub const MAX_STEPS: usize = 12;
/// A step passes only if the server answered at least this share of the rate asked.
pub const ACHIEVED_SHARE: f64 = 0.99;
/// The search ends when the lowest failing rate is within this factor of the highest
/// passing one.
const PRECISION: f64 = 1.025;
/// The factor between rates before the first failure (or, going down, the first pass).
const GROWTH: f64 = 2.0;
/// The grid's anchor without `--rate`: rates are 1000/s times a power of two until the
/// bisection starts.
const GRID_ANCHOR: f64 = 1000.0;
/// No rate below this is tried: a server that fails here fails every rate.
const LOWEST_RATE: f64 = 1.0;

/// `--slo pNN=DURATION`: a percentile of the round trips and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Slo {
    /// Which percentile.
    pub percentile: Percentile,
    /// Its limit, in microseconds.
    pub limit_us: f64,
}

/// The percentiles an SLO may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Percentile {
    /// The median.
    P50,
    /// The 90th percentile.
    P90,
    /// The 99th percentile.
    P99,
    /// The 99.9th percentile.
    P999,
}

impl Percentile {
    /// Its value in `latency`, in microseconds.
    pub fn of(self, latency: &Latency) -> f64 {
        match self {
            Percentile::P50 => latency.p50_us,
            Percentile::P90 => latency.p90_us,
            Percentile::P99 => latency.p99_us,
            Percentile::P999 => latency.p999_us,
        }
    }

    /// "p99", as typed.
    pub fn name(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P90 => "p90",
            Percentile::P99 => "p99",
            Percentile::P999 => "p999",
        }
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ≤ {}", self.percentile.name(), crate::human::micros(self.limit_us))
    }
}

impl FromStr for Slo {
    type Err = String;

    /// `p99=2ms`, `p999=500us`, `p50=1.5ms`, `p90=0.2s`.
    fn from_str(s: &str) -> Result<Slo, String> {
        let usage = || {
            format!("'{s}': expected PERCENTILE=DURATION, as in p99=2ms (p50, p90, p99 or p999; us, ms or s)")
        };
        let (name, limit) = s.split_once('=').ok_or_else(usage)?;
        let percentile = match name.trim().to_ascii_lowercase().as_str() {
            "p50" => Percentile::P50,
            "p90" => Percentile::P90,
            "p99" => Percentile::P99,
            "p999" | "p99.9" => Percentile::P999,
            _ => return Err(usage()),
        };
        let limit = limit.trim();
        let (number, scale) = [("us", 1.0), ("µs", 1.0), ("ms", 1e3), ("s", 1e6)]
            .into_iter()
            .find_map(|(unit, scale)| Some((limit.strip_suffix(unit)?, scale)))
            .ok_or_else(usage)?;
        let limit_us =
            number.trim().parse::<f64>().ok().map(|n| n * scale).filter(|us| us.is_finite() && *us > 0.0);
        Ok(Slo { percentile, limit_us: limit_us.ok_or_else(usage)? })
    }
}

/// What a step was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Closed loop, to find where to start.
    Calibrate,
    /// Doubling, until a step fails.
    Up,
    /// Halving, until a step passes.
    Down,
    /// Between the highest pass and the lowest failure.
    Bisect,
}

/// One step of the search.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// 1, 2, ...
    pub step: usize,
    /// What it was for.
    pub phase: Phase,
    /// The rate asked (`null` for the closed-loop calibration).
    pub asked_per_s: Option<f64>,
    /// Echoes verified per second.
    pub achieved_per_s: f64,
    /// Round trips (open loop: from each message's due time).
    pub latency: Latency,
    /// The SLO's percentile, in microseconds.
    pub percentile_us: f64,
    /// Within the SLO at ≥ 99 % of the rate asked, without errors (`null` for calibration).
    pub passed: Option<bool>,
    /// Why it failed, for the reader.
    pub failed_because: Option<String>,
    /// Connections lost, and messages with a wrong byte.
    pub errors: u64,
    /// Messages with a wrong byte.
    pub mismatches: u64,
    /// The load generator's warnings for this step (see the echo report's `warnings`).
    pub warnings: Vec<String>,
}

impl Step {
    /// Judge `report`, measured at `asked` (`None`: the calibration), against `slo`.
    pub fn judge(step: usize, phase: Phase, asked: Option<f64>, report: &EchoReport, slo: Slo) -> Step {
        let percentile_us = slo.percentile.of(&report.latency);
        let failed_because = asked.and_then(|asked| failure(asked, report, slo, percentile_us));
        Step {
            step,
            phase,
            asked_per_s: asked,
            achieved_per_s: report.rate.map_or(report.msgs_per_s, |r| r.achieved_per_s),
            latency: report.latency,
            percentile_us,
            passed: asked.map(|_| failed_because.is_none()),
            failed_because,
            errors: report.errors,
            mismatches: report.mismatches,
            warnings: report.warnings.clone(),
        }
    }
}

/// Why a step at `asked` fails, if it does.
fn failure(asked: f64, report: &EchoReport, slo: Slo, percentile_us: f64) -> Option<String> {
    let achieved = report.rate.map_or(report.msgs_per_s, |r| r.achieved_per_s);
    if report.errors > 0 || report.mismatches > 0 {
        return Some(format!("{} errors, {} wrong echoes", report.errors, report.mismatches));
    }
    if achieved < ACHIEVED_SHARE * asked {
        return Some(format!("achieved {:.1}% of the rate asked", 100.0 * achieved / asked));
    }
    if percentile_us > slo.limit_us {
        return Some(format!(
            "{} {} over {}",
            slo.percentile.name(),
            crate::human::micros(percentile_us),
            slo
        ));
    }
    None
}

/// The search's state: the highest rate that passed, the lowest that failed.
#[derive(Debug, Clone, Default)]
pub struct Search {
    passed: Option<f64>,
    failed: Option<f64>,
    /// Steps taken so far, the calibration included.
    steps: usize,
}

impl Search {
    /// The first rate to ask: `--rate` when given, else the grid point at or below half
    /// the closed-loop throughput.
    pub fn first_rate(start: Option<f64>, closed_loop: f64) -> f64 {
        start.unwrap_or_else(|| {
            let half = (closed_loop / 2.0).max(LOWEST_RATE);
            GRID_ANCHOR * GROWTH.powf((half / GRID_ANCHOR).log2().floor())
        })
    }

    /// A step was taken (the calibration too).
    pub fn count_step(&mut self) {
        self.steps += 1;
    }

    /// The step at `rate` passed or failed.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.count_step();
        if passed {
            self.passed = Some(self.passed.map_or(rate, |p| p.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The next rate to ask and why, after a step at `last`; `None` when the search is over.
    pub fn next(&self, last: f64) -> Option<(f64, Phase)> {
        if self.steps >= MAX_STEPS {
            return None;
        }
        match (self.passed, self.failed) {
            (Some(p), Some(f)) if f <= p * PRECISION => None,
            (Some(p), Some(f)) => Some(((p * f).sqrt(), Phase::Bisect)),
            (Some(_), None) => Some((last * GROWTH, Phase::Up)),
            (None, _) => Some((last / GROWTH, Phase::Down)).filter(|(rate, _)| *rate >= LOWEST_RATE),
        }
    }

    /// The highest rate that passed, and the lowest that failed.
    #[cfg(test)]
    pub fn bracket(&self) -> (Option<f64>, Option<f64>) {
        (self.passed, self.failed)
    }
}

/// What a search found.
#[derive(Debug, Clone, Serialize)]
pub struct FindMaxReport {
    /// The server's address.
    pub target: String,
    /// The SLO.
    pub slo: Slo,
    /// Connections, and bytes per message.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Seconds of warm-up and measurement, per step.
    pub warmup_s: f64,
    /// Measured seconds per step.
    pub duration_s: f64,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// The answer.
    pub answer: Answer,
    /// False when a step the answer rests on may have measured the load generator (it was
    /// saturated, or fell behind): `warnings` says which.
    pub valid: bool,
    /// The load generator's warnings on the steps around the answer.
    pub warnings: Vec<String>,
}

/// The highest sustainable rate.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The highest rate asked that passed; `null` if none did.
    pub rate_per_s: Option<f64>,
    /// The lowest rate asked that failed (the answer lies between the two); `null` if none
    /// did (the search stopped at 12 steps going up).
    pub failed_at_per_s: Option<f64>,
    /// Round trips at the answer's step.
    pub latency: Option<Latency>,
}

impl FindMaxReport {
    /// Put the steps together: the answer is the best step that passed.
    pub fn new(target: String, slo: Slo, template: &EchoReport, steps: Vec<Step>) -> FindMaxReport {
        let best = steps
            .iter()
            .filter(|s| s.passed == Some(true))
            .max_by(|a, b| a.asked_per_s.partial_cmp(&b.asked_per_s).unwrap_or(std::cmp::Ordering::Equal));
        let lowest_failure = steps
            .iter()
            .filter(|s| s.passed == Some(false))
            .min_by(|a, b| a.asked_per_s.partial_cmp(&b.asked_per_s).unwrap_or(std::cmp::Ordering::Equal));
        let mut warnings: Vec<String> = Vec::new();
        for step in best.iter().chain(lowest_failure.iter()) {
            warnings.extend(step.warnings.iter().map(|w| format!("step {}: {w}", step.step)));
        }
        FindMaxReport {
            target,
            slo,
            connections: template.connections,
            size: template.size,
            warmup_s: template.warmup_s,
            duration_s: template.duration_s,
            answer: Answer {
                rate_per_s: best.and_then(|s| s.asked_per_s),
                failed_at_per_s: lowest_failure.and_then(|s| s.asked_per_s),
                latency: best.map(|s| s.latency),
            },
            valid: warnings.is_empty(),
            warnings,
            steps,
        }
    }

    /// Any step had errors or wrong echoes.
    pub fn problems(&self) -> Option<String> {
        let (errors, mismatches) =
            self.steps.iter().fold((0, 0), |(e, m), s| (e + s.errors, m + s.mismatches));
        (errors + mismatches > 0).then(|| {
            format!("{errors} connection errors, {mismatches} corrupted echoes over the search's steps")
        })
    }
}

/// Run a search: `measure(rate)` runs one step (closed loop for `None`) and `say` hears of
/// each step as it is judged. `start` is `--rate`, when given.
pub fn search<E>(
    slo: Slo,
    start: Option<f64>,
    mut measure: impl FnMut(Option<f64>) -> Result<EchoReport, E>,
    mut say: impl FnMut(&Step),
) -> Result<(Vec<Step>, EchoReport), E> {
    let mut search = Search::default();
    let mut steps = Vec::new();
    let (mut rate, mut phase) = match start {
        Some(rate) => (rate, Phase::Up),
        None => {
            let calibration = measure(None)?;
            search.count_step();
            let step = Step::judge(1, Phase::Calibrate, None, &calibration, slo);
            say(&step);
            steps.push(step);
            (Search::first_rate(None, calibration.msgs_per_s), Phase::Up)
        }
    };
    loop {
        let report = measure(Some(rate))?;
        let step = Step::judge(steps.len() + 1, phase, Some(rate), &report, slo);
        search.record(rate, step.passed == Some(true));
        say(&step);
        steps.push(step);
        match search.next(rate) {
            Some((next, next_phase)) => (rate, phase) = (next, next_phase),
            None => return Ok((steps, report)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slos_parse_every_percentile_and_unit() {
        let slo = |s: &str| s.parse::<Slo>();
        assert_eq!(slo("p99=2ms"), Ok(Slo { percentile: Percentile::P99, limit_us: 2000.0 }));
        assert_eq!(slo("p50=500us"), Ok(Slo { percentile: Percentile::P50, limit_us: 500.0 }));
        assert_eq!(slo("p90=1.5ms").map(|s| s.limit_us), Ok(1500.0));
        assert_eq!(slo("p999=0.25s"), Ok(Slo { percentile: Percentile::P999, limit_us: 250_000.0 }));
        assert_eq!(slo("P99.9=40µs").map(|s| s.percentile), Ok(Percentile::P999));
        for bad in ["p99", "p98=1ms", "p99=2", "p99=-1ms", "p99=0ms", "p99=fastms", "=1ms"] {
            let error = slo(bad).unwrap_err();
            assert!(error.contains("expected PERCENTILE=DURATION"), "{bad}: {error}");
        }
        assert_eq!(slo("p99=2ms").unwrap().to_string(), "p99 ≤ 2.00 ms");
    }

    /// Run the search against a server that sustains exactly `capacity` per second.
    fn against(capacity: f64, start: Option<f64>, closed_loop: f64) -> (Vec<(Phase, f64)>, Search) {
        let mut search = Search::default();
        let mut rate = match start {
            Some(r) => r,
            None => {
                search.count_step();
                Search::first_rate(None, closed_loop)
            }
        };
        let mut asked = Vec::new();
        let mut phase = Phase::Up;
        loop {
            asked.push((phase, rate));
            search.record(rate, rate <= capacity);
            match search.next(rate) {
                Some((r, p)) => (rate, phase) = (r, p),
                None => return (asked, search),
            }
        }
    }

    #[test]
    fn the_search_brackets_the_capacity_within_its_precision_in_at_most_12_steps() {
        for capacity in [3.0, 700.0, 12_345.0, 23_456.0, 100_000.0, 1_234_567.0] {
            // Calibrations that over- and under-estimate the capacity.
            for closed_loop in [capacity * 0.3, capacity, capacity * 1.7] {
                let (asked, search) = against(capacity, None, closed_loop);
                assert!(asked.len() < MAX_STEPS, "{capacity}: {} steps: {asked:?}", asked.len());
                let (Some(passed), Some(failed)) = search.bracket() else { panic!("{capacity}: {asked:?}") };
                assert!(passed <= capacity && capacity < failed, "{capacity}: {passed}..{failed}");
                assert!(failed <= passed * PRECISION, "{capacity}: {passed}..{failed} too wide");
            }
        }
    }

    #[test]
    fn the_rates_asked_are_a_grid_so_equal_decisions_ask_equal_rates() {
        // Two calibrations 20% apart pick the same first rate, so both searches ask the
        // same rates and agree exactly.
        assert_eq!(Search::first_rate(None, 30_000.0), 8000.0);
        assert_eq!(Search::first_rate(None, 24_000.0), 8000.0);
        assert_eq!(Search::first_rate(None, 1000.0), 500.0);
        assert_eq!(Search::first_rate(Some(1234.0), 30_000.0), 1234.0);
        let (a, _) = against(20_000.0, None, 30_000.0);
        let (b, _) = against(20_000.0, None, 24_000.0);
        assert_eq!(a, b);
        let phases: Vec<Phase> = a.iter().map(|(p, _)| *p).collect();
        assert_eq!(&phases[..3], [Phase::Up, Phase::Up, Phase::Up], "{a:?}");
        assert!(phases[3..].iter().all(|p| *p == Phase::Bisect), "{a:?}");
    }

    #[test]
    fn a_server_that_fails_every_rate_is_searched_down_and_gives_up() {
        let (asked, search) = against(0.5, Some(1000.0), 0.0);
        assert!(asked.iter().skip(1).all(|(p, _)| *p == Phase::Down), "{asked:?}");
        assert_eq!(search.bracket().0, None);
        assert!(asked.len() <= MAX_STEPS);
    }
}
