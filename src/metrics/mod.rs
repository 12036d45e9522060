//! `--metrics ADDR`: Prometheus metrics and health checks over HTTP, served off the echo path.
//!
//! - `GET /metrics`: every counter of the statistics line and the summary, per listener, in
//!   the Prometheus text format, with the standard `process_*` series (`exposition.rs`,
//!   `process.rs`);
//! - `GET /livez`: 200 while every serving loop either waits for work or has been in its
//!   current turn for less than [`LIVENESS_LIMIT`]; 503 when one is stuck (a loop blocked
//!   in a system call it should never block in, or spinning in one turn);
//! - `GET /readyz`: 200 while serving; 503 from the moment a stop begins (SIGTERM, SIGINT,
//!   and the `--drain` before it) until the process exits, so a load balancer stops sending
//!   new connections before any is refused.
//!
//! All of it runs on a thread of its own (`http.rs`), reading the atomics the serving loops
//! already keep for the statistics line: a scrape costs the echo path nothing but the
//! relaxed loads it makes, and a loop's liveness costs it two relaxed stores per turn.

mod exposition;
mod http;
mod process;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shutdown::ShutdownHandle;
use crate::stats::{ServerStats, Totals};
use exposition::{CONTENT_TYPE, Figures, ListenerFigures};
use http::{HttpServer, Reply, Routes};

/// The running endpoint: it answers until it is dropped.
pub type Endpoint = HttpServer;

/// A serving loop in one turn for longer than this is stuck: `/livez` answers 503. A
/// healthy turn takes microseconds to milliseconds; the blocking model's one thread is
/// "in a turn" for as long as it serves its client, which this bound also reports.
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(5);

/// What the endpoint reports on.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The counters of every worker and listener.
    pub stats: ServerStats,
    /// Whether a stop has begun (for `/readyz`).
    pub shutdown: ShutdownHandle,
    /// The model's name, for `echoloop_build_info`.
    pub model: &'static str,
}

/// Bind the endpoint's socket (before `listening on` is printed: a refusal is one line, and
/// the port is known). Errors name the address.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on --metrics {addr}: {e}")))
}

/// Serve `/metrics`, `/livez` and `/readyz` on `listener` until the returned server drops.
pub fn serve(listener: TcpListener, sources: Sources) -> io::Result<Endpoint> {
    let routes: Arc<Routes> = Arc::new(move |path: &str| match path {
        "/metrics" => Some(metrics(&sources)),
        "/livez" => Some(livez(&sources.stats, Instant::now())),
        "/readyz" => Some(readyz(&sources.shutdown)),
        _ => None,
    });
    HttpServer::start(listener, routes)
}

fn metrics(sources: &Sources) -> Reply {
    let listeners: Vec<ListenerFigures> = sources
        .stats
        .listener_totals()
        .into_iter()
        .map(|(name, totals)| listener_figures(name, &totals))
        .collect();
    let figures = Figures {
        version: env!("CARGO_PKG_VERSION"),
        model: sources.model,
        framing: listeners.iter().any(|l| l.framed),
        listeners,
        process: process::sample().ok(),
    };
    Reply { status: 200, content_type: CONTENT_TYPE, body: exposition::encode(figures).into_bytes() }
}

/// One listener's series, from its totals (the `listener` label is `name`).
fn listener_figures(name: String, totals: &Totals) -> ListenerFigures {
    let datagrams = totals.datagrams.unwrap_or_default();
    ListenerFigures {
        name,
        datagram: totals.datagrams.is_some(),
        framed: totals.frames.is_some(),
        accepted: totals.accepted,
        rejected: vec![
            ("max_connections", totals.rejected_max_connections),
            ("proxy_header", totals.rejected_proxy_header),
            ("failed", totals.rejected_failed),
        ],
        open: totals.open,
        received_bytes: totals.bytes_read,
        sent_bytes: totals.bytes_echoed,
        reads: totals.reads,
        frames: totals.frames.unwrap_or(0),
        frames_too_large: totals.frames_too_large,
        datagrams: datagrams.echoed,
        datagrams_dropped: vec![
            ("reserved_source_port", datagrams.dropped_reserved_port),
            ("queue_full", datagrams.dropped_queue_full),
            ("send_failed", datagrams.dropped_send_failed),
        ],
        pending: totals.pending,
    }
}

fn livez(stats: &ServerStats, now: Instant) -> Reply {
    match stats.stalled_for(now) {
        Some(busy) if busy >= LIVENESS_LIMIT => {
            Reply::text(503, &format!("stalled: a serving loop has been in one turn for {busy:.1?}\n"))
        }
        _ => Reply::text(200, "ok\n"),
    }
}

fn readyz(shutdown: &ShutdownHandle) -> Reply {
    if shutdown.is_leaving() { Reply::text(503, "stopping\n") } else { Reply::text(200, "ready\n") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Counted;

    #[test]
    fn livez_fails_only_for_a_loop_stuck_in_one_turn() {
        let stats = ServerStats::new(2, Counted::Reads);
        let now = Instant::now();
        assert_eq!(livez(&stats, now).status, 200, "loops that never ran are waiting");
        stats.slot(1, 0).loop_busy(now);
        assert_eq!(livez(&stats, now + LIVENESS_LIMIT / 2).status, 200);
        assert_eq!(livez(&stats, now + LIVENESS_LIMIT).status, 503);
        stats.slot(1, 0).loop_waiting();
        assert_eq!(livez(&stats, now + LIVENESS_LIMIT * 2).status, 200, "waiting again: alive");
    }

    #[test]
    fn readyz_fails_from_the_moment_a_stop_begins() {
        let shutdown = ShutdownHandle::new();
        assert_eq!(readyz(&shutdown).status, 200);
        shutdown.shutdown();
        assert_eq!(readyz(&shutdown).status, 503);
    }
}
