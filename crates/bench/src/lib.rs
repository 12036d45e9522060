//! # echoloop-bench: a verifying load generator for any echo server
//!
//! It loads an echo server at an address and measures it: msgs/s, MiB/s, round-trip
//! quantiles from an HDR histogram, and a check of every byte echoed (a server that drops,
//! reorders or corrupts one byte fails the run). With `--compare` it starts servers from
//! the command lines it is given, puts the same scenarios on each, and prints one table
//! (and JSON, and an SVG chart). It knows nothing of any server's internals: the `echoloop`
//! binary embeds [`BenchArgs`] as its `bench` subcommand and supplies its own models as a
//! [`Catalog`] of [`ServerSpec`]s.
//!
//! The load generator is itself a mio event loop (one thread by default, `--threads` for
//! more): a generator built on a thread per connection would spend its CPU switching
//! between threads, and at 2000 connections it, not the server, would be measured. The
//! load costs as little as the server it measures: no allocation or copy per message, one
//! `write` and one `read` per round trip, and a comparison against a fixed pattern.
//!
//! ## Layers (each module uses only those above it in this list)
//!
//! - `error`, `human` (numbers for people), `sys` (limits, CPU, `/proc`), `procfs` (which
//!   process listens on an address), `target` (addresses, and resolving them), `pattern`
//!   (the bytes sent), `framing` (lines, length prefixes, sizes), `histogram` (round-trip
//!   times), `schedule` (open-loop pacing), `timer` (a pollable timerfd), `progress`,
//!   `intervals` (the window cut into intervals: live lines, CSV, the HdrHistogram log),
//!   `proxy` (the PROXY protocol header of `--proxy-protocol`).
//! - `source` (`--source`: the local addresses connections come from, in turn);
//!   `stream`: connecting and the mio stream; `run`: the engines (echo closed and open
//!   loop, idle, churn, UDP, chaos with its hostile clients: connections, the event loops,
//!   verification, timing, and the generator watching its own threads).
//! - `findmax` (the search for the highest sustainable rate), `fairness` (small
//!   connections beside a stream), `scenario` (the comparison's loads) and `server`
//!   (starting and stopping a server from a [`ServerSpec`], with `udp_probe` for UDP
//!   echoes); `results`: what a comparison
//!   measured, as plain data.
//! - `report` (text, JSON, the table) and `chart` (the SVG), each reading only the results.
//! - `kmem` (the kernel's memory, from `/proc`) and `ceiling` (what limits the number of
//!   connections here, in one line).
//! - `single`, `crowd` (`--mode idle`: many connections held, `--active` ones beside) and
//!   `compare`: the orchestration of a run; `args`: the command line.

mod args;
mod ceiling;
mod chart;
mod compare;
mod crowd;
mod error;
mod fairness;
mod findmax;
mod framing;
mod histogram;
mod human;
mod intervals;
mod kmem;
mod pattern;
mod procfs;
mod progress;
mod proxy;
mod report;
mod results;
mod run;
mod scenario;
mod schedule;
mod server;
mod single;
mod source;
mod stream;
mod sys;
mod target;
mod timer;
mod udp_probe;

pub use args::BenchArgs;
pub use error::Error;
pub use server::{ADDR_PLACEHOLDER, Catalog, HOST_PLACEHOLDER, PORT_PLACEHOLDER, ServerSpec};
pub use target::Transport;

use args::Task;

/// Run `echoloop bench` as `args` ask. `catalog` holds the servers `--compare` may start
/// (unused without `--compare`). `Err` after a report means the run found errors or
/// corruption; before one, that it could not run ([`Error::exit_code`] says which).
pub fn run(args: &BenchArgs, catalog: &Catalog) -> Result<(), Error> {
    match args.task(catalog)? {
        Task::Single(options) => single::run(&options),
        Task::Compare(options) => compare::run(&options),
    }
}
