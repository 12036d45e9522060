//! `cargo bench`: a short `echoloop bench --compare` (every model, every scenario, 0.2 s
//! warm-up and 0.5 s measured per cell), printing the same table.
//!
//! Why not criterion: criterion times a closure over and over and fits a distribution to
//! the samples. What we measure is a server under many concurrent connections, as
//! messages per second and round-trip quantiles over a window, which the load generator
//! already does (HDR histogram, every byte verified). So this is `harness = false` and
//! simply runs the comparison through the `echoloop` binary that cargo built for this
//! bench: its `bench --compare` starts the built-in models from that same binary.
//! `cargo bench -- --pin` pins as `--compare --pin` does.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = vec!["bench", "--compare", "--warmup", "0.2", "--duration", "0.5"];
    if std::env::args().any(|a| a == "--pin") {
        args.push("--pin");
    }
    match Command::new(env!("CARGO_BIN_EXE_echoloop")).args(&args).status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("echo bench: echoloop {} {status}", args.join(" "));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("echo bench: cannot run echoloop: {e}");
            ExitCode::FAILURE
        }
    }
}
