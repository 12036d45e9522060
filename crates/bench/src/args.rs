//! The `echoloop bench` command line (clap derive; each `///` is the `--help` text), and its
//! translation into a single run or a comparison. A binary embeds [`BenchArgs`] as its
//! subcommand and hands it to [`crate::run()`] with the servers `--compare` may start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::compare::CompareOptions;
use crate::error::Error;
use crate::findmax::Slo;
use crate::framing::{Framing, Sizes};
use crate::intervals::IntervalOptions;
use crate::proxy::ProxyVersion;
use crate::run::{ChaosOptions, Load};
use crate::scenario::Scenario;
use crate::server::{self, Catalog, ServerSpec};
use crate::single::{Mode, SingleOptions};
use crate::source::Sources;
use crate::target::{Address, DEFAULT_TARGET};

/// `echoloop bench`: load a server and measure it, verifying every echoed byte; or, with
/// `--compare`, start each server in turn and put the same scenarios on each.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The server to load, on this machine or another: HOST:PORT, [V6]:PORT, PORT
    /// (127.0.0.1:PORT), NAME:PORT (resolved once, before connecting), unix:PATH, or
    /// udp:HOST:PORT (an RFC 862 UDP echo service). Not used with --compare, which starts
    /// its own servers.
    #[arg(default_value = DEFAULT_TARGET)]
    addr: Address,
    /// Connections to open (one at a time, each answering a 1-byte ping before the next);
    /// churn: connections at once; UDP: sockets.
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Bytes per message (K/M suffixes: 128, 4K, 64KiB), or MIN-MAX for sizes drawn evenly
    /// from that range, message by message (1-64K).
    #[arg(long, value_name = "BYTES|MIN-MAX", default_value = "128", value_parser = parse_sizes)]
    size: Sizes,
    /// How messages are framed: raw bytes, lines ending in \n (--size counts the \n), or a
    /// 4-byte big-endian length then the payload (--size counts the payload). Every echoed
    /// frame is checked whole. For servers run with `serve --framing`.
    #[arg(long, value_enum, default_value_t = Framing::Raw)]
    framing: Framing,
    /// Messages in flight per connection (closed loop: the next is sent when an echo is back).
    #[arg(long, value_name = "K", default_value_t = 1, conflicts_with = "rate",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pipeline: u32,
    /// UDP, closed loop: send datagrams in trains of N (each one send the kernel splits,
    /// where it can: GSO), a new train once N have been answered. At most --pipeline.
    #[arg(long, value_name = "N", conflicts_with_all = ["rate", "compare"],
          value_parser = clap::value_parser!(u32).range(1..=64))]
    train: Option<u32>,
    /// Open loop: R messages per second over all connections (K/M suffixes: 50K), each sent
    /// when due whether or not earlier echoes are back; latency counts from the due time
    /// (as wrk2 -R). In --mode churn, connections per second. With --find-max, the first
    /// rate tried.
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Seconds measured (decimals allowed); in --mode idle, how long to hold the connections.
    /// Default 5, or 2 per scenario with --compare.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Seconds of load before measuring starts. Default 1, or 0.5 per scenario with --compare.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    warmup: Option<Duration>,
    /// Load-generator threads, each a mio event loop over its share of the connections.
    /// Give the generator more cores than the server has: each thread's CPU use is
    /// reported, and a thread at 95% marks the run invalid.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Pin the load generator's threads, thread i to the i-th of CPUS, round robin (CPUS:
    /// 1,3 or 2-3). With --compare, bare: every server on CPU 0 and the load generator on
    /// CPU 1; with CPUS: every server on CPU 0 and the generator's threads on CPUS.
    #[arg(long, value_name = "CPUS", num_args = 0..=1)]
    pin: Option<Option<Cpus>>, // spelled out: clap recognises `Option<Option<_>>` only literally
    /// Find the highest open-loop rate the server sustains: step --rate (each step one
    /// --warmup and one --duration) up, then by bisection, to the highest rate at which at
    /// least 99% of it is answered and --slo holds; 12 steps at most. With --compare, each
    /// server's, in each echo scenario (default: small-many).
    #[arg(long, requires = "slo", conflicts_with_all = ["pipeline", "mode", "hdr_log", "csv", "interval"])]
    find_max: bool,
    /// With --find-max: the latency objective, PERCENTILE=DURATION (p50, p90, p99 or p999;
    /// us, ms or s), as in p99=2ms.
    #[arg(long, value_name = "pNN=DUR", requires = "find_max")]
    slo: Option<Slo>,
    /// Write the measured round trips as an HdrHistogram interval log (V2: one compressed
    /// histogram per --interval, in nanoseconds), for HdrHistogram's own tools.
    #[arg(long, value_name = "PATH")]
    hdr_log: Option<PathBuf>,
    /// Write one CSV row per --interval: time_s, sent, echoed, msgs_per_s, p50_us, p99_us,
    /// p999_us, max_us, errors.
    #[arg(long, value_name = "PATH")]
    csv: Option<PathBuf>,
    /// Seconds per interval of --hdr-log and --csv (default 1); also prints a line per
    /// interval while the run goes, when stderr is a terminal.
    #[arg(long, value_name = "SECS", value_parser = parse_interval)]
    interval: Option<Duration>,
    /// echo: keep messages flowing and measure; idle: open the connections, hold them, and
    /// report how many succeeded (for memory-per-connection studies); churn: connect, echo
    /// one message, close, again and again; chaos: the echo clients beside hostile ones,
    /// with the server's memory and descriptors watched.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// One connect and its first echo give up after SECS; UDP: a datagram unanswered for
    /// SECS is lost.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    connect_timeout: Duration,
    /// With --mode chaos: clients of each hostile kind (reset, half-close, connect-close,
    /// slow-bytes, never-read, send-close).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    hostile: Option<u16>,
    /// The server's process ID: its CPU use is reported, and --mode chaos watches its
    /// memory and descriptors (without it, chaos looks for the process listening on ADDR).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Begin each connection with a PROXY protocol header naming its own ends (v1 text or
    /// v2 binary), as a load balancer would, for a server run with `serve --proxy-protocol`.
    /// Stream targets only; the hostile clients of --mode chaos send none.
    #[arg(long, value_enum, value_name = "VERSION")]
    proxy_protocol: Option<ProxyVersion>,
    /// Open the TCP connections from these local addresses, in turn: 127.0.0.2-127.0.0.20,
    /// or a list (127.0.0.2,127.0.0.3). Each address has its own ephemeral ports toward the
    /// server, so N addresses hold N times the connections (bound with
    /// IP_BIND_ADDRESS_NO_PORT; every 127.x.y.z is local on Linux).
    #[arg(long, value_name = "ADDRS")]
    source: Option<Sources>,
    /// With --mode idle: N of the connections echo at --rate (with --size, for --duration)
    /// while the rest stay idle; their latency is reported.
    #[arg(long, value_name = "N", requires = "rate")]
    active: Option<u32>,
    /// Busy-poll instead of sleeping in epoll_wait: round trips then exclude the load
    /// generator's own wake-up, at the price of a whole CPU.
    #[arg(long)]
    spin: bool,
    /// Print the report as JSON on stdout (instead of text), or with PATH write it there
    /// (after ADDR, or as --json=PATH, so that ADDR is not taken for the PATH).
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    json: Option<Option<PathBuf>>, // spelled out: clap recognises `Option<Option<_>>` only literally
    /// Start each server (by default every model: event-loop, event-loop with 2 workers,
    /// thread-per-conn, blocking, io-uring) on a free port, run every scenario against each,
    /// and print one side-by-side table.
    #[arg(long, conflicts_with_all = ["addr", "connections", "size", "pipeline", "mode", "spin", "rate",
                                      "framing", "hostile", "server_pid", "hdr_log", "csv", "interval",
                                      "proxy_protocol", "source", "active"])]
    compare: bool,
    /// With --compare: which servers, by name, comma separated (default: all).
    #[arg(long, value_name = "NAMES", value_delimiter = ',', requires = "compare")]
    models: Vec<String>,
    /// With --compare: one more server, NAME='COMMAND ARGS', where {addr} in the command
    /// stands for the 127.0.0.1:PORT it must listen on, or {host} and {port} for its parts
    /// (split like a shell would, but run without one). Repeatable; --models can name it.
    #[arg(long = "server", value_name = "NAME=CMD", requires = "compare", value_parser = parse_server)]
    servers: Vec<ServerSpec>,
    /// With --compare: also the reference servers peer-epoll (a bare epoll loop) and
    /// peer-tokio, from the directory of this binary (or of --server-exe).
    #[arg(long, requires = "compare")]
    references: bool,
    /// With --compare: which scenarios, comma separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', requires = "compare")]
    scenarios: Vec<Scenario>,
    /// With --compare: run every cell R times, interleaved (A B C A B C), and show each
    /// cell's median round; worth it on a noisy machine.
    #[arg(long, value_name = "R", default_value_t = 1, requires = "compare",
          value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: u16,
    /// With --compare or --find-max: also draw the results as an SVG chart at PATH (with
    /// --find-max, latency against throughput).
    #[arg(long, value_name = "PATH")]
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
            self.single().map(Task::Single)
        }
    }

    fn single(&self) -> Result<SingleOptions, Error> {
        self.check_json_is_not_the_address()?;
        if self.hostile.is_some() && self.mode != Mode::Chaos {
            return Err(Error::Usage("--hostile is for --mode chaos".into()));
        }
        if let Some(train) = self.train
            && (!matches!(self.addr, Address::Udp(_)) || train > self.pipeline)
        {
            return Err(Error::Usage("--train is for udp: targets, and at most --pipeline".into()));
        }
        if self.proxy_protocol.is_some() && matches!(self.addr, Address::Udp(_)) {
            return Err(Error::Usage("--proxy-protocol is for stream targets, not udp:".into()));
        }
        if self.rate.is_some() && self.mode == Mode::Idle && self.active.is_none() {
            return Err(Error::Usage(
                "--rate is for messages or connections; --mode idle sends none (but --active N do)".into(),
            ));
        }
        let active = self.active.unwrap_or(0) as usize;
        if self.active.is_some()
            && (self.mode != Mode::Idle || active == 0 || active >= self.connections as usize)
        {
            return Err(Error::Usage(
                "--active N is for --mode idle, with 0 < N < --connections (N of them echo, the rest stay idle)"
                    .into(),
            ));
        }
        if self.svg.is_some() && !self.find_max {
            return Err(Error::Usage("--svg draws --compare or --find-max".into()));
        }
        let pin = match &self.pin {
            Some(None) => {
                return Err(Error::Usage("--pin takes CPUS without --compare, as in --pin 1".into()));
            }
            Some(Some(cpus)) => cpus.on_this_machine()?,
            None => Vec::new(),
        };
        let load = Load {
            connections: self.connections as usize,
            sizes: self.size,
            framing: self.framing,
            pipeline: self.pipeline as usize,
            rate: self.rate,
            warmup: self.warmup.unwrap_or(Duration::from_secs(1)),
            duration: self.duration.unwrap_or(Duration::from_secs(5)),
            threads: usize::from(self.threads),
            spin: self.spin,
            connect_timeout: self.connect_timeout,
            proxy: self.proxy_protocol,
            pin,
        };
        let chaos =
            ChaosOptions { hostile: usize::from(self.hostile.unwrap_or(2)), server_pid: self.server_pid };
        let train = self.train.map_or(1, |n| n as usize);
        Ok(SingleOptions {
            address: self.addr.clone(),
            mode: self.mode,
            load,
            chaos,
            json: self.json.clone(),
            train,
            intervals: self.intervals(),
            find_max: self.slo,
            svg: self.svg.clone(),
            sources: self.source.clone(),
            active,
        })
    }

    /// `--json 127.0.0.1:9000` (ADDR after `--json`) takes the address for the PATH: the run
    /// then loaded the default target and wrote its report into a file named after the
    /// address. A PATH that reads as an address, with no other ADDR given, is a usage error.
    fn check_json_is_not_the_address(&self) -> Result<(), Error> {
        let Some(Some(path)) = &self.json else { return Ok(()) };
        let Some(text) = path.to_str() else { return Ok(()) };
        let default = DEFAULT_TARGET.parse::<Address>().ok();
        if text.parse::<Address>().is_err() || Some(&self.addr) != default.as_ref() {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "--json took '{text}' for its PATH, and no ADDR is left: put ADDR before --json \
             (bench {text} --json), or name the file with --json=PATH"
        )))
    }

    /// `--hdr-log`, `--csv`, `--interval`, when any is given.
    fn intervals(&self) -> Option<IntervalOptions> {
        if self.hdr_log.is_none() && self.csv.is_none() && self.interval.is_none() {
            return None;
        }
        Some(IntervalOptions {
            every: self.interval.unwrap_or(Duration::from_secs(1)),
            hdr_log: self.hdr_log.clone(),
            csv: self.csv.clone(),
            live: self.interval.is_some(),
        })
    }

    fn comparison(&self, catalog: &Catalog) -> Result<CompareOptions, Error> {
        let scenarios = match (self.scenarios.is_empty(), self.find_max) {
            (true, false) => Scenario::ALL.to_vec(),
            (true, true) => vec![Scenario::SmallMany],
            (false, _) => self.scenarios.clone(),
        };
        if let Some(other) = scenarios.iter().find(|s| self.find_max && !s.is_echo()) {
            return Err(Error::Usage(format!(
                "--find-max searches echo scenarios (latency, small-many, medium, bulk, many), not {}",
                other.name()
            )));
        }
        let mut known = catalog.servers.clone();
        if self.references {
            known.extend(server::present(&catalog.references)?);
        }
        known.extend(self.servers.iter().cloned());
        Ok(CompareOptions {
            servers: server::select(&known, &self.models).map_err(Error::Usage)?,
            scenarios,
            warmup: self.warmup.unwrap_or(Duration::from_millis(500)),
            duration: self.duration.unwrap_or(Duration::from_secs(2)),
            threads: usize::from(self.threads),
            pin: self.pin.is_some(),
            generator_pin: match self.pin.clone().flatten() {
                Some(cpus) => cpus.on_this_machine()?,
                None => Vec::new(),
            },
            rounds: usize::from(self.rounds),
            json: self.json.clone(),
            svg: self.svg.clone(),
            ratio: catalog.ratio.clone(),
            find_max: self.slo,
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

/// `--interval`: seconds, at least 0.01.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let every = parse_secs(s)?;
    if every < Duration::from_millis(10) {
        return Err(format!("'{s}': an interval is at least 0.01 seconds"));
    }
    Ok(every)
}

/// `--pin CPUS`: CPU numbers, comma separated, with ranges: `1`, `1,3`, `2-3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpus(pub Vec<usize>);

impl Cpus {
    /// The CPUs, if this machine has them all.
    fn on_this_machine(&self) -> Result<Vec<usize>, Error> {
        let count = crate::sys::configured_cpus();
        match self.0.iter().find(|cpu| **cpu >= count) {
            Some(cpu) => Err(Error::Usage(format!(
                "--pin: there is no CPU {cpu}; this machine has CPUs 0-{}",
                count - 1
            ))),
            None => Ok(self.0.clone()),
        }
    }
}

impl std::str::FromStr for Cpus {
    type Err = String;

    fn from_str(s: &str) -> Result<Cpus, String> {
        let bad = || format!("'{s}': expected CPU numbers, as in 1 or 1,3 or 2-3");
        let mut cpus = Vec::new();
        for part in s.split(',') {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let (low, high): (usize, usize) =
                (low.trim().parse().map_err(|_| bad())?, high.trim().parse().map_err(|_| bad())?);
            if low > high || high >= libc::CPU_SETSIZE as usize {
                return Err(bad());
            }
            cpus.extend(low..=high);
        }
        Ok(Cpus(cpus))
    }
}

/// `--size`: one size, or `MIN-MAX`.
fn parse_sizes(s: &str) -> Result<Sizes, String> {
    match s.split_once('-') {
        None => parse_size(s).map(Sizes::fixed),
        Some((min, max)) => {
            // 0 is a legal frame length (with --framing length); the load checks the rest.
            let min = if min.trim() == "0" { 0 } else { parse_size(min)? };
            let max = parse_size(max)?;
            if min > max {
                return Err(format!("'{s}': the smaller size comes first (MIN-MAX)"));
            }
            Ok(Sizes { min, max })
        }
    }
}

/// `--rate`: a positive number per second, with an optional K or M (`50K`, `1.5M`).
fn parse_rate(s: &str) -> Result<f64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = lower.strip_suffix('k') {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 1e6)
    } else {
        (lower.as_str(), 1.0)
    };
    let rate =
        number.parse::<f64>().ok().map(|n| n * scale).filter(|r| r.is_finite() && *r > 0.0 && *r <= 1e9);
    rate.ok_or_else(|| format!("'{s}' is not a rate per second above 0 (K and M suffixes: 50K)"))
}

