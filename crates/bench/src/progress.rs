//! A progress bar on stderr (indicatif) while a run is going, and nothing at all when
//! stderr is not a terminal, so logs and CI output stay clean.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Shows where a run is: connecting, warming up, measuring; or, for `--compare`, which run.
pub struct Progress {
    /// `None` when hidden: then every method does nothing.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Visible when stderr is a terminal.
    pub fn on_terminal() -> Progress {
        if std::io::stderr().is_terminal() {
            Progress { bar: Some(ProgressBar::new(0)) }
        } else {
            Progress::hidden()
        }
    }

    /// Never drawn.
    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    /// The connect phase begins: `total` connections to open.
    pub fn connecting(&self, total: u64) {
        self.restyle("connecting {pos}/{len} [{bar:30}] {per_sec}", total);
    }

    /// One more connection attempt is over.
    pub fn connected_one(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// The load phase begins; it lasts `total` (warm-up included).
    pub fn measuring(&self, total: Duration) {
        self.restyle("load [{bar:30}] {msg}", total.as_millis() as u64);
    }

    /// `elapsed` into the load phase (still warming up, or measuring), `completed` round
    /// trips so far.
    pub fn tick(&self, elapsed: Duration, measuring: bool, completed: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(elapsed.as_millis() as u64);
            let phase = if measuring { "measuring" } else { "warm-up" };
            let rate = completed as f64 / elapsed.as_secs_f64().max(1e-3);
            let secs = elapsed.as_secs_f64();
            bar.set_message(format!("{phase} {secs:.1}s · {completed} msgs · {rate:.0} msgs/s"));
        }
    }

    /// `--compare`: `total` runs to go.
    pub fn runs(&self, total: u64) {
        self.restyle("{spinner} run {pos}/{len} [{bar:20}] {elapsed} {msg}", total);
        if let Some(bar) = &self.bar {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
    }

    /// `--compare`: the next run starts.
    pub fn next_run(&self, label: String) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(label);
        }
    }

    /// Print a line on stderr without tearing the bar.
    pub fn warn(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn restyle(&self, template: &str, len: u64) {
        if let Some(bar) = &self.bar {
            bar.reset();
            let style = ProgressStyle::with_template(template).expect("constant, valid template");
            bar.set_style(style.progress_chars("=> "));
            bar.set_length(len);
            bar.set_position(0);
        }
    }
}
