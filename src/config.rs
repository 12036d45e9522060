//! `ServerConfig`: the limits every model shares, so a comparison between models measures the
//! I/O model and nothing else. The CLI converts into this type; no clap type leaks past it.
//!
//! The type is `#[non_exhaustive]`, so a new setting is not a breaking change: outside this
//! crate a config starts from [`ServerConfig::new`] (or `default()`) and changes what it
//! needs with the `with_*` methods, or by assigning a field.

use std::net::SocketAddr;
use std::time::Duration;

use crate::addr::{ListenAddr, first_repeated};
use crate::framing::{Framer, Framing};

/// Which I/O model serves the connections. (With the `cli` feature, `clap::ValueEnum` gives
/// the command line the kebab-case names, `event-loop`, `thread-per-conn`, `blocking`,
/// `io-uring`, and each doc line as help.) More models may come, so a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum Model {
    /// One thread, one `mio::Poll`, every connection in a slab (per worker with `workers > 1`).
    #[default]
    EventLoop,
    /// One OS thread per connection over blocking `std::net` sockets.
    ThreadPerConn,
    /// One connection at a time on the accepting thread.
    Blocking,
    /// One thread, one io_uring: completions instead of readiness (Linux).
    IoUring,
}

impl Model {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Model::EventLoop => "event-loop",
            Model::ThreadPerConn => "thread-per-conn",
            Model::Blocking => "blocking",
            Model::IoUring => "io-uring",
        }
    }
}

/// How the io-uring model receives (`--uring-recv`). Each step asks the kernel for more per
/// request; `Auto` takes the most this kernel offers. (With the `cli` feature the command line
/// names them `auto`, `single`, `multishot`, `bundle`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum UringRecv {
    /// `bundle` where the kernel has it, else `multishot`, else `single`.
    #[default]
    Auto,
    /// One recv per completion, armed again each time (any kernel the model runs on).
    Single,
    /// One multishot recv, capped at the room under --max-pending (Linux 6.17).
    Multishot,
    /// Multishot, each completion a bundle of buffers (Linux 6.17).
    Bundle,
}

impl UringRecv {
    /// The name used on the command line and in the logs.
    pub fn name(self) -> &'static str {
        match self {
            UringRecv::Auto => "auto",
            UringRecv::Single => "single",
            UringRecv::Multishot => "multishot",
            UringRecv::Bundle => "bundle",
        }
    }
}

