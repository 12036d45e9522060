//! `Server`: one entry point for every model, so the CLI, the tests and a program that embeds
//! the library start servers the same way: `Server::bind(&config)?`, read `local_addr()`, keep a
//! `shutdown_handle()`, then `run()` until the handle (or a signal) stops it. The binary
//! uses `Server::bind_with` instead, with a handle whose signal handlers were installed
//! before binding, so a SIGTERM at any moment after start is a graceful stop; or, when the
//! service manager passed it a listening socket, `Server::inherit`, which serves that.
//!
//! While it runs, a reporter thread logs the statistics line (`--stats-interval`, and
//! whenever its [`StatsRequests`] ask: SIGUSR1); [`Server::stats`] reads the same counters
//! from anywhere, for the summary after a failure. With `--metrics`, a thread of its own
//! serves them over HTTP, with the health checks (`crate::metrics`); its socket is bound
//! with the listeners, so [`Server::metrics_addr`] is known before `run`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use log::info;

use crate::addr::ListenAddr;
use crate::blocking::{self, Placement};
use crate::config::{Model, ServerConfig};
use crate::error::Error;
use crate::event_loop::EventLoop;
use crate::framing::Framing;
use crate::listening::Listening;
use crate::metrics;
use crate::net::{self, InheritedSocket, ListenSocket, SocketOptions, UdpBuffers};
use crate::notify::{Notifier, WatchdogTimer};
use crate::shutdown::ShutdownHandle;
use crate::stats::{Counted, Reporter, ServerStats, StatsRequests, Summary};

/// A bound server of any model, ready to run.
pub struct Server {
    /// Every listener's real bound address, in the order given.
    addrs: Vec<ListenAddr>,
    shutdown: ShutdownHandle,
    /// What asks the reporter for a statistics line now.
    stats_requests: StatsRequests,
    /// Tells a service manager (`NOTIFY_SOCKET`) we are ready, stopping, alive.
    notifier: Notifier,
    runner: Runner,
    /// Every worker's counters, per listener.
    stats: ServerStats,
    /// `--stats-interval`.
    stats_interval: Option<Duration>,
    /// `--metrics`: the endpoint's socket, bound; served while `run` runs.
    metrics: Option<TcpListener>,
    /// `--drain`: how long a signal's stop drains first.
    drain: Duration,
    /// The model's name, for the metrics.
    model: &'static str,
}

/// What runs: one variant per model, each holding what it needs until `run`.
enum Runner {
    /// One event loop per worker, each with its own socket for every listener (the
    /// workers' sockets share each port).
    EventLoops(Vec<EventLoop>),
    /// Thread-per-connection: it takes the listeners and the config when it runs.
    ThreadPerConn(Vec<Listening>, ServerConfig),
    /// One connection at a time on each accepting thread.
    Blocking(Vec<Listening>, ServerConfig),
    /// The completion model, one loop per worker: rings and buffers allocated at bind time.
    #[cfg(target_os = "linux")]
    IoUring(Vec<crate::io_uring::UringLoop>),
}

impl Server {
    /// Validate the config and bind. After this returns, clients can connect (they wait
    /// in the kernel's accept queue until `run`). Errors name the address.
    pub fn bind(config: &ServerConfig) -> Result<Server, Error> {
        Server::bind_with(config, ShutdownHandle::new())
    }

    /// [`Server::bind`], stopped through `shutdown`, a handle made (and perhaps already
    /// triggered, by an early signal) before binding. Every address is bound, in order,
    /// or none: if one cannot be, those bound before it are closed again (a Unix socket
    /// file removed) and the error names it.
    pub fn bind_with(config: &ServerConfig, shutdown: ShutdownHandle) -> Result<Server, Error> {
        check_before_binding(config)?;
        let sockets = net::bind_all(&config.addrs, config.workers > 1, udp_buffers(config))?;
        for addr in &config.addrs {
            if let ListenAddr::Tcp(addr) | ListenAddr::Udp(addr) = addr {
                net::note_if_root(*addr);
            }
        }
        Server::with_sockets(sockets, config, shutdown)
    }

