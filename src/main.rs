//! The `echoloop` binary: parse the command line, set up logging, run a subcommand, and turn
//! the outcome into an exit code (usage errors 2, runtime errors 1).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use echoloop::Server;
use echoloop::cli::{Cli, Command, ServeArgs};

fn main() -> ExitCode {
    let cli = Cli::parse(); // on bad input clap prints its message and exits with 2
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Client(args) => echoloop::client::run(&args.addr),
        Command::Bench(args) => echoloop::bench::run(&args.to_task()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echoloop: {e:#}");
            ExitCode::from(if e.kind() == std::io::ErrorKind::InvalidInput { 2 } else { 1 })
        }
    }
}

/// `-v`/`-q` pick the level when given; otherwise `RUST_LOG`; otherwise info.
fn init_logging(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (0, 0) => None,
        (1, _) => Some("debug"),
        (v, _) if v >= 2 => Some("trace"),
        (_, 1) => Some("warn"),
        _ => Some("error"),
    };
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(level) = level {
        builder.parse_filters(level);
    }
    builder.init();
}

fn serve(args: &ServeArgs) -> std::io::Result<()> {
    let server = Server::bind(&args.to_config())?;
    // Handle signals before announcing the address: whoever reads `listening on` may send
    // SIGTERM at once, and it must find the graceful handler, not the default (death).
    server.shutdown_handle().shutdown_on_signals()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    server.run().map(drop)
}
