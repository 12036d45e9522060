//! `Server`: one entry point for every model, so the CLI, the tests and the benches start
//! servers the same way: `Server::bind(&config)?`, read `local_addr()`, keep a
//! `shutdown_handle()`, then `run()` until the handle (or a signal) stops it. The binary
//! uses `Server::bind_with` instead, with a handle whose signal handlers were installed
//! before binding, so a SIGTERM at any moment after start is a graceful stop.

use std::io;
use std::thread;

use log::info;

use crate::addr::ListenAddr;
use crate::blocking;
use crate::config::{Model, ServerConfig};
use crate::error::Error;
use crate::event_loop::{EventLoop, UdpEcho};
use crate::net::{self, StdListener};
use crate::shutdown::ShutdownHandle;
use crate::stats::Summary;

/// A bound server of any model, ready to run.
pub struct Server {
    addr: ListenAddr,
    shutdown: ShutdownHandle,
    runner: Runner,
}

enum Runner {
    /// One event loop per worker, each with its own listener on the shared port.
    EventLoops(Vec<EventLoop>),
    /// A threaded model: it takes the listener and the config when it runs.
    Threaded(Model, StdListener, ServerConfig),
    /// The UDP echo: one loop over one socket.
    Udp(UdpEcho),
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
        config.validate().map_err(Error::Usage)?;
        if let ListenAddr::Udp(addr) = config.addr {
            let socket = net::bind_udp(addr, config.send_buffer, config.recv_buffer)?;
            let udp = UdpEcho::new(socket, config.shutdown_grace, &shutdown)?;
            let addr = ListenAddr::Udp(udp.local_addr()?);
            return Ok(Server { addr, shutdown, runner: Runner::Udp(udp) });
        }
        let reuse_port = config.workers > 1;
        let first = net::bind(&config.addr, reuse_port)?;
        let addr = first.local_addr()?;
        let runner = match config.model {
            Model::EventLoop => Runner::EventLoops(bind_workers(first, &addr, config, &shutdown)?),
            model => Runner::Threaded(model, first, config.clone()),
        };
        Ok(Server { addr, shutdown, runner })
    }

    /// The real bound address (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// A handle that stops this server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serve until shut down; log and return the summary.
    pub fn run(self) -> io::Result<Summary> {
        info!("serving {} with the {}", self.addr, self.model_description());
        let summary = match self.runner {
            Runner::EventLoops(loops) => run_workers(loops, &self.shutdown)?,
            Runner::Threaded(Model::ThreadPerConn, listener, config) => {
                blocking::serve_thread_per_conn(listener, &config, &self.shutdown)?
            }
            Runner::Threaded(_, listener, config) => {
                blocking::serve_one_at_a_time(listener, &config, &self.shutdown)?
            }
            Runner::Udp(udp) => udp.run()?,
        };
        info!("{summary}");
        Ok(summary)
    }
}

impl Server {
    fn model_description(&self) -> String {
        match &self.runner {
            Runner::EventLoops(loops) if loops.len() > 1 => {
                format!("event-loop model ({} workers)", loops.len())
            }
            Runner::EventLoops(_) => "event-loop model".to_string(),
            Runner::Threaded(model, ..) => format!("{} model", model.name()),
            Runner::Udp(_) => "UDP echo (event loop)".to_string(),
        }
    }
}

/// The first listener is already bound (to port 0, perhaps); the others bind the port it
/// got, with SO_REUSEPORT, so the kernel spreads new connections over all of them.
fn bind_workers(
    first: StdListener,
    addr: &ListenAddr,
    config: &ServerConfig,
    shutdown: &ShutdownHandle,
) -> io::Result<Vec<EventLoop>> {
    let mut loops = vec![EventLoop::new(first, config, shutdown, 0)?];
    for worker in 1..config.workers {
        let listener = net::bind(addr, true)?;
        loops.push(EventLoop::new(listener, config, shutdown, worker)?);
    }
    Ok(loops)
}

/// Worker 0 runs on this thread, the others on their own; the summaries add up. If any
/// worker fails, the others are stopped and joined too, so none outlives `run`.
fn run_workers(mut loops: Vec<EventLoop>, shutdown: &ShutdownHandle) -> io::Result<Summary> {
    let first = loops.remove(0);
    let others: Vec<_> = loops
        .into_iter()
        .enumerate()
        .map(|(i, el)| {
            thread::Builder::new().name(format!("worker-{}", i + 1)).spawn({
                let shutdown = shutdown.clone();
                move || {
                    let result = el.run();
                    if result.is_err() {
                        shutdown.shutdown(); // one worker failed: stop the others too
                    }
                    result
                }
            })
        })
        .collect::<io::Result<_>>()?;
    let results = std::iter::once(first.run())
        .inspect(|result| {
            if result.is_err() {
                shutdown.shutdown();
            }
        })
        .chain(others.into_iter().map(|handle| {
            handle.join().unwrap_or_else(|_| Err(io::Error::other("a worker thread panicked")))
        }))
        .collect::<Vec<_>>();
    Ok(Summary::combine(results.into_iter().collect::<io::Result<Vec<_>>>()?))
}
