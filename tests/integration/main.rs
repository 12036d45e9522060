//! Integration tests over real sockets on loopback. One test binary; one module per
//! behaviour. Servers bind port 0; every wait is bounded; every process is cleaned up.

mod util;

/// The load generator and `--compare`: JSON, verification, corruption detection.
mod bench_smoke;
/// `echoloop client`: pipes, binary data, Unix sockets, a closed stdout.
mod client;
