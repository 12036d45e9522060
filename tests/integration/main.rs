//! Integration tests over real sockets on loopback. One test binary; one module per
//! behaviour. Servers bind port 0; every wait is bounded; every process is cleaned up.

/// `for_variants!(body)` makes `mod body` with one `#[test]` per server variant (every model,
/// and the event loop with two workers: `variants::Variant`), each running `body(variant)`.
/// `for_variants!(body, needs: [UnixSocket])`: on a variant that lacks what the behaviour needs,
/// the test checks what that variant does instead (`variants::Need`), never skips in silence.
macro_rules! for_variants {
    // The tests themselves, each calling `$call` (a closure taking the variant) through
    // `variants::run`; used directly by macros that pass more than the variant.
    (@tests $call:expr, [$($need:ident),*]) => {
        for_variants!(@each $call, [$(crate::variants::Need::$need),*],
            event_loop: EventLoop,
            event_loop_workers2: Workers2,
            thread_per_conn: ThreadPerConn,
            blocking: Blocking,
            io_uring: IoUring,
        );
    };
    (@each $call:expr, $needs:expr, $($test:ident: $variant:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                crate::variants::run(crate::variants::Variant::$variant, &$needs, $call)
            }
        )+
    };
    ($body:ident $(, needs: [$($need:ident),* $(,)?])?) => {
        mod $body {
            for_variants!(@tests |variant| super::$body(variant), [$($($need),*)?]);
        }
    };
}

mod models; // every model side by side: echo, half-close, idle, limits, shutdown, workers
mod util;
mod variants; // the server set-ups `for_variants!` runs each behaviour against

/// Socket activation: a listening socket passed in as systemd does, for every model.
mod activation;
/// Backpressure: a client that does not read is held at `--max-pending`.
mod backpressure;
/// `--mode chaos`: hostile clients, a leaking server caught, a clean server passed.
mod bench_chaos;
/// `--compare`: the churn row, `--server NAME=CMD`, `--references`.
mod bench_compare;
/// `--framing line|length` and `udp:` targets, against in-test framed and UDP servers.
mod bench_frames;
/// Open loop (`--rate`), `--mode churn`, `--connect-timeout`.
mod bench_load;
/// `--hdr-log` and `--csv` read back, `--find-max`, `--threads` with `--pin`.
mod bench_logs;
/// Any host: `bench` and `client` across a network of namespaces, by address and by name;
/// connect failures in one line.
mod bench_netns;
/// The load generator and `--compare`: JSON, verification, corruption detection.
mod bench_smoke;
/// Chaos: well-behaved and hostile clients at once; no byte lost, no descriptor leaked.
mod chaos;
/// Command-line errors and the `listening on` line.
mod cli;
/// `echoloop client`: pipes, binary data, Unix sockets, a closed stdout.
mod client;
/// The example trace in docs/design.md, regenerated from a real session.
mod doc_trace;
/// Byte-exact echo: large transfers, hundreds of clients, IPv6, Unix sockets.
mod echo;
/// `--framing line|length`: frames split at every byte, limits, absurd lengths, EOF mid-frame.
mod framing;
/// Half-close: the client's EOF does not cut its echo short.
mod half_close;
/// A real HAProxy in front: PROXY v2, /readyz health checks, a rolling restart with --drain.
mod haproxy;
/// `--idle-timeout`: silent connections are closed, active ones are not.
mod idle;
/// Man pages, shell completions, and privileged ports.
mod install;
/// The io-uring model: buffer-ring exhaustion, backpressure, partial sends, many idle clients.
mod io_uring;
/// The ladder (examples/ladder/): each rung echoes exactly; each classic mistake fails.
mod ladder;
/// `--max-connections` and running out of descriptors: accept and close, or back off.
mod limits;
/// Several listeners in one process: every kind side by side, all bound or none.
mod listeners;
/// The live statistics line (`--stats-interval`, SIGUSR1) and `--summary-json`.
mod live_stats;
/// A client cannot flood the log: oversize frames and refused connections counted, not each logged.
mod log_flood;
/// `--metrics`: exact counters in every model, /livez, /readyz through a drain, the endpoint's errors.
mod metrics;
/// A real network: namespaces, a shaped veth link, exact echo, idle timeout and grace.
mod netns;
/// sd_notify: READY after the listening lines, STOPPING, STATUS, watchdog pings.
mod notify;
/// Partial writes: tiny socket buffers, pending bytes, WRITABLE interest.
mod partial_writes;
/// A real Prometheus: promtool accepts the exposition; a server scrapes what the test did.
mod prometheus;
/// `--proxy-protocol`: headers split at every byte, LOCAL, refusals, the bench's headers.
mod proxy_protocol;
/// Regressions and hostile clients.
mod regression;
/// Faults found by attacking the server: Unix socket files, the start-up signal window, the back-off log, limits.
mod reliability;
/// Many connections: descriptor limits raised by server and bench, --source, --active.
mod scale;
/// Graceful shutdown on SIGTERM / SIGINT, and the grace period.
mod shutdown;
/// UDP echo: every size, IPv6, reserved source ports, a full reply queue, usage errors.
mod udp;
