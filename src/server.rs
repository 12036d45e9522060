//! `Server`: one entry point for every model, so the CLI, the tests and a program that embeds
//! the library start servers the same way: `Server::bind(&config)?`, read `local_addr()`, keep a
//! `shutdown_handle()`, then `run()` until the handle (or a signal) stops it. The binary
//! uses `Server::bind_with` instead, with a handle whose signal handlers were installed
//! before binding, so a SIGTERM at any moment after start is a graceful stop; or, when the
//! service manager passed it a listening socket, `Server::inherit`, which serves that.
//!
//! While it runs, a reporter thread logs the statistics line (`--stats-interval`, and
//! whenever its [`StatsRequests`] ask: SIGUSR1); [`Server::stats`] reads the same counters
//! from anywhere, for the summary after a failure.

use std::io;
use std::thread;
use std::time::Duration;

use log::info;

use crate::addr::ListenAddr;
use crate::blocking::{self, Placement};
use crate::config::{Model, ServerConfig};
use crate::error::Error;
use crate::event_loop::{EventLoop, UdpEcho};
use crate::framing::Framing;
use crate::net::{self, InheritedSocket, SocketOptions, StdListener};
use crate::shutdown::ShutdownHandle;
use crate::stats::{Counted, Reporter, ServerStats, StatsRequests, Summary};

/// A bound server of any model, ready to run.
pub struct Server {
    addr: ListenAddr,
    shutdown: ShutdownHandle,
    /// What asks the reporter for a statistics line now.
    stats_requests: StatsRequests,
    runner: Runner,
    /// Every worker's counters.
    stats: ServerStats,
    /// `--stats-interval`.
    stats_interval: Option<Duration>,
}

/// What runs: one variant per model, each holding what it needs until `run`.
enum Runner {
    /// One event loop per worker, each with its own listener on the shared port.
    EventLoops(Vec<EventLoop>),
    /// Thread-per-connection: it takes the listener and the config when it runs.
    ThreadPerConn(StdListener, ServerConfig),
    /// One connection at a time on the accepting thread.
    Blocking(StdListener, ServerConfig),
    /// The completion model, one loop per worker: rings and buffers allocated at bind time.
    #[cfg(target_os = "linux")]
    IoUring(Vec<crate::io_uring::UringLoop>),
    /// The UDP echo: one loop over one socket.
    Udp(UdpEcho),
    /// The UDP echo on io_uring (boxed: the others are pointers and vectors).
    #[cfg(target_os = "linux")]
    UringUdp(Box<crate::io_uring::UringUdp>),
}

impl Server {
    /// Validate the config and bind. After this returns, clients can connect (they wait
    /// in the kernel's accept queue until `run`). Errors name the address.
    pub fn bind(config: &ServerConfig) -> Result<Server, Error> {
        Server::bind_with(config, ShutdownHandle::new())
    }

    /// [`Server::bind`], stopped through `shutdown`, a handle made (and perhaps already
    /// triggered, by an early signal) before binding.
    pub fn bind_with(config: &ServerConfig, shutdown: ShutdownHandle) -> Result<Server, Error> {
        check_before_binding(config)?;
        if let ListenAddr::Udp(addr) = config.addr {
            let socket = net::bind_udp(addr, config.send_buffer, config.recv_buffer)?;
            let stats = ServerStats::new(1, Counted::Datagrams);
            let (runner, addr) = match config.model {
                #[cfg(target_os = "linux")]
                Model::IoUring => {
                    let udp = crate::io_uring::UringUdp::new(socket, config, &shutdown, stats.worker(0))?;
                    let addr = udp.local_addr()?;
                    (Runner::UringUdp(Box::new(udp)), addr)
                }
                _ => {
                    let udp = UdpEcho::new(socket, config, &shutdown, stats.worker(0))?;
                    let addr = udp.local_addr()?;
                    (Runner::Udp(udp), addr)
                }
            };
            return Ok(Server::new(ListenAddr::Udp(addr), shutdown, runner, stats, config));
        }
        let reuse_port = config.workers > 1;
        let first = net::bind(&config.addr, reuse_port)?;
        if let ListenAddr::Tcp(addr) = config.addr {
            net::note_if_root(addr);
        }
        Server::with_listener(first, config, shutdown)
    }

    /// Serve a listening socket the service manager passed in (socket activation) instead
    /// of binding `config.addr`. One worker only: `--workers` shares a port through
    /// SO_REUSEPORT, which needs sockets we bind ourselves.
    pub fn inherit(
        socket: InheritedSocket,
        config: &ServerConfig,
        shutdown: ShutdownHandle,
    ) -> Result<Server, Error> {
        let addr = socket.local_addr()?;
        if config.workers > 1 {
            return Err(Error::Usage(format!(
                "--workers {} cannot share the socket the service manager passed ({}, {addr}): \
                 workers share a port through SO_REUSEPORT, on sockets echoloop binds itself; \
                 use one worker, or start echoloop without socket activation",
                config.workers,
                socket.description()
            )));
        }
        let config = ServerConfig { addr, ..config.clone() };
        check_before_binding(&config)?;
        info!(
            "socket activation: serving {} ({}) passed by the service manager",
            config.addr,
            socket.description()
        );
        Server::with_listener(socket.into_listener(), &config, shutdown)
    }