    /// Serve the sockets the service manager passed in (socket activation), in the order
    /// passed, instead of binding `config.addrs`. One worker only: `--workers` shares a port
    /// through SO_REUSEPORT, which needs sockets we bind ourselves.
    pub fn inherit(
        sockets: Vec<InheritedSocket>,
        config: &ServerConfig,
        shutdown: ShutdownHandle,
    ) -> Result<Server, Error> {
        let addrs = sockets.iter().map(InheritedSocket::local_addr).collect::<io::Result<Vec<_>>>()?;
        if config.workers > 1 {
            return Err(Error::Usage(format!(
                "--workers {} cannot share the socket the service manager passed ({}, {}): \
                 workers share a port through SO_REUSEPORT, on sockets echoloop binds itself; \
                 use one worker, or start echoloop without socket activation",
                config.workers,
                sockets.first().map_or("", InheritedSocket::description),
                addrs.first().map(ToString::to_string).unwrap_or_default(),
            )));
        }
        let config = config.clone().with_addrs(addrs);
        check_before_binding(&config)?;
        for (socket, addr) in sockets.iter().zip(&config.addrs) {
            info!(
                "socket activation: serving {addr} ({}) passed by the service manager",
                socket.description()
            );
        }
        Server::with_sockets(
            sockets.into_iter().map(InheritedSocket::into_inner).collect(),
            &config,
            shutdown,
        )
    }

    /// The rest of binding, once every listener of the first worker exists.
    fn with_sockets(
        sockets: Vec<ListenSocket>,
        config: &ServerConfig,
        shutdown: ShutdownHandle,
    ) -> Result<Server, Error> {
        let addrs = sockets.iter().map(ListenSocket::local_addr).collect::<io::Result<Vec<_>>>()?;
        let stream_counts = if config.framing == Framing::Raw { Counted::Reads } else { Counted::Frames };
        let counted = |addr: &ListenAddr| match addr {
            ListenAddr::Udp(_) => Counted::Datagrams,
            _ => stream_counts,
        };
        let stats = ServerStats::with_listeners(
            config.workers,
            addrs.iter().map(|addr| (addr.to_string(), counted(addr))).collect(),
        );
        let listening = |sockets: Vec<ListenSocket>, worker| -> Vec<Listening> {
            sockets
                .into_iter()
                .zip(&addrs)
                .enumerate()
                .map(|(i, (socket, addr))| Listening {
                    socket,
                    addr: addr.clone(),
                    stats: stats.slot(worker, i),
                })
                .collect()
        };
        let runner = match config.model {
            Model::EventLoop => {
                Runner::EventLoops(bind_workers(sockets, &addrs, config, |socks, worker| {
                    EventLoop::new(listening(socks, worker), config, &shutdown, worker)
                })?)
            }
            Model::ThreadPerConn => Runner::ThreadPerConn(listening(sockets, 0), config.clone()),
            Model::Blocking => Runner::Blocking(listening(sockets, 0), config.clone()),
            #[cfg(target_os = "linux")]
            Model::IoUring => Runner::IoUring(bind_workers(sockets, &addrs, config, |socks, worker| {
                crate::io_uring::UringLoop::new(listening(socks, worker), config, &shutdown)
            })?),
            #[cfg(not(target_os = "linux"))]
            Model::IoUring => unreachable!("check_before_binding refuses io-uring off Linux"),
        };
        let metrics = config.metrics.map(metrics::bind).transpose()?;
        Ok(Server {
            addrs,
            shutdown,
            stats_requests: StatsRequests::new(),
            notifier: Notifier::disabled(),
            runner,
            stats,
            stats_interval: config.stats_interval,
            metrics,
            drain: config.drain,
            model: config.model.name(),
        })
    }