/// Everything a server needs to know before it binds.
///
/// ```
/// use std::time::Duration;
/// use echoloop::{Model, ServerConfig};
///
/// let config = ServerConfig::new("127.0.0.1:0".parse()?)
///     .with_model(Model::ThreadPerConn)
///     .with_idle_timeout(Some(Duration::from_secs(30)));
/// assert_eq!(config.validate(), Ok(()));
/// # Ok::<(), echoloop::AddrParseError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen: one or more addresses of any kind (TCP, Unix, UDP), all served by
    /// one process, in this order.
    pub addrs: Vec<ListenAddr>,
    /// Which I/O model serves connections.
    pub model: Model,
    /// Independent loops sharing the port through SO_REUSEPORT (event loop and io-uring: one
    /// ring, and its own receive buffers, per worker).
    pub workers: usize,
    /// Live connections at once, over every listener (per worker with `workers > 1`); more
    /// are accepted and closed at once.
    pub max_connections: usize,
    /// Close a connection after this long without any bytes moving; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Per connection, the most bytes read but not yet echoed (the backpressure cap).
    pub max_pending: usize,
    /// SO_SNDBUF for accepted sockets; `None` leaves the kernel default.
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF for accepted sockets; `None` leaves the kernel default.
    pub recv_buffer: Option<usize>,
    /// How long a shutdown waits for pending echoes to flush.
    pub shutdown_grace: Duration,
    /// Log a statistics line this often; `None` = only on SIGUSR1.
    pub stats_interval: Option<Duration>,
    /// How each connection's byte stream is cut into messages (`raw`: not at all).
    pub framing: Framing,
    /// The largest frame: a line with its `\n`, or a length frame's payload.
    pub max_frame: usize,
    /// io-uring only: receive buffers in the provided-buffer ring, a power of two up to
    /// 32768 (the kernel's limit). A buffer is out of the ring for a loop turn at most, so
    /// this bounds the recvs completing in one turn, not the connections: 2000 busy
    /// connections never found 256 empty (docs/results/2026-11-30-io-uring.md), and a recv
    /// that does is simply armed again.
    pub uring_buffers: usize,
    /// io-uring only: bytes per receive buffer, the most one recv brings. The default is
    /// the event loop's 64 KiB read, so a bulk transfer takes as few recvs (16 KiB buffers
    /// cost the bulk scenario about a third more CPU per message). The kernel takes buffers
    /// in ring order, so in time every one is touched: `uring_buffers * uring_buffer_size`
    /// is a fixed cost (16 MiB by default), whatever the number of connections.
    pub uring_buffer_size: usize,
    /// io-uring only: how connections receive: one recv per completion, or one multishot
    /// recv (in bundles) capped by the kernel at the room under the cap (docs/models.md).
    pub uring_recv: UringRecv,
    /// UDP only: datagrams received or sent per system call (`recvmmsg`/`sendmmsg`), 1 to
    /// 64. Each of the batch's receive slots is 64 KiB, touched only as datagrams fill it.
    pub udp_batch: usize,
    /// UDP only: let the kernel join a train of equal-sized datagrams from one sender into
    /// one receive (GRO) and split the echoed train again (GSO), where it can.
    pub udp_offload: bool,
    /// Every connection of a stream listener begins with a PROXY protocol header (v1 or
    /// v2), as a load balancer sends it: consumed, never echoed, and the client it names is
    /// the one logged.
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: how long a connection has, from its accept, to send its whole
    /// header; then it is closed and counted as refused.
    pub proxy_timeout: Duration,
    /// Serve Prometheus metrics (`/metrics`) and health checks (`/livez`, `/readyz`) over
    /// HTTP at this address, from a thread of their own; `None` = off.
    pub metrics: Option<SocketAddr>,
    /// On SIGINT/SIGTERM, first a drain of up to this long: `/readyz` answers 503 while
    /// everything else goes on, ended early when no connection is open; then the stop.
    /// Zero: stop at once.
    pub drain: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addrs: vec![crate::addr::DEFAULT_ADDR.parse().expect("the default address parses")],
            model: Model::EventLoop,
            workers: 1,
            max_connections: 10_000,
            idle_timeout: None,
            max_pending: 64 * 1024,
            send_buffer: None,
            recv_buffer: None,
            shutdown_grace: Duration::from_secs(5),
            stats_interval: None,
            framing: Framing::Raw,
            max_frame: 64 * 1024,
            uring_buffers: 256,
            uring_buffer_size: 64 * 1024,
            uring_recv: UringRecv::Auto,
            udp_batch: 64,
            udp_offload: true,
            proxy_protocol: false,
            proxy_timeout: Duration::from_secs(5),
            metrics: None,
            drain: Duration::ZERO,
        }
    }
}

/// `with_field(value)` methods that set one field each, so that a config outside this crate
/// (where `#[non_exhaustive]` forbids struct literals) is still built in one expression.
macro_rules! setters {
    ($($setter:ident => $field:ident: $type:ty),* $(,)?) => {$(
        #[doc = concat!("This, with [`", stringify!($field), "`](Self::", stringify!($field), ") set.")]
        #[must_use]
        pub fn $setter(mut self, $field: $type) -> Self {
            self.$field = $field;
            self
        }
    )*};
}
pub(crate) use setters;

impl ServerConfig {
    /// A default configuration listening on `addr`.
    pub fn new(addr: ListenAddr) -> Self {
        ServerConfig::default().with_addr(addr)
    }