    /// The rest of binding, once the first (or only) listener exists.
    fn with_listener(
        first: StdListener,
        config: &ServerConfig,
        shutdown: ShutdownHandle,
    ) -> Result<Server, Error> {
        let addr = first.local_addr()?;
        let counted = if config.framing == Framing::Raw { Counted::Reads } else { Counted::Frames };
        let stats = ServerStats::new(config.workers, counted);
        let runner = match config.model {
            Model::EventLoop => {
                Runner::EventLoops(bind_workers(first, &addr, config, |listener, worker| {
                    EventLoop::new(listener, config, &shutdown, stats.worker(worker), worker)
                })?)
            }
            Model::ThreadPerConn => Runner::ThreadPerConn(first, config.clone()),
            Model::Blocking => Runner::Blocking(first, config.clone()),
            #[cfg(target_os = "linux")]
            Model::IoUring => Runner::IoUring(bind_workers(first, &addr, config, |listener, worker| {
                crate::io_uring::UringLoop::new(listener, config, &shutdown, stats.worker(worker))
            })?),
            #[cfg(not(target_os = "linux"))]
            Model::IoUring => unreachable!("check_before_binding refuses io-uring off Linux"),
        };
        Ok(Server::new(addr, shutdown, runner, stats, config))
    }

    fn new(
        addr: ListenAddr,
        shutdown: ShutdownHandle,
        runner: Runner,
        stats: ServerStats,
        config: &ServerConfig,
    ) -> Server {
        let stats_requests = StatsRequests::new();
        Server { addr, shutdown, stats_requests, runner, stats, stats_interval: config.stats_interval }
    }

    /// Log a statistics line whenever `requests` asks, instead of through a handle of the
    /// server's own: for a handle that exists before the server does (the binary's SIGUSR1
    /// handler is installed before binding).
    pub fn with_stats_requests(self, requests: StatsRequests) -> Server {
        Server { stats_requests: requests, ..self }
    }

    /// A handle that asks this server for a statistics line now, from any thread (as
    /// SIGUSR1 does for the binary).
    pub fn stats_requests(&self) -> StatsRequests {
        self.stats_requests.clone()
    }

    /// The real bound address (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.addr
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
    pub fn run(self) -> io::Result<Summary> {
        info!("serving {} with the {}", self.addr, self.model_description());
        let reporter = Reporter::start(self.stats.clone(), self.stats_interval, &self.stats_requests)?;
        let (shutdown, stats) = (&self.shutdown, self.stats.worker(0));
        match self.runner {
            Runner::EventLoops(loops) => run_workers(loops, shutdown, EventLoop::run)?,
            Runner::ThreadPerConn(listener, config) => {
                blocking::serve(Placement::OwnThread, listener, &config, shutdown, stats)
            }
            Runner::Blocking(listener, config) => {
                blocking::serve(Placement::AcceptingThread, listener, &config, shutdown, stats)
            }
            #[cfg(target_os = "linux")]
            Runner::IoUring(rings) => run_workers(rings, shutdown, crate::io_uring::UringLoop::run)?,
            Runner::Udp(udp) => udp.run()?,
            #[cfg(target_os = "linux")]
            Runner::UringUdp(udp) => udp.run()?,
        };
        drop(reporter); // no statistics line after the summary
        let summary = self.stats.summary();
        info!("{summary}");
        Ok(summary)
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
            Runner::Udp(_) => "UDP echo (event loop)".to_string(),
            #[cfg(target_os = "linux")]
            Runner::UringUdp(_) => "UDP echo (io-uring)".to_string(),
        }
    }
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

/// One loop per worker (`make(listener, worker)`): the first listener is already bound (to
/// port 0, perhaps); the others bind the port it got, with SO_REUSEPORT, so the kernel
/// spreads new connections over all of them.
fn bind_workers<W>(
    first: StdListener,
    addr: &ListenAddr,
    config: &ServerConfig,
    make: impl Fn(StdListener, usize) -> io::Result<W>,
) -> io::Result<Vec<W>> {
    let mut loops = vec![make(first, 0)?];
    for worker in 1..config.workers {
        loops.push(make(net::bind(addr, true)?, worker)?);
    }
    Ok(loops)
}

/// Worker 0 runs on this thread, the others on their own, each `run`. If any worker fails,
/// the others are stopped and joined too, so none outlives `run`.
fn run_workers<W: Send + 'static>(
    mut loops: Vec<W>,
    shutdown: &ShutdownHandle,
    run: fn(W) -> io::Result<()>,
) -> io::Result<()> {
    let first = loops.remove(0);
    let others: Vec<_> = loops
        .into_iter()
        .enumerate()
        .map(|(i, el)| {
            thread::Builder::new().name(format!("worker-{}", i + 1)).spawn({
                let shutdown = shutdown.clone();
                move || {
                    let result = run(el);
                    if result.is_err() {
                        shutdown.shutdown(); // one worker failed: stop the others too
                    }
                    result
                }
            })
        })
        .collect::<io::Result<_>>()?;
    let results = std::iter::once(run(first))
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
