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
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench(&args),
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

/// `echoloop bench`: the load generator, with this binary's models as the servers that
/// `--compare` starts.
#[cfg(feature = "bench")]
fn bench(args: &echoloop_bench::BenchArgs) -> Result<(), Error> {
    let catalog = builtin_servers(args.server_exe())?;
    echoloop_bench::run(args, &catalog).map_err(|e| match e {
        echoloop_bench::Error::Usage(message) => Error::Usage(message),
        echoloop_bench::Error::Run(e) => Error::Io(e),
    })
}

/// Each model as a command line: `EXE serve --model ... {addr}`, where EXE is this binary
/// or `--server-exe`. The table sets the event loop against thread-per-conn.
#[cfg(feature = "bench")]
fn builtin_servers(server_exe: Option<&std::path::Path>) -> std::io::Result<echoloop_bench::Catalog> {
    use echoloop_bench::{ADDR_PLACEHOLDER, Catalog, ServerSpec};
    let exe = match server_exe {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()?,
    };
    let serve = |name: &str, model: &[&str]| {
        let mut argv = vec![exe.clone().into_os_string(), "serve".into()];
        argv.extend(model.iter().map(Into::into));
        // A cap above the idle scenario's 10000 connections, so it is never what is
        // measured; quiet logs; a short grace, so that stopping is quick.
        let common = ["--max-connections", "20000", "--shutdown-grace", "1", "-q", ADDR_PLACEHOLDER];
        argv.extend(common.map(Into::into));
        ServerSpec::new(name, argv)
    };
    let servers = vec![
        serve("event-loop", &["--model", "event-loop"]),
        serve("event-loop-w2", &["--model", "event-loop", "--workers", "2"]),
        serve("thread-per-conn", &["--model", "thread-per-conn"]),
        // One connection at a time: only the 1-connection scenario means anything for it.
        serve("blocking", &["--model", "blocking"]).serving_at_most(1),
    ];
    Ok(Catalog { servers, ratio: Some(("event-loop".into(), "thread-per-conn".into())) })
}