    /// This, listening on `addr` alone.
    #[must_use]
    pub fn with_addr(self, addr: ListenAddr) -> Self {
        self.with_addrs(vec![addr])
    }

    setters! {
        with_addrs => addrs: Vec<ListenAddr>,
        with_model => model: Model,
        with_workers => workers: usize,
        with_max_connections => max_connections: usize,
        with_idle_timeout => idle_timeout: Option<Duration>,
        with_max_pending => max_pending: usize,
        with_send_buffer => send_buffer: Option<usize>,
        with_recv_buffer => recv_buffer: Option<usize>,
        with_shutdown_grace => shutdown_grace: Duration,
        with_stats_interval => stats_interval: Option<Duration>,
        with_framing => framing: Framing,
        with_max_frame => max_frame: usize,
        with_uring_buffers => uring_buffers: usize,
        with_uring_buffer_size => uring_buffer_size: usize,
        with_uring_recv => uring_recv: UringRecv,
        with_udp_batch => udp_batch: usize,
        with_udp_offload => udp_offload: bool,
        with_proxy_protocol => proxy_protocol: bool,
        with_proxy_timeout => proxy_timeout: Duration,
        with_metrics => metrics: Option<SocketAddr>,
        with_drain => drain: Duration,
    }

    /// The framing with its limit, as a connection uses it.
    pub fn framer(&self) -> Framer {
        Framer::new(self.framing, self.max_frame)
    }

    /// The most bytes a connection may hold, read but not yet echoed: `max_pending`, or one
    /// whole frame if that is more. A frame is echoed only once whole, so a connection must
    /// be able to hold one (`--max-frame` plus, for `length`, its 4-byte prefix); otherwise
    /// a frame under the limit could stall forever half-read.
    pub fn connection_cap(&self) -> usize {
        self.max_pending.max(self.framer().frame_bound())
    }

    /// Reject combinations that cannot work, with a message that names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        if self.workers > 1 && !matches!(self.model, Model::EventLoop | Model::IoUring) {
            return Err(format!(
                "--workers applies to the event-loop and io-uring models, not {}",
                self.model.name()
            ));
        }
        if self.stats_interval.is_some_and(|interval| interval < MIN_STATS_INTERVAL) {
            return Err(format!(
                "--stats-interval must be 0 (off) or at least {:?}: a line per {:?} would flood the log",
                MIN_STATS_INTERVAL,
                self.stats_interval.unwrap_or_default()
            ));
        }
        self.validate_addrs()?;
        self.validate_uring_buffers()?;
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_pending == 0 {
            return Err("--max-pending must be at least 1 byte".into());
        }
        if self.max_frame == 0 {
            return Err("--max-frame must be at least 1 byte".into());
        }
        if self.framing == Framing::Length && self.max_frame as u64 > u64::from(u32::MAX) {
            return Err(format!(
                "--max-frame {} is more than a 4-byte length can declare ({})",
                self.max_frame,
                u32::MAX
            ));
        }
        for (flag, size) in [("--max-pending", self.max_pending), ("--max-frame", self.max_frame)] {
            if let Some(memory) = physical_memory().filter(|&memory| size as u64 > memory) {
                return Err(format!(
                    "{flag} {size} is more than this machine's memory ({memory} bytes), for one connection"
                ));
            }
        }
        for (flag, size) in [("--send-buffer", self.send_buffer), ("--recv-buffer", self.recv_buffer)] {
            if size.is_some_and(|size| size > MAX_SOCKET_BUFFER) {
                return Err(format!(
                    "{flag} {} is more than the kernel accepts ({MAX_SOCKET_BUFFER} bytes: it keeps twice \
                     the value in an int)",
                    size.unwrap_or_default()
                ));
            }
        }
        Ok(())
    }
}