/// `--server NAME=CMD`: the command split as a shell would split it (quotes, escapes), and
/// run without a shell.
fn parse_server(s: &str) -> Result<ServerSpec, String> {
    let (name, command) =
        s.split_once('=').ok_or_else(|| format!("'{s}': expected NAME='COMMAND {{addr}}'"))?;
    let argv = shell_words::split(command).map_err(|e| format!("'{command}': {e}"))?;
    let spec = ServerSpec::new(name.trim(), argv);
    spec.check()?;
    Ok(spec)
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
        Catalog {
            servers: vec![spec("event-loop"), spec("blocking")],
            ratio: None,
            references: vec![ServerSpec::new("peer-epoll", ["/nonexistent/peer-epoll", "{addr}"])],
        }
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
        assert_eq!(options.address, Address::Unix("/tmp/e.sock".into()));
        assert_eq!(
            (options.load.connections, options.load.sizes, options.load.pipeline),
            (3, Sizes::fixed(4096), 1)
        );
        assert_eq!((options.load.rate, options.load.framing), (None, Framing::Raw));
        assert_eq!(options.load.connect_timeout, Duration::from_secs(5));
        assert_eq!(
            (options.load.warmup, options.load.duration),
            (Duration::from_secs(1), Duration::from_secs(5))
        );
        assert_eq!(options.json, Some(None));
        let defaults = parse(&[]).unwrap().single().unwrap();
        assert_eq!(defaults.address.to_string(), DEFAULT_TARGET);
        assert_eq!((defaults.load.connections, defaults.mode), (50, Mode::Echo));
    }

    /// Regression: `bench --json 127.0.0.1:9000` loaded 127.0.0.1:7878 (the default) and
    /// wrote its report into a file named `127.0.0.1:9000`.
    #[test]
    fn json_path_that_is_the_address_is_a_usage_error() {
        for taken in ["127.0.0.1:9000", "9000", "unix:/tmp/e.sock", "udp:[::1]:7", "example.com:7"] {
            let args = parse(&["--json", taken]).unwrap();
            let Err(Error::Usage(message)) = args.single() else { panic!("--json {taken} was accepted") };
            assert!(message.contains(taken) && message.contains("before --json"), "{message}");
        }
        for fine in
            [&["--json", "report.json"][..], &["127.0.0.1:9000", "--json", "9000"], &["--json=x.json"]]
        {
            assert!(parse(fine).unwrap().single().is_ok(), "{fine:?}");
        }
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
        for flags in [&["--models", "blocking"][..], &["--rounds", "2"], &["--slo", "p99=1ms"]] {
            let error = parse(flags).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{flags:?}");
        }
        // Flags whose meaning depends on the rest: usage errors once the task is known.
        for (flags, why) in [(&["--pin"][..], "--pin takes CPUS"), (&["--svg", "x.svg"], "--svg draws")] {
            let Err(error) = parse(flags).unwrap().task(&catalog()) else { panic!("{flags:?}") };
            assert!(error.exit_code() == 2 && error.to_string().starts_with(why), "{error}");
        }
        assert!(parse(&["--compare", "-c", "4"]).is_err());
        assert!(parse(&["--compare", "--server-exe", "/bin/echoloop"]).unwrap().server_exe().is_some());
    }

    #[test]
    fn size_ranges_and_rates_parse() {
        assert_eq!(parse_sizes("1-64K"), Ok(Sizes { min: 1, max: 65536 }));
        assert_eq!(parse_sizes("0-10"), Ok(Sizes { min: 0, max: 10 }));
        assert_eq!(parse_sizes("4K"), Ok(Sizes::fixed(4096)));
        assert!(parse_sizes("10-1").unwrap_err().contains("smaller size comes first"));
        assert!(parse_sizes("1-x").is_err());
        for (input, want) in [
            ("500", Some(500.0)),
            ("50K", Some(50e3)),
            ("1.5m", Some(1.5e6)),
            ("0", None),
            ("-3", None),
            ("fast", None),
        ] {
            assert_eq!(parse_rate(input).ok(), want, "{input}");
        }
    }

    #[test]
    fn udp_trains_fit_in_the_pipeline_and_need_a_udp_target() {
        let trains = parse(&["udp:9000", "--pipeline", "64", "--train", "32"]).unwrap().single().unwrap();
        assert_eq!((trains.train, trains.load.pipeline), (32, 64));
        assert_eq!(parse(&["udp:9000"]).unwrap().single().unwrap().train, 1);
        for args in [&["9000", "--pipeline", "4", "--train", "2"][..], &["udp:9000", "--train", "2"]] {
            let error = parse(args).unwrap().single().unwrap_err();
            assert!(error.to_string().contains("--train is for udp: targets"), "{args:?}: {error}");
        }
        assert!(parse(&["udp:9000", "--rate", "1K", "--train", "2"]).is_err(), "a closed loop only");
    }

    #[test]
    fn open_loop_churn_chaos_and_udp_flags_make_a_single_run() {
        let args =
            parse(&["udp:9000", "--rate", "20K", "--size", "8-100", "--connect-timeout", "0.5"]).unwrap();
        let Ok(Task::Single(options)) = args.task(&catalog()) else { panic!("not a single run") };
        assert_eq!(options.address.to_string(), "udp:127.0.0.1:9000");
        assert_eq!((options.load.rate, options.load.sizes), (Some(20e3), Sizes { min: 8, max: 100 }));
        assert_eq!(options.load.connect_timeout, Duration::from_millis(500));
        let chaos =
            parse(&["--mode", "chaos", "--hostile", "3", "--server-pid", "42"]).unwrap().single().unwrap();
        assert_eq!((chaos.mode, chaos.chaos.hostile, chaos.chaos.server_pid), (Mode::Chaos, 3, Some(42)));
        let framed = parse(&["--mode", "churn", "--framing", "length"]).unwrap().single().unwrap();
        assert_eq!((framed.mode, framed.load.framing), (Mode::Churn, Framing::Length));
        // Open loop has no pipeline; hostile clients belong to chaos.
        assert!(parse(&["--rate", "1K", "--pipeline", "2"]).is_err());
        let Err(error) = parse(&["--hostile", "2"]).unwrap().task(&catalog()) else {
            panic!("hostile without chaos")
        };
        assert_eq!(error.exit_code(), 2);
        assert!(parse(&["--mode", "idle", "--rate", "5"]).unwrap().single().is_err(), "idle sends nothing");
        let crowd = [
            "--mode",
            "idle",
            "-c",
            "300",
            "--active",
            "20",
            "--rate",
            "1K",
            "--source",
            "127.0.0.2-127.0.0.5",
        ];
        let crowd = parse(&crowd).unwrap().single().unwrap();
        assert_eq!((crowd.active, crowd.load.rate), (20, Some(1e3)));
        assert_eq!(crowd.sources.map(|s| s.addrs().len()), Some(4));
        let not_idle = ["--mode", "echo", "--active", "2", "--rate", "5"];
        let all_active = ["--mode", "idle", "-c", "5", "--active", "5", "--rate", "5"];
        for bad in [&not_idle[..], &all_active[..]] {
            assert!(parse(bad).unwrap().single().is_err(), "{bad:?}");
        }
        assert!(parse(&["--mode", "idle", "--active", "5"]).is_err(), "--active needs --rate");
        assert!(parse(&["--source", "127.0.0.9-127.0.0.2"]).is_err());
    }

    #[test]
    fn compare_takes_servers_by_command_line() {
        let args = parse(&[
            "--compare",
            "--server",
            "socat=socat 'TCP-LISTEN:{addr},fork' \"EXEC:cat x\"",
            "--models",
            "socat,blocking",
        ]);
        let Ok(Task::Compare(options)) = args.unwrap().task(&catalog()) else { panic!("not a comparison") };
        let names: Vec<&str> = options.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["socat", "blocking"]);
        assert_eq!(options.servers[0].argv, ["socat", "TCP-LISTEN:{addr},fork", "EXEC:cat x"]);
        let no_addr = parse(&["--compare", "--server", "x=cat"]).unwrap_err();
        assert!(no_addr.to_string().contains("no {addr}"), "{no_addr}");
        assert!(parse(&["--compare", "--server", "x='unclosed {addr}"]).is_err());
        assert!(parse(&["--compare", "--server", "nocommand"]).is_err());
        let taken = parse(&["--compare", "--server", "blocking=srv {addr}"]).unwrap().task(&catalog());
        assert!(matches!(taken, Err(Error::Usage(m)) if m.contains("'blocking' is taken")));
    }

    #[test]
    fn missing_reference_servers_say_how_to_build_them() {
        let args = parse(&["--compare", "--references"]).unwrap();
        let Err(error) = args.task(&catalog()) else { panic!("the peers do not exist") };
        let message = error.to_string();
        assert!(message.contains("/nonexistent/peer-epoll not found"), "{message}");
        assert!(message.contains("cargo build --release --workspace"), "{message}");
        let without = parse(&["--compare"]).unwrap().comparison(&catalog()).unwrap();
        assert!(without.servers.iter().all(|s| !s.name.contains("peer")));
    }

    #[test]
    fn command_is_well_formed() {
        BenchArgs::augment_args(clap::Command::new("bench")).debug_assert();
    }
}
