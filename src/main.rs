//! The `echoloop` binary: parse the command line, set up logging, run a subcommand, and turn
//! the outcome into an exit code: usage errors 2 (clap's own, and [`echoloop::Error::Usage`]),
//! runtime errors 1.

#[cfg(feature = "bench")]
mod bench_catalog;
mod cli;
mod manpage;

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, ServeArgs};
use echoloop::{
    ActivationEnv, Error, ExitReason, Notifier, Server, ServerConfig, ShutdownHandle, StatsRequests,
    StopCause, Summary,
};
use log::{info, warn};

fn main() -> ExitCode {
    let cli = Cli::parse(); // on bad input clap prints its message and exits with 2
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Client(args) => echoloop::run_client(&args.addr, &args.to_options()).map_err(Error::Io),
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench_catalog::run(&args),
        Command::Manpage(args) => manpage(args.dir.as_deref()).map_err(Error::Io),
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "echoloop", &mut io::stdout());
            Ok(())
        }
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
    let shutdown = ShutdownHandle::new();
    let server = match start(args, shutdown.clone()) {
        Ok(server) => server,
        Err(e) => return finish(args, &Summary::default(), Err(e), &shutdown),
    };
    let stats = server.stats();
    let result = announce(&server).and_then(|()| server.run().map_err(Error::Io));
    let summary = match &result {
        Ok(summary) => summary.clone(),
        Err(_) => stats.summary(), // what was done before the failure
    };
    finish(args, &summary, result.map(drop), &shutdown)
}

/// Serve the sockets the service manager passed, if it passed any; else bind our own.
fn start(args: &ServeArgs, shutdown: ShutdownHandle) -> Result<Server, Error> {
    // First, while this is the only thread and before anything opens a descriptor, take
    // what the service manager passed: the variables, unset, and the sockets, adopted.
    let activation = take_activation_env();
    // SAFETY: nothing in this process has opened or adopted a descriptor yet (we only
    // parsed arguments and set up logging), so fd 3, if open, is what our parent left us.
    // (Were it taken later, the signal thread's own socket could be given fd 3 when the
    // parent left it closed, and we would adopt that.)
    let inherited = unsafe { echoloop::take_inherited_sockets(&activation) }?;
    // Then handle signals before binding: a SIGTERM that arrives while we bind, or right
    // after whoever reads `listening on` sees it, must find the graceful handler, not the
    // default action (death). A stop requested before the server runs is carried out as
    // soon as it does. (SIGUSR1, too, would kill us without a handler.)
    let stats_requests = StatsRequests::new();
    echoloop::handle_signals(&shutdown, &stats_requests)?;
    let config = args.to_config();
    // Every connection is a descriptor: raise the soft limit before anything is accepted,
    // and say what we got once the server is bound (a refusal stays one line).
    let limit = echoloop::raise_descriptor_limit();
    let server = match (inherited.first(), args.addrs.first()) {
        (None, _) => Server::bind_with(&config, shutdown)?,
        (Some(passed), Some(given)) => {
            return Err(Error::Usage(format!(
                "socket activation: the service manager passed {} socket(s) ({} first) and the \
                 command line names {given} too: serve one or the other (no ADDR in ExecStart=, \
                 or no socket unit)",
                inherited.len(),
                passed.description()
            )));
        }
        (Some(_), None) => Server::inherit(inherited, &config, shutdown)?,
    };
    log_descriptor_limit(limit, &config);
    Ok(server.with_stats_requests(stats_requests).with_notifier(Notifier::from_env()))
}

/// Log the descriptor limit raised at start (the soft limit is often 1024; it is now the
/// hard one), and warn if `--max-connections` (the whole process's) cannot fit under it. A
/// failure to raise it is a warning: the server still runs, within the old limit.
fn log_descriptor_limit(limit: io::Result<echoloop::DescriptorLimit>, config: &ServerConfig) {
    match limit {
        Ok(limit) => {
            info!("{limit}");
            if let Some(shortfall) = limit.shortfall(config.max_connections as u64) {
                warn!("{shortfall}");
            }
        }
        Err(e) => warn!("cannot raise the descriptor limit to the hard limit: {e}"),
    }
}

/// A `listening on` line per listener on stdout, in order (then, with `--metrics`, where
/// the metrics are), flushed at once for whoever waits for them, all before any listener
/// is served.
fn announce(server: &Server) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    for addr in server.local_addrs() {
        writeln!(stdout, "listening on {addr}")?;
    }
    if let Some(metrics) = server.metrics_addr() {
        writeln!(stdout, "metrics on http://{metrics}/metrics")?;
    }
    stdout.flush()?;
    Ok(())
}

/// Write `--summary-json` if asked (whatever the outcome), then pass the outcome on.
fn finish(
    args: &ServeArgs,
    summary: &Summary,
    result: Result<(), Error>,
    shutdown: &ShutdownHandle,
) -> Result<(), Error> {
    let Some(path) = &args.summary_json else { return result };
    let reason = match (&result, shutdown.stop_cause()) {
        (Err(e), _) => ExitReason::Error(format!("{e:#}")),
        (Ok(()), Some(cause @ StopCause::Signal(_))) => ExitReason::Signal(cause.name()),
        (Ok(()), _) => ExitReason::Shutdown,
    };
    match (echoloop::write_summary_json(path, summary, &reason), result) {
        (Ok(()), result) => result,
        (Err(e), Ok(())) => Err(Error::Io(e)),
        (Err(e), Err(first)) => {
            warn!("{e}");
            Err(first) // the failure that ended the server is the one to report
        }
    }
}

/// Read the socket-activation variables and unset them, so that no program we might start
/// takes our sockets for its own (see `sd_listen_fds(3)`, "unset_environment").
fn take_activation_env() -> ActivationEnv {
    let env = ActivationEnv::from_env();
    for var in echoloop::LISTEN_VARS {
        // SAFETY: `start` calls this before any thread exists (the signal thread comes
        // later), so no other thread can be reading or writing the environment.
        unsafe { std::env::remove_var(var) };
    }
    env
}

/// `echoloop manpage`: the page on stdout, or into `dir/echoloop.1`.
fn manpage(dir: Option<&Path>) -> io::Result<()> {
    let page = manpage::render(Cli::command())?;
    match dir {
        Some(dir) => {
            let path = dir.join("echoloop.1");
            std::fs::write(&path, page)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
        }
        None => match io::stdout().lock().write_all(page.as_bytes()) {
            // `echoloop manpage | head`: the reader went away; not an error for a filter.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        },
    }
}