impl ServerConfig {
    /// `--uring-buffers` and `--uring-buffer-size`: for the io-uring model only, a ring the
    /// kernel accepts, and a pool this machine can hold (in time every buffer is touched).
    fn validate_uring_buffers(&self) -> Result<(), String> {
        let defaults = ServerConfig::default();
        let (count, size) = (self.uring_buffers, self.uring_buffer_size);
        if self.model != Model::IoUring
            && (count, size) != (defaults.uring_buffers, defaults.uring_buffer_size)
        {
            return Err(format!(
                "--uring-buffers and --uring-buffer-size apply to the io-uring model, not {}",
                self.model.name()
            ));
        }
        if self.model != Model::IoUring && self.uring_recv != defaults.uring_recv {
            return Err(format!("--uring-recv applies to the io-uring model, not {}", self.model.name()));
        }
        if !count.is_power_of_two() || count > MAX_URING_BUFFERS {
            return Err(format!(
                "--uring-buffers {count}: the kernel's buffer ring takes a power of two, 1 to {MAX_URING_BUFFERS}"
            ));
        }
        if size == 0 || size as u64 > u64::from(u32::MAX) {
            return Err(format!(
                "--uring-buffer-size {size}: expected 1 byte to {} (a recv's length is 32 bits)",
                u32::MAX
            ));
        }
        let pool = (count as u64).saturating_mul(size as u64);
        if let Some(memory) = physical_memory().filter(|&memory| pool > memory) {
            return Err(format!(
                "--uring-buffers {count} x --uring-buffer-size {size} is {pool} bytes, more than this \
                 machine's memory ({memory} bytes)"
            ));
        }
        Ok(())
    }

    /// At least one address, none twice; with `--workers`, none that SO_REUSEPORT cannot
    /// share (a Unix path); UDP without framing.
    fn validate_addrs(&self) -> Result<(), String> {
        if self.addrs.is_empty() {
            return Err("no address to listen on".into());
        }
        if let Some(addr) = first_repeated(&self.addrs) {
            return Err(format!("{addr} is given twice: each address is one listener"));
        }
        let unix = self.addrs.iter().find(|addr| matches!(addr, ListenAddr::Unix(_)));
        if let Some(unix) = unix.filter(|_| self.workers > 1) {
            return Err(format!(
                "--workers {} needs TCP or UDP addresses: SO_REUSEPORT does not apply to {unix}",
                self.workers
            ));
        }
        if self.addrs.iter().any(|addr| matches!(addr, ListenAddr::Udp(_))) {
            self.validate_udp()?;
        }
        self.validate_proxy_protocol()
    }

    /// `--proxy-protocol`: a stream listener to apply to (a datagram carries no header), and
    /// a time limit.
    fn validate_proxy_protocol(&self) -> Result<(), String> {
        if !self.proxy_protocol {
            return Ok(());
        }
        if self.addrs.iter().all(|addr| matches!(addr, ListenAddr::Udp(_))) {
            return Err(format!(
                "--proxy-protocol applies to stream listeners: {} carries no PROXY header",
                self.addrs[0]
            ));
        }
        if self.proxy_timeout.is_zero() {
            return Err("--proxy-timeout must be more than 0 seconds".into());
        }
        Ok(())
    }

    /// A `udp:` address: no stream to frame, and a batch the kernel takes.
    fn validate_udp(&self) -> Result<(), String> {
        if self.framing != Framing::Raw {
            return Err(format!(
                "--framing {} applies to streams: over UDP every datagram is already one message",
                self.framing.name()
            ));
        }
        if !(1..=64).contains(&self.udp_batch) {
            return Err(format!("--udp-batch {} must be between 1 and 64", self.udp_batch));
        }
        Ok(())
    }
}

/// The shortest `--stats-interval` (other than 0, off): ten lines a second.
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(100);

/// The most buffers a provided-buffer ring may hold (the kernel refuses 65536 and more;
/// rings are powers of two).
const MAX_URING_BUFFERS: usize = 32768;

/// The largest SO_SNDBUF / SO_RCVBUF value the kernel can store: it doubles the value (for
/// its bookkeeping) into a C `int`. The kernel also caps it at net.core.wmem_max /
/// rmem_max; the server warns at start-up when that cap applies (see `net::SocketOptions`).
const MAX_SOCKET_BUFFER: usize = (i32::MAX / 2) as usize;