    /// Log a statistics line whenever `requests` asks, instead of through a handle of the
    /// server's own: for a handle that exists before the server does (the binary's SIGUSR1
    /// handler is installed before binding).
    pub fn with_stats_requests(self, requests: StatsRequests) -> Server {
        Server { stats_requests: requests, ..self }
    }

    /// Tell a service manager how the server is doing through `notifier` (the binary's is
    /// [`Notifier::from_env`]): `READY=1` when every listener is served, `STOPPING=1` when
    /// a stop begins, each statistics line as `STATUS=`, and `WATCHDOG=1` from the serving
    /// loop if the manager asked for it.
    pub fn with_notifier(self, notifier: Notifier) -> Server {
        Server { notifier, ..self }
    }

    /// A handle that asks this server for a statistics line now, from any thread (as
    /// SIGUSR1 does for the binary).
    pub fn stats_requests(&self) -> StatsRequests {
        self.stats_requests.clone()
    }

    /// The real bound address of the first listener (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.addrs[0]
    }

    /// Every listener's real bound address, in the order given (or passed).
    pub fn local_addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    /// With `--metrics`: the endpoint's real address (the port the OS chose for port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// A handle that stops this server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Every worker's counters, readable while the server runs and after it ends (also
    /// after `run` failed, when it returns no summary).
    pub fn stats(&self) -> ServerStats {
        self.stats.clone()
    }

    /// Serve until shut down; log and return the summary.
    pub fn run(mut self) -> io::Result<Summary> {
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        info!("serving {} with the {}", addrs.join(", "), self.model_description());
        let reporter = Reporter::start(
            self.stats.clone(),
            self.stats_interval,
            &self.stats_requests,
            self.notifier.clone(),
        )?;
        let stopping = self.notifier.clone();
        self.shutdown.add_waker(move || stopping.stopping());
        let endpoint = self.serve_metrics()?; // answers until `run` returns
        let open = self.stats.clone();
        self.shutdown.drain_first(self.drain, move || open.open_connections());
        // Every listener is bound and listening (clients queue in the kernel): from here on
        // the loops serve them.
        let watchdog = WatchdogTimer::new(&self.notifier, Instant::now());
        self.notifier.ready();
        let shutdown = &self.shutdown;
        match self.runner {
            Runner::EventLoops(loops) => run_workers(loops, shutdown, watchdog)?,
            Runner::ThreadPerConn(listeners, config) => {
                blocking::serve(Placement::OwnThread, listeners, &config, shutdown, watchdog)?
            }
            Runner::Blocking(listeners, config) => {
                blocking::serve(Placement::AcceptingThread, listeners, &config, shutdown, watchdog)?
            }
            #[cfg(target_os = "linux")]
            Runner::IoUring(rings) => run_workers(rings, shutdown, watchdog)?,
        };
        drop(reporter); // no statistics line after the summary
        let summary = self.stats.summary();
        info!("{summary}");
        drop(endpoint); // until here, /readyz said 503 and /metrics the last counts
        Ok(summary)
    }

    /// Start the `--metrics` endpoint, if asked (its socket was bound with the listeners).
    fn serve_metrics(&mut self) -> io::Result<Option<metrics::Endpoint>> {
        let Some(listener) = self.metrics.take() else { return Ok(None) };
        let sources = metrics::Sources {
            stats: self.stats.clone(),
            shutdown: self.shutdown.clone(),
            model: self.model,
        };
        metrics::serve(listener, sources).map(Some)
    }

    fn model_description(&self) -> String {
        match &self.runner {
            Runner::EventLoops(loops) if loops.len() > 1 => {
                format!("event-loop model ({} workers)", loops.len())
            }
            Runner::EventLoops(_) => "event-loop model".to_string(),
            Runner::ThreadPerConn(..) => "thread-per-conn model".to_string(),
            Runner::Blocking(..) => "blocking model".to_string(),
            #[cfg(target_os = "linux")]
            Runner::IoUring(rings) if rings.len() > 1 => format!("io-uring model ({} workers)", rings.len()),
            #[cfg(target_os = "linux")]
            Runner::IoUring(_) => "io-uring model".to_string(),
        }
    }
}

