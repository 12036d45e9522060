//! Command-line definitions (clap derive) and their conversion into the library's types,
//! and nothing else: each `///` is the `--help` text. Part of the binary, not the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use echoloop::{
    ClientOptions, Framing, ListenAddr, Model, ServerAddr, ServerConfig, UringRecv, parse_secs, parse_size,
};

/// An echo server (RFC 862: TCP, Unix and UDP) built as a mio event loop, with the threaded
/// and io_uring models beside it and a load generator to compare them.
#[derive(Debug, Parser)]
#[command(name = "echoloop", version, about)]
pub struct Cli {
    /// More logging: -v debug (connections), -vv trace (every readiness event). Overrides RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Less logging: -q warnings only, -qq errors only. Overrides RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the echo server.
    #[command(after_long_help = SERVE_NOTES)]
    Serve(ServeArgs),
    /// Send stdin to a server and print what comes back (interactive on a terminal;
    /// `echoloop client ADDR < file | cmp - file` holds for any file).
    Client(ClientArgs),
    /// Load a server and measure it, verifying every echoed byte; or, with --compare,
    /// start each I/O model in turn and print a side-by-side table.
    #[cfg(feature = "bench")]
    Bench(Box<echoloop_bench::BenchArgs>),
    /// Print the man page, echoloop(1), on stdout: every command with all of its options
    /// (`echoloop manpage | man -l -`).
    Manpage(ManpageArgs),
    /// Print a shell completion script on stdout.
    Completions(CompletionsArgs),
}

/// The end of `serve --help` (the man page has sections of its own for these).
const SERVE_NOTES: &str = "\
Signals: SIGINT or SIGTERM stops gracefully (after --drain, if set; pending echoes flush for \
--shutdown-grace; a second signal ends a drain, or, while stopping, exits at once with status 130). \
SIGUSR1 logs a statistics line.

Socket activation: started by systemd (or any manager speaking sd_listen_fds), it serves every \
socket passed (listening TCP and Unix stream sockets, bound UDP sockets) instead of binding ADDRs. \
With NOTIFY_SOCKET it tells the manager READY=1, STOPPING=1, each statistics line as STATUS=, and \
WATCHDOG=1 every half of WATCHDOG_USEC. See contrib/systemd.

Exit status: 0 after a graceful stop, 1 on a runtime error (address in use, permission denied), \
2 on a usage error.";

/// `echoloop manpage`.
#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// Write the page to DIR/echoloop.1 instead (for example /usr/local/share/man/man1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `echoloop completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `echoloop serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen, any number of them, served by one process: HOST:PORT, [V6]:PORT,
    /// PORT (= 127.0.0.1:PORT), unix:PATH, or udp:HOST:PORT (the UDP echo; also
    /// udp:[V6]:PORT and udp:PORT). Port 0 lets the OS pick.
    /// [default: 127.0.0.1:7878; with socket activation, the sockets passed in]
    #[arg(value_name = "ADDR")]
    pub addrs: Vec<ListenAddr>,
    /// The I/O model.
    #[arg(long, value_enum, default_value_t = Model::EventLoop)]
    pub model: Model,
    /// Independent loops, each serving every listener, sharing the ports via SO_REUSEPORT
    /// (event-loop and io-uring; TCP and UDP).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// Connections served at once by the whole process (every listener, every worker); more
    /// are accepted and closed at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Close a connection after SECS without any bytes moving (decimals allowed; 0 = off).
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    pub idle_timeout: Duration,
    /// Per connection, bytes read but not yet echoed; at the cap reading pauses (backpressure).
    /// Accepts K/M suffixes (65536, 64K, 1M).
    #[arg(long, value_name = "BYTES", default_value = "65536", value_parser = parse_size)]
    pub max_pending: usize,
    /// SO_SNDBUF for accepted sockets, to make partial writes visible (K/M suffixes).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF for accepted sockets (K/M suffixes).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub recv_buffer: Option<usize>,
    /// On SIGINT/SIGTERM, how long pending echoes may take to flush (decimals allowed).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub shutdown_grace: Duration,
    /// Log a statistics line every SECS (decimals allowed; 0 = off). SIGUSR1 logs one at once.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    pub stats_interval: Duration,
    /// At exit, write the final summary to PATH as JSON (also after an error).
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
    /// How messages are delimited: raw (a byte stream), line (up to and including \n),
    /// length (a 4-byte big-endian length, then the payload). A frame is echoed only whole.
    #[arg(long, value_enum, default_value_t = Framing::Raw)]
    pub framing: Framing,
    /// The largest frame: a line with its \n, a length frame's payload. A bigger one closes
    /// the connection after the frames before it are echoed (K/M suffixes).
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = parse_frame_size)]
    pub max_frame: usize,
    /// io-uring: receive buffers in the ring the kernel fills as bytes arrive, a power of
    /// two up to 32768. They bound the recvs completing in one loop turn, not the connections;
    /// with udp: as many more of 64K + 512 bytes, which bound the replies in flight.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub uring_buffers: usize,
    /// io-uring: bytes per receive buffer, the most one recv brings (K/M suffixes). The
    /// buffers are allocated at start: N x BYTES of memory, used as they fill.
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = parse_size)]
    pub uring_buffer_size: usize,
    /// io-uring: how connections receive: single (a recv per completion, armed again each
    /// time), multishot (one recv that keeps receiving, capped by the kernel at the room
    /// under --max-pending), bundle (multishot, several buffers per completion); auto takes
    /// the most the kernel offers (multishot and bundle need Linux 6.17).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = UringRecv::Auto)]
    pub uring_recv: UringRecv,
    /// UDP: datagrams received or sent per system call (recvmmsg/sendmmsg); 1 = one at a time.
    /// The event loop's (io-uring has a completion per datagram).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub udp_batch: u8,
    /// UDP: let the kernel join trains of equal-sized datagrams into one receive (GRO) and
    /// split the echoed train again (GSO), where it can: on or off.
    #[arg(long, value_name = "on|off", default_value = "on", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub udp_offload: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, and health checks at /livez (the
    /// serving loops turn) and /readyz (503 once a stop begins), from a thread of their own.
    /// HOST:PORT or [V6]:PORT; port 0 lets the OS pick (the `metrics on` line says which).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// On SIGINT/SIGTERM, drain first for up to SECS: /readyz answers 503 (a load balancer
    /// stops sending new connections) while everything goes on as before, ended early when no
    /// connection is open; then stop as usual. A second signal ends the drain.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    pub drain: Duration,
    /// Every connection begins with a PROXY protocol header (v1 or v2, as HAProxy's send-proxy
    /// and send-proxy-v2 write it): consumed, never echoed, and the client it names is the one
    /// logged. A connection without a valid header is closed, nothing echoed. Stream listeners.
    #[arg(long)]
    pub proxy_protocol: bool,
    /// With --proxy-protocol: a connection's whole header must arrive within SECS of its
    /// accept (decimals allowed).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs, requires = "proxy_protocol")]
    pub proxy_timeout: Duration,
}