/// This machine's physical memory in bytes, if the system says.
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system constants; it has no memory-safety preconditions.
    let (pages, page_size) =
        unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    let pages = u64::try_from(pages).ok()?;
    let page_size = u64::try_from(page_size).ok()?;
    pages.checked_mul(page_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn workers_need_tcp_and_a_loop_model() {
        let mut config = ServerConfig::new("unix:/tmp/x.sock".parse().unwrap());
        config.workers = 2;
        assert!(config.validate().unwrap_err().contains("SO_REUSEPORT"));
        let mut config = ServerConfig::default().with_addrs(addrs(&["1", "udp:1"]));
        config.workers = 2;
        assert_eq!(config.validate(), Ok(()), "every worker gets a TCP and a UDP socket");
        let mut config = ServerConfig { workers: 2, model: Model::Blocking, ..Default::default() };
        assert!(config.validate().unwrap_err().contains("blocking"));
        config.workers = 0;
        assert!(config.validate().unwrap_err().contains("at least 1"));
    }

    #[test]
    fn limits_beyond_the_machine_are_rejected_with_the_flag() {
        let config = ServerConfig { max_pending: usize::MAX, ..Default::default() };
        assert!(config.validate().unwrap_err().contains("--max-pending"));
        let config = ServerConfig { send_buffer: Some(1 << 32), ..Default::default() };
        assert!(config.validate().unwrap_err().contains("--send-buffer 4294967296"));
        let config = ServerConfig { recv_buffer: Some(MAX_SOCKET_BUFFER + 1), ..Default::default() };
        assert!(config.validate().unwrap_err().contains("--recv-buffer"));
        let config = ServerConfig { send_buffer: Some(MAX_SOCKET_BUFFER), ..Default::default() };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_connection_can_always_hold_one_whole_frame() {
        let config =
            ServerConfig { framing: Framing::Length, max_pending: 100, max_frame: 100, ..Default::default() };
        assert_eq!(config.connection_cap(), 104);
        let config =
            ServerConfig { framing: Framing::Line, max_pending: 1000, max_frame: 100, ..Default::default() };
        assert_eq!(config.connection_cap(), 1000);
        let config = ServerConfig { max_pending: 10, max_frame: 100, ..Default::default() };
        assert_eq!(config.connection_cap(), 10, "raw framing holds no frames");
    }

    #[test]
    fn frame_limits_are_checked() {
        let config = ServerConfig { max_frame: 0, ..Default::default() };
        assert!(config.validate().unwrap_err().contains("--max-frame"));
        let config = ServerConfig { framing: Framing::Length, max_frame: 1 << 32, ..Default::default() };
        assert!(config.validate().unwrap_err().contains("4-byte length"));
        let config = ServerConfig { max_frame: usize::MAX, ..Default::default() };
        assert!(config.validate().unwrap_err().contains("memory"));
    }

    #[test]
    fn udp_is_served_by_every_model_and_without_framing() {
        let udp = ServerConfig::new("udp:0".parse().unwrap());
        assert_eq!(udp.validate(), Ok(()));
        for model in [Model::ThreadPerConn, Model::Blocking, Model::IoUring] {
            assert_eq!(ServerConfig { model, ..udp.clone() }.validate(), Ok(()));
        }
        let config = ServerConfig { model: Model::IoUring, ..udp.clone() }.with_addrs(addrs(&["1", "udp:2"]));
        assert_eq!(config.validate(), Ok(()), "io-uring serves streams and datagrams in one ring");
        let config = ServerConfig { workers: 2, ..udp.clone() };
        assert_eq!(config.validate(), Ok(()));
        let config = ServerConfig { framing: Framing::Line, ..udp.clone() };
        assert!(config.validate().unwrap_err().contains("--framing line"));
        for batch in [0, 65] {
            let config = ServerConfig { udp_batch: batch, ..udp.clone() };
            assert!(config.validate().unwrap_err().contains("--udp-batch"), "{batch}");
        }
        assert_eq!(ServerConfig { udp_batch: 1, udp_offload: false, ..udp.clone() }.validate(), Ok(()));
        let config = ServerConfig { proxy_protocol: true, ..udp.clone() };
        assert!(config.validate().unwrap_err().contains("--proxy-protocol applies to stream listeners"));
        let config = ServerConfig { proxy_protocol: true, ..udp }.with_addrs(addrs(&["1", "udp:2"]));
        assert_eq!(config.validate(), Ok(()), "the stream listener takes the header, the UDP one not");
    }

    fn addrs(list: &[&str]) -> Vec<ListenAddr> {
        list.iter().map(|addr| addr.parse().unwrap()).collect()
    }

    #[test]
    fn addresses_are_listed_once_each() {
        let config = ServerConfig::default().with_addrs(addrs(&["7007", "udp:7007", "unix:/tmp/e.sock"]));
        assert_eq!(config.validate(), Ok(()));
        let config = ServerConfig::default().with_addrs(addrs(&["7007", "udp:7007", "127.0.0.1:7007"]));
        assert_eq!(
            config.validate().unwrap_err(),
            "127.0.0.1:7007 is given twice: each address is one listener"
        );
        assert!(ServerConfig::default().with_addrs(Vec::new()).validate().is_err());
    }

    #[test]
    fn a_stats_interval_that_would_flood_the_log_is_refused() {
        let config = ServerConfig { stats_interval: Some(Duration::from_micros(1)), ..Default::default() };
        assert!(config.validate().unwrap_err().contains("--stats-interval"));
        let config = ServerConfig { stats_interval: Some(MIN_STATS_INTERVAL), ..Default::default() };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn io_uring_frames_as_the_other_models_do() {
        for framing in [Framing::Raw, Framing::Line, Framing::Length] {
            let config = ServerConfig { model: Model::IoUring, framing, ..Default::default() };
            assert_eq!(config.validate(), Ok(()), "{framing:?}");
        }
    }

    #[test]
    fn uring_buffers_are_checked_and_only_for_io_uring() {
        let uring = ServerConfig { model: Model::IoUring, ..Default::default() };
        let config = ServerConfig { uring_buffers: 4, uring_buffer_size: 2048, ..uring.clone() };
        assert_eq!(config.validate(), Ok(()));
        for bad in [0, 3, 1000, 65536] {
            let config = ServerConfig { uring_buffers: bad, ..uring.clone() };
            assert!(config.validate().unwrap_err().contains(&format!("--uring-buffers {bad}:")), "{bad}");
        }
        let config = ServerConfig { uring_buffer_size: 1 << 32, ..uring.clone() };
        assert!(config.validate().unwrap_err().contains("--uring-buffer-size 4294967296"));
        let config = ServerConfig { uring_buffers: 32768, uring_buffer_size: u32::MAX as usize, ..uring };
        if physical_memory().is_some() {
            assert!(config.validate().unwrap_err().contains("more than this machine's memory"));
        }
        let config = ServerConfig { uring_buffers: 64, ..Default::default() };
        assert!(config.validate().unwrap_err().contains("apply to the io-uring model, not event-loop"));
        let config = ServerConfig { uring_recv: UringRecv::Single, ..Default::default() };
        assert!(config.validate().unwrap_err().contains("--uring-recv applies to the io-uring model"));
        let config =
            ServerConfig { model: Model::IoUring, uring_recv: UringRecv::Bundle, ..Default::default() };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn zero_limits_are_rejected() {
        let config =
            ServerConfig { proxy_protocol: true, proxy_timeout: Duration::ZERO, ..Default::default() };
        assert!(config.validate().unwrap_err().contains("--proxy-timeout"));
        let config = ServerConfig { max_pending: 0, ..Default::default() };
        assert!(config.validate().is_err());
        let config = ServerConfig { max_connections: 0, ..Default::default() };
        assert!(config.validate().is_err());
    }
}
