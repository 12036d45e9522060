//! `cargo bench`: a short `echoloop bench --compare` (every model, every scenario, 0.2 s
//! warm-up and 0.5 s measured per cell), printing the same table.
//!
//! Why not criterion: criterion times a closure over and over and fits a distribution to
//! the samples. What we measure is a server under many concurrent connections, as
//! messages per second and round-trip quantiles over a window, which the load generator
//! already does (HDR histogram, every byte verified). So this is `harness = false` and
//! simply runs the comparison, with the servers started from the `echoloop` binary that
//! cargo built for this bench. `cargo bench -- --pin` pins as `--compare --pin` does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use echoloop::bench::{self, CompareOptions, Task};

fn main() -> ExitCode {
    let mut options = CompareOptions::new(Some(PathBuf::from(env!("CARGO_BIN_EXE_echoloop"))));
    options.warmup = Duration::from_millis(200);
    options.duration = Duration::from_millis(500);
    options.pin = std::env::args().any(|a| a == "--pin");
    match bench::run(&Task::Compare(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo bench: {e}");
            ExitCode::FAILURE
        }
    }
}
