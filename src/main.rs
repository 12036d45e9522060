//! The `echoloop` binary: parse the command line, set up logging, run a subcommand, and turn
//! the outcome into an exit code: usage errors 2 (clap's own, and [`echoloop::Error::Usage`]),
//! runtime errors 1.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, ServeArgs};
use echoloop::{Error, Server, ShutdownHandle};

fn main() -> ExitCode {
    let cli = Cli::parse(); // on bad input clap prints its message and exits with 2
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Client(args) => echoloop::run_client(&args.addr, &args.to_options()).map_err(Error::Io),
        Command::Bench(args) => echoloop::bench::run(&args.to_task()).map_err(|e| {
            // The load generator reports a bad request as InvalidInput before any socket exists.
            if e.kind() == std::io::ErrorKind::InvalidInput {
                Error::Usage(e.to_string())
            } else {
                Error::Io(e)
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echoloop: {e:#}");
            ExitCode::from(e.exit_code())
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

fn serve(args: &ServeArgs) -> Result<(), Error> {
    // Handle signals before anything else: a SIGTERM that arrives while we bind, or right
    // after whoever reads `listening on` sees it, must find the graceful handler, not the
    // default action (death). A stop requested before the server runs is carried out as
    // soon as it does.
    let shutdown = ShutdownHandle::new();
    shutdown.shutdown_on_signals()?;
    let server = Server::bind_with(&args.to_config(), shutdown)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    server.run()?;
    Ok(())
}
