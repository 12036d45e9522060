//! # echoloop: an echo server (RFC 862) over TCP, Unix sockets and UDP, in four I/O models
//!
//! The server of the `echoloop` binary, as a library: one [`Server`] for every model (a mio
//! event loop, the default; thread-per-connection; one connection at a time; io_uring), with
//! the same limits, shutdown and statistics in each, so that a program (or a test) can
//! embed an echo peer and a student can compare the models line by line.
//!
//! ## Embedding the server
//!
//! Bind (port 0 lets the OS pick), read the real address, keep a [`ShutdownHandle`], and
//! [`run`](Server::run) until the handle stops it, from any thread:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use std::thread;
//!
//! use echoloop::{ListenAddr, Server, ServerConfig};
//!
//! let server = Server::bind(&ServerConfig::new("127.0.0.1:0".parse()?))?;
//! let ListenAddr::Tcp(addr) = server.local_addr().clone() else { unreachable!("bound to TCP") };
//! let stop = server.shutdown_handle();
//! let serving = thread::spawn(move || server.run());
//!
//! let mut client = TcpStream::connect(addr)?;
//! client.write_all(b"hello")?;
//! let mut echo = [0; 5];
//! client.read_exact(&mut echo)?;
//! assert_eq!(&echo, b"hello");
//! drop(client);
//!
//! stop.shutdown(); // this thread is not the one that runs the server
//! let summary = serving.join().expect("the server thread panicked")?;
//! assert_eq!(summary.bytes_echoed, 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`ServerConfig`] holds every setting of `echoloop serve` (its addresses, any number of
//! them and of any kind, all served by one process; model, limits, framing, grace period);
//! it is `#[non_exhaustive]`, so start from [`ServerConfig::new`] and change what
//! you need with its `with_*` methods. [`Server::bind`] refuses a config that cannot work
//! with an [`Error::Usage`] that names the setting. The binary adds what a process needs
//! around this: signal handlers ([`handle_signals`]: SIGTERM stops through the
//! [`ShutdownHandle`], SIGUSR1 asks for a statistics line through [`StatsRequests`]),
//! socket activation ([`take_inherited_sockets`], [`Server::inherit`]), readiness and
//! liveness for a service manager ([`Notifier`], [`Server::with_notifier`]) and
//! `--summary-json` ([`write_summary_json`]).
//!
//! ## Features
//!
//! - `cli` (default): the `echoloop` binary, with clap, clap_complete, clap_mangen and
//!   env_logger. Without it (`default-features = false`) the crate is this library alone;
//!   log lines go through the `log` facade to whatever logger the program installs.
//! - `bench` (default, needs `cli`): `echoloop bench`, the load generator of `crates/bench`.
//!
//! ## How to read this crate
//!
//! 1. `examples/ladder/3_event_loop.rs`: the smallest correct mio echo loop, without limits
//!    (rung 3 of the ladder in `docs/learn.md`, which climbs to it from a blocking server).
//! 2. `src/event_loop/`: the real loop. `mod.rs` polls and dispatches; `connection.rs` is one
//!    connection's read/echo/flush and the interest it needs next; `accept.rs` accepts;
//!    `listeners.rs` gives every listener its token; `udp.rs` answers datagrams.
//! 3. `src/buffer.rs`: where bytes wait when the kernel takes only part of a write, or
//!    when a read ends in the middle of a frame; `src/framing.rs`: where frames end
//!    (`--framing line|length`; "a read is not a message").
//! 4. `src/blocking/`: the models tutorials teach, for comparison: one file per model, and
//!    the accept loop, connection registry and blocking echo they share; `src/io_uring/`:
//!    the completion model (Linux), the same contract as the event loop without readiness.
//! 5. `src/net/`: sockets of every family, their options, the Unix socket file, and what an
//!    `accept` error means (for every model).
//! 6. [`Server`]: the one entry point for every model; [`ShutdownHandle`] stops it, and
//!    [`StatsRequests`] asks it for a statistics line ([`handle_signals`] turns SIGTERM and
//!    SIGUSR1 into those); `src/lifecycle/` is a connection's life in every model (admission,
//!    idle timeout, lingering, the PROXY header a load balancer sends first); `src/stats/`
//!    counts, reports live and summarizes, and keeps what clients cause from flooding the
//!    log; `src/net/activation.rs` takes the sockets the service manager passes, and
//!    `src/notify.rs` tells it how the server is doing (sd_notify).
//! 7. `src/proxy_protocol.rs`: the PROXY protocol header (v1, v2) parsed as it arrives
//!    ([`ProxyDecoder`]); `src/metrics/`: `--metrics`, the Prometheus exposition and the
//!    `/livez` and `/readyz` health checks on a small HTTP endpoint of its own.
//! 8. `src/client/`, an `nc`-like client ([`run_client`]), framed or over UDP too.
//! 9. `src/units.rs`: sizes and durations as typed on the command line ([`parse_size`],
//!    [`parse_secs`]).
//!
//! The load generator is a crate of its own (`crates/bench`), which knows nothing of this one.
//!
//! ## The four models
//!
//! - **event-loop**: one thread waits on `epoll` (through `mio::Poll`) for *readiness* of
//!   every socket at once, and does only the I/O that will not block. Cost per connection:
//!   a slab entry and, only while a write is partial, a pending buffer.
//! - **thread-per-conn**: one OS thread per connection, blocking `read`/`write`. Simple;
//!   cost per connection: a thread and its stack.
//! - **blocking**: one connection at a time on the accepting thread; others wait.
//! - **io-uring** (Linux): one thread hands the kernel its receives and sends through an
//!   io_uring and is told when each is *complete*: one `io_uring_enter` per loop turn
//!   instead of a `read` and a `write` per message. Cost per connection: a slab entry;
//!   receive buffers come from one ring shared by all connections.
//!
//! Every model serves TCP and Unix stream sockets, several at once. A `udp:` address has no
//! connections: the event loop answers its datagrams as one more socket in its poll,
//! io-uring as one more socket in its ring, the threaded models with a thread of its own
//! (RFC 862's UDP echo).
//!
//! ## Readiness glossary
//!
//! - *readable / writable*: the kernel says a `read` / `write` may make progress. A hint:
//!   the call can still answer `WouldBlock`.
//! - *edge-triggered*: an event is reported when readiness *changes* (new data arrived,
//!   buffer space freed), not while it lasts. So a handler drains until `WouldBlock`, or it
//!   must remember to come back itself.
//! - *interest*: what we ask to be told about for a socket. WRITABLE is asked only while
//!   bytes are pending; otherwise every send-buffer drain would wake us for nothing.
//! - *partial write*: `write` took fewer bytes than offered because the send buffer is full.
//! - *backpressure*: when a client does not read its echo, we stop reading what it sends,
//!   so its data waits in kernel buffers (and in the end in the client), not in our memory.
#![deny(missing_docs, rust_2018_idioms)]

