//! Integration tests over real sockets on loopback. One test binary; one module per
//! behaviour. Servers bind port 0; every wait is bounded; every process is cleaned up.

mod models; // every model side by side: echo, half-close, idle, limits, shutdown, workers
mod util;