impl ServeArgs {
    /// The library's config: no clap type goes past this point.
    pub fn to_config(&self) -> ServerConfig {
        let config = match self.addrs.is_empty() {
            true => ServerConfig::default(),
            false => ServerConfig::default().with_addrs(self.addrs.clone()),
        };
        config
            .with_model(self.model)
            .with_workers(usize::from(self.workers))
            .with_max_connections(usize::try_from(self.max_connections).unwrap_or(usize::MAX))
            .with_idle_timeout((!self.idle_timeout.is_zero()).then_some(self.idle_timeout))
            .with_max_pending(self.max_pending)
            .with_send_buffer(self.send_buffer)
            .with_recv_buffer(self.recv_buffer)
            .with_shutdown_grace(self.shutdown_grace)
            .with_stats_interval((!self.stats_interval.is_zero()).then_some(self.stats_interval))
            .with_framing(self.framing)
            .with_max_frame(self.max_frame)
            .with_uring_buffers(self.uring_buffers)
            .with_uring_buffer_size(self.uring_buffer_size)
            .with_uring_recv(self.uring_recv)
            .with_udp_batch(usize::from(self.udp_batch))
            .with_udp_offload(self.udp_offload)
            .with_metrics(self.metrics)
            .with_drain(self.drain)
            .with_proxy_protocol(self.proxy_protocol)
            .with_proxy_timeout(self.proxy_timeout)
    }
}

/// A frame size: [`parse_size`], and at most what a 4-byte length can declare.
pub fn parse_frame_size(s: &str) -> Result<usize, String> {
    let bytes = parse_size(s)?;
    if bytes as u64 > u64::from(u32::MAX) {
        return Err(format!("'{s}' is more than a 4-byte length can declare ({})", u32::MAX));
    }
    Ok(bytes)
}

/// `echoloop client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server, on this machine or another: HOST:PORT, [V6]:PORT, PORT (= 127.0.0.1:PORT),
    /// NAME:PORT, unix:PATH, or udp:HOST:PORT (each stdin line one datagram; each reply
    /// printed).
    pub addr: ServerAddr,
    /// The server's framing: line (stdin's lines are the frames) or length (each stdin read
    /// cut into frames of at most --max-frame bytes). Only whole echoed frames are printed,
    /// payloads without their length.
    #[arg(long, value_enum, default_value_t = Framing::Raw)]
    pub framing: Framing,
    /// With --framing length: the largest frame to send (K/M suffixes).
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = parse_frame_size)]
    pub max_frame: usize,
    /// With udp: how long to wait for each reply before counting the datagram lost.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub timeout: Duration,
    /// How long a TCP connect may take before the client gives up.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub connect_timeout: Duration,
}

impl ClientArgs {
    /// The library's options: no clap type goes past this point.
    pub fn to_options(&self) -> ClientOptions {
        ClientOptions::default()
            .with_framing(self.framing)
            .with_max_frame(self.max_frame)
            .with_reply_timeout(self.timeout)
            .with_connect_timeout(self.connect_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_fit_a_4_byte_length() {
        assert_eq!(parse_frame_size("64K"), Ok(65536));
        assert!(parse_frame_size("4G").unwrap_err().contains("4-byte length"));
        assert!(parse_frame_size("0").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