mod addr;
mod blocking;
mod buffer;
mod client;
mod config;
mod error;
mod event_loop;
mod framing;
#[cfg(target_os = "linux")]
mod io_uring;
mod lifecycle;
mod listening;
mod metrics;
mod net;
mod notify;
mod proxy_protocol;
mod server;
mod shutdown;
mod signals;
mod stats;
mod units;

pub use addr::{AddrParseError, DEFAULT_ADDR, ListenAddr};
pub use client::{ClientOptions, ServerAddr, run as run_client};
pub use config::{Model, ServerConfig, UringRecv};
pub use error::Error;
pub use framing::{Framer, Framing, Rest, Split};
pub use net::{
    ActivationEnv, DescriptorLimit, InheritedSocket, LISTEN_VARS, raise_descriptor_limit,
    take_inherited_sockets,
};
pub use notify::{Notifier, WatchdogTimer};
pub use proxy_protocol::{InvalidProxyHeader, ProxyDecoder, ProxyHeader, ProxyProgress, ProxySource};
pub use server::Server;
pub use shutdown::{ShutdownHandle, StopCause};
pub use signals::handle_signals;
pub use stats::{
    Counted, Datagrams, ExitReason, ListenerSummary, ServerStats, StatsRequests, Summary, WorkerSummary,
    write_summary_json,
};
pub use units::{parse_secs, parse_size};
