//! # echoloop: a TCP echo server built as a single-threaded event loop
//!
//! ## How to read this crate
//!
//! 1. `examples/minimal.rs`: the smallest correct mio echo loop, without limits.
//! 2. [`event_loop`]: the real loop. `mod.rs` polls and dispatches; `connection.rs` is one
//!    connection's read/echo/flush and the interest it needs next; `accept.rs` accepts;
//!    `idle.rs` keeps idle deadlines.
//! 3. [`buffer::PendingBuf`]: where bytes wait when the kernel takes only part of a write.
//! 4. [`threaded`] and [`blocking`]: the models tutorials teach, for comparison; they share
//!    [`echo`], the blocking read/write loop and the plumbing that stops sleeping threads.
//! 5. [`server::Server`]: the one entry point for all three; [`shutdown`] stops it.
//! 6. [`client`], an `nc`-like client, and [`mod@bench`], the verifying load generator (itself
//!    a mio loop) and `--compare`, which measures the models against each other.
//!
//! ## The three models
//!
//! - **event-loop**: one thread waits on `epoll` (through `mio::Poll`) for *readiness* of
//!   every socket at once, and does only the I/O that will not block. Cost per connection:
//!   a slab entry (about 150 bytes) and, only while a write is partial, a pending buffer.
//! - **thread-per-conn**: one OS thread per connection, blocking `read`/`write`. Simple;
//!   cost per connection: a thread and its stack.
//! - **blocking**: one connection at a time on the accepting thread; others wait.
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

pub mod addr;
pub mod bench;
pub mod blocking;
pub mod buffer;
pub mod cli;
pub mod client;
pub mod config;
pub mod echo;
pub mod event_loop;
#[cfg(target_os = "linux")]
mod io_uring;
pub mod net;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod threaded;

pub use addr::ListenAddr;
pub use config::{Model, ServerConfig};
pub use server::Server;
pub use shutdown::ShutdownHandle;
pub use stats::Summary;
