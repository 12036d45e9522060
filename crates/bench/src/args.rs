//! The `echoloop bench` command line (clap derive; each `///` is the `--help` text), and its
//! translation into a single run or a comparison. A binary embeds [`BenchArgs`] as its
//! subcommand and hands it to [`crate::run()`] with the servers `--compare` may start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::compare::CompareOptions;
use crate::error::Error;
use crate::run::Load;
use crate::scenario::Scenario;
use crate::server::{self, Catalog};
use crate::single::{Mode, SingleOptions};
use crate::target::{DEFAULT_TARGET, Target};

/// `echoloop bench`: load a server and measure it, verifying every echoed byte; or, with
/// `--compare`, start each server in turn and put the same scenarios on each.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The server to load: HOST:PORT, [V6]:PORT, PORT or unix:PATH, on this machine only
    /// (loopback or a Unix socket). Not used with --compare, which starts its own servers.
    #[arg(default_value = DEFAULT_TARGET)]
    addr: Target,
    /// Connections to open (one at a time, each answering a 1-byte ping before the next).
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Bytes per message (K/M suffixes: 128, 4K, 64KiB).
    #[arg(long, value_name = "BYTES", default_value = "128", value_parser = parse_size)]
    size: usize,
    /// Messages in flight per connection.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pipeline: u32,
    /// Seconds measured (decimals allowed); in --mode idle, how long to hold the connections.
    /// Default 5, or 2 per scenario with --compare.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Seconds of load before measuring starts. Default 1, or 0.5 per scenario with --compare.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    warmup: Option<Duration>,
    /// Load-generator threads, each a mio event loop over its share of the connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// echo: keep messages flowing and measure; idle: open the connections, hold them, and
    /// report how many succeeded (for memory-per-connection studies).
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Busy-poll instead of sleeping in epoll_wait: round trips then exclude the load
    /// generator's own wake-up, at the price of a whole CPU.
    #[arg(long)]
    spin: bool,
    /// Print the report as JSON on stdout (instead of text), or with PATH write it there
    /// (after ADDR, or as --json=PATH, so that ADDR is not taken for the PATH).
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    json: Option<Option<PathBuf>>, // spelled out: clap recognises `Option<Option<_>>` only literally
    /// Start each server (by default every model: event-loop, event-loop with 2 workers,
    /// thread-per-conn, blocking) on a free port, run every scenario against each, and print
    /// one side-by-side table.
    #[arg(long, conflicts_with_all = ["addr", "connections", "size", "pipeline", "mode", "spin"])]
    compare: bool,
    /// With --compare: which servers, by name, comma separated (default: all).
    #[arg(long, value_name = "NAMES", value_delimiter = ',', requires = "compare")]
    models: Vec<String>,
    /// With --compare: which scenarios, comma separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', requires = "compare")]
    scenarios: Vec<Scenario>,
    /// With --compare: run each server on CPU 0 and the load generator on CPU 1.
    #[arg(long, requires = "compare")]
    pin: bool,
    /// With --compare: run every cell R times, interleaved (A B C A B C), and show each
    /// cell's median round; worth it on a noisy machine.
    #[arg(long, value_name = "R", default_value_t = 1, requires = "compare",
          value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: u16,
    /// With --compare: also draw the results as an SVG chart at PATH.
    #[arg(long, value_name = "PATH", requires = "compare")]
    svg: Option<PathBuf>,
    /// With --compare: the echoloop binary to start the servers from (default: this one),
    /// for comparing two builds.
    #[arg(long, value_name = "PATH", requires = "compare")]
    server_exe: Option<PathBuf>,
}

/// What `echoloop bench` was asked to do.
pub(crate) enum Task {
    /// Measure one server that is already running.
    Single(SingleOptions),
    /// Start each server and compare them.
    Compare(CompareOptions),
}

impl BenchArgs {
    /// `--server-exe`: the program the calling binary's own servers are to be started from,
    /// when given. The bench itself starts whatever the [`Catalog`] says.
    pub fn server_exe(&self) -> Option<&Path> {
        self.server_exe.as_deref()
    }

    /// The task: no clap type goes past this point. `Err` when `--models` names a server
    /// the catalog does not have.
    pub(crate) fn task(&self, catalog: &Catalog) -> Result<Task, Error> {
        if self.compare {
            self.comparison(catalog).map(Task::Compare)
        } else {
            Ok(Task::Single(self.single()))
        }
    }

    fn single(&self) -> SingleOptions {
        let load = Load {
            connections: self.connections as usize,
            size: self.size,
            pipeline: self.pipeline as usize,
            warmup: self.warmup.unwrap_or(Duration::from_secs(1)),
            duration: self.duration.unwrap_or(Duration::from_secs(5)),
            threads: usize::from(self.threads),
            spin: self.spin,
        };
        SingleOptions { target: self.addr.clone(), mode: self.mode, load, json: self.json.clone() }
    }

    fn comparison(&self, catalog: &Catalog) -> Result<CompareOptions, Error> {
        let scenarios =
            if self.scenarios.is_empty() { Scenario::ALL.to_vec() } else { self.scenarios.clone() };
        Ok(CompareOptions {
            servers: server::select(&catalog.servers, &self.models).map_err(Error::Usage)?,
            scenarios,
            warmup: self.warmup.unwrap_or(Duration::from_millis(500)),
            duration: self.duration.unwrap_or(Duration::from_secs(2)),
            threads: usize::from(self.threads),
            pin: self.pin,
            rounds: usize::from(self.rounds),
            json: self.json.clone(),
            svg: self.svg.clone(),
            ratio: catalog.ratio.clone(),
        })
    }
}

