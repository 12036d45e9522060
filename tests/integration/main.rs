//! Integration tests over real sockets on loopback. One test binary; one module per
//! behaviour. Servers bind port 0; every wait is bounded; every process is cleaned up.

mod models; // every model side by side: echo, half-close, idle, limits, shutdown, workers
mod util;

/// Backpressure: a client that does not read is held at `--max-pending`.
mod backpressure;
/// The load generator and `--compare`: JSON, verification, corruption detection.
mod bench_smoke;
/// Command-line errors and the `listening on` line.
mod cli;
/// `echoloop client`: pipes, binary data, Unix sockets, a closed stdout.
mod client;
/// The example trace in docs/design.md, regenerated from a real session.
mod doc_trace;
/// Byte-exact echo: large transfers, hundreds of clients, IPv6, Unix sockets.
mod echo;
/// Half-close: the client's EOF does not cut its echo short.
mod half_close;
/// `--idle-timeout`: silent connections are closed, active ones are not.
mod idle;
/// `--max-connections` and running out of descriptors: accept and close, or back off.
mod limits;
/// Partial writes: tiny socket buffers, pending bytes, WRITABLE interest.
mod partial_writes;
/// Regressions and hostile clients.
mod regression;
/// Graceful shutdown on SIGTERM / SIGINT, and the grace period.
mod shutdown;