/// The kernel buffer sizes of a UDP listener's socket (`--send-buffer`, `--recv-buffer`).
fn udp_buffers(config: &ServerConfig) -> UdpBuffers {
    UdpBuffers { send: config.send_buffer, recv: config.recv_buffer }
}

/// What can be refused before a socket is bound or served: the config itself, and a kernel
/// that refuses the io-uring model (one line and exit 1, before `listening on`).
fn check_before_binding(config: &ServerConfig) -> Result<(), Error> {
    config.validate().map_err(Error::Usage)?;
    SocketOptions::from_config(config).warn_if_capped();
    if config.model == Model::IoUring {
        #[cfg(target_os = "linux")]
        crate::io_uring::probe()?;
        #[cfg(not(target_os = "linux"))]
        return Err(Error::Io(io::Error::new(io::ErrorKind::Unsupported, "the io-uring model needs Linux")));
    }
    Ok(())
}

/// Worker 0 runs on this thread, the others on their own. If any worker fails, the others
/// are stopped and joined too, so none outlives `run`. Worker 0's loop sends the watchdog's
/// pings (one loop proves it turns; the others share its code and its fate).
/// One loop per worker, made by `make(sockets, worker)`: the first takes `sockets`; the
/// others bind the ports the first got, with SO_REUSEPORT, so the kernel spreads connections
/// and datagrams over all of them.
fn bind_workers<W>(
    sockets: Vec<ListenSocket>,
    addrs: &[ListenAddr],
    config: &ServerConfig,
    make: impl Fn(Vec<ListenSocket>, usize) -> io::Result<W>,
) -> io::Result<Vec<W>> {
    let mut loops = vec![make(sockets, 0)?];
    for worker in 1..config.workers {
        loops.push(make(net::bind_all(addrs, true, udp_buffers(config))?, worker)?);
    }
    Ok(loops)
}

/// A loop a worker thread runs: the event loop, or the io-uring loop.
trait Worker: Send + 'static {
    fn run(self, watchdog: Option<WatchdogTimer>) -> io::Result<()>;
}

impl Worker for EventLoop {
    fn run(self, watchdog: Option<WatchdogTimer>) -> io::Result<()> {
        EventLoop::run(self, watchdog)
    }
}

#[cfg(target_os = "linux")]
impl Worker for crate::io_uring::UringLoop {
    fn run(self, watchdog: Option<WatchdogTimer>) -> io::Result<()> {
        crate::io_uring::UringLoop::run(self, watchdog)
    }
}

fn run_workers<W: Worker>(
    mut loops: Vec<W>,
    shutdown: &ShutdownHandle,
    watchdog: Option<WatchdogTimer>,
) -> io::Result<()> {
    let first = loops.remove(0);
    let others: Vec<_> = loops
        .into_iter()
        .enumerate()
        .map(|(i, el)| {
            thread::Builder::new().name(format!("worker-{}", i + 1)).spawn({
                let shutdown = shutdown.clone();
                move || {
                    let result = el.run(None);
                    if result.is_err() {
                        shutdown.shutdown(); // one worker failed: stop the others too
                    }
                    result
                }
            })
        })
        .collect::<io::Result<_>>()?;
    let results = std::iter::once(first.run(watchdog))
        .inspect(|result| {
            if result.is_err() {
                shutdown.shutdown();
            }
        })
        .chain(others.into_iter().map(|handle| {
            handle.join().unwrap_or_else(|_| Err(io::Error::other("a worker thread panicked")))
        }))
        .collect::<Vec<_>>();
    results.into_iter().collect()
}