/// The longest duration a flag takes: about 31 years, so `now + it` never overflows.
const MAX_SECS: f64 = 1e9;

/// Seconds as a decimal number: `5`, `0.25`.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs = s.parse::<f64>().ok().filter(|secs| (0.0..=MAX_SECS).contains(secs));
    secs.and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("'{s}' is not a number of seconds from 0 to {MAX_SECS}"))
}

/// A message size: a number with an optional binary suffix (`128`, `4K`, `64KiB`, `1M`).
/// No G: the load generator refuses messages over 64 MiB anyway.
fn parse_size(s: &str) -> Result<usize, String> {
    const SUFFIXES: [(&str, u32); 8] =
        [("", 0), ("b", 0), ("k", 10), ("kb", 10), ("kib", 10), ("m", 20), ("mb", 20), ("mib", 20)];
    let lower = s.trim().to_ascii_lowercase();
    let (digits, suffix) = lower.split_at(lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len()));
    let Some(&(_, shift)) = SUFFIXES.iter().find(|(name, _)| *name == suffix) else {
        return Err(format!("'{s}': unknown size suffix (use K or M)"));
    };
    let n: usize = digits.parse().map_err(|_| format!("'{s}' is not a byte count"))?;
    match n.checked_mul(1 << shift) {
        Some(0) => Err("must be at least 1 byte".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("'{s}' is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ServerSpec;
    use clap::FromArgMatches;

    /// `echoloop bench ARGS`, parsed as the binary parses them.
    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let command = BenchArgs::augment_args(clap::Command::new("bench"));
        let matches = command.try_get_matches_from(std::iter::once("bench").chain(args.iter().copied()))?;
        BenchArgs::from_arg_matches(&matches)
    }

    fn catalog() -> Catalog {
        let spec = |name: &str| ServerSpec::new(name, ["server", "{addr}"]);
        Catalog { servers: vec![spec("event-loop"), spec("blocking")], ratio: None }
    }

    #[test]
    fn sizes_take_binary_suffixes_up_to_m() {
        let cases = [
            ("128", Some(128)),
            ("4K", Some(4096)),
            ("64KiB", Some(65536)),
            ("1m", Some(1 << 20)),
            ("0", None),
            ("1G", None), // messages stop at 64 MiB
            ("-1", None),
            ("K", None),
            ("99999999999999999999M", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).ok(), want, "{input}");
        }
    }

    #[test]
    fn seconds_are_decimal_and_bounded() {
        let cases = [("0.5", Some(Duration::from_millis(500))), ("0", Some(Duration::ZERO))];
        for (input, want) in cases.into_iter().chain(["-1", "1e19", "NaN", "soon"].map(|bad| (bad, None))) {
            assert_eq!(parse_secs(input).ok(), want, "{input}");
        }
    }

    #[test]
    fn flags_and_defaults_make_a_single_run() {
        let args = parse(&["unix:/tmp/e.sock", "-c", "3", "--size", "4K", "--json"]).unwrap();
        let Ok(Task::Single(options)) = args.task(&catalog()) else { panic!("not a single run") };
        assert_eq!(options.target, Target::Unix("/tmp/e.sock".into()));
        assert_eq!((options.load.connections, options.load.size, options.load.pipeline), (3, 4096, 1));
        assert_eq!(
            (options.load.warmup, options.load.duration),
            (Duration::from_secs(1), Duration::from_secs(5))
        );
        assert_eq!(options.json, Some(None));
        let defaults = parse(&[]).unwrap().single();
        assert_eq!(defaults.target.to_string(), DEFAULT_TARGET);
        assert_eq!((defaults.load.connections, defaults.mode), (50, Mode::Echo));
    }

    #[test]
    fn compare_picks_named_servers_and_scenarios() {
        let args =
            parse(&["--compare", "--models", "blocking", "--scenarios", "latency,idle", "--json=x.json"]);
        let Ok(Task::Compare(options)) = args.unwrap().task(&catalog()) else { panic!("not a comparison") };
        assert_eq!(options.servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["blocking"]);
        assert_eq!(options.scenarios, [Scenario::Latency, Scenario::Idle]);
        assert_eq!((options.warmup, options.duration), (Duration::from_millis(500), Duration::from_secs(2)));
        assert_eq!(options.json, Some(Some(PathBuf::from("x.json"))));
        let all = parse(&["--compare"]).unwrap().comparison(&catalog()).unwrap();
        assert_eq!((all.servers.len(), all.scenarios.len()), (2, Scenario::ALL.len()));
    }

    #[test]
    fn an_unknown_model_is_a_usage_error() {
        let args = parse(&["--compare", "--models", "event-loop,tokio"]).unwrap();
        let Err(error) = args.task(&catalog()) else { panic!("tokio is not in the catalog") };
        assert_eq!(error.exit_code(), 2);
        assert_eq!(error.to_string(), "--models: no server named 'tokio' (known: event-loop, blocking)");
    }

    #[test]
    fn compare_only_flags_need_compare() {
        for flags in [&["--models", "blocking"][..], &["--pin"], &["--rounds", "2"], &["--svg", "x.svg"]] {
            let error = parse(flags).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{flags:?}");
        }
        assert!(parse(&["--compare", "-c", "4"]).is_err());
        assert!(parse(&["--compare", "--server-exe", "/bin/echoloop"]).unwrap().server_exe().is_some());
    }

    #[test]
    fn command_is_well_formed() {
        BenchArgs::augment_args(clap::Command::new("bench")).debug_assert();
    }
}
