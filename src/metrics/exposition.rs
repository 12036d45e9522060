//! `GET /metrics`: the server's counters in the Prometheus text format (version 0.0.4),
//! written by `prometheus-client`.
//!
//! The counters are not kept twice: a scrape takes a [`Figures`] snapshot of the same
//! atomics the statistics line reads, and a `prometheus-client` collector writes it out,
//! `# HELP` and `# TYPE` lines and all. Names follow Prometheus conventions: an `echoloop_`
//! prefix, base units (bytes, seconds), `_total` on counters; one series per listener
//! (`listener="127.0.0.1:7878"`), and a `reason` label where one count has several causes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::process::ProcessSample;

/// The `Content-Type` of what [`encode`] writes.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// The crate's version, for `echoloop_build_info`.
    pub version: &'static str,
    /// The model's name (`event-loop`, ...), for `echoloop_build_info`.
    pub model: &'static str,
    /// Whether `--framing` is on (then the frame series are reported, for the framed listeners).
    pub framing: bool,
    /// One entry per listener, in the order given on the command line.
    pub listeners: Vec<ListenerFigures>,
    /// The process, when `/proc` could be read.
    pub process: Option<ProcessSample>,
}

/// One listener's counts (summed over its workers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerFigures {
    /// The `listener` label: the address as `listening on` printed it.
    pub name: String,
    /// A UDP listener: it has datagrams, not connections (each kind has its own series).
    pub datagram: bool,
    /// A stream listener with `--framing`: it has frame counts.
    pub framed: bool,
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections accepted and closed at once, by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// Connections open now.
    pub open: u64,
    /// Bytes read from clients.
    pub received_bytes: u64,
    /// Bytes written back.
    pub sent_bytes: u64,
    /// Reads that returned data.
    pub reads: u64,
    /// Whole frames echoed (with `--framing`).
    pub frames: u64,
    /// Frames over `--max-frame` (their connection is closed).
    pub frames_too_large: u64,
    /// Datagrams echoed (UDP).
    pub datagrams: u64,
    /// Datagrams dropped unanswered, by reason (UDP).
    pub datagrams_dropped: Vec<(&'static str, u64)>,
    /// Bytes read and not yet written back.
    pub pending: u64,
}

/// `figures` in the Prometheus text format.
pub fn encode(figures: Figures) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(figures)));
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a name.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        log::error!("metrics: encoding failed: {e}");
    }
    text
}

/// A value of one series: a counter or a gauge, whole or fractional.
#[derive(Debug, Clone, Copy)]
enum Value {
    Count(u64),
    Seconds(f64),
    Level(i64),
    Fraction(f64),
}

/// A level (a gauge's value) from a count.
fn level(v: u64) -> Value {
    Value::Level(i64::try_from(v).unwrap_or(i64::MAX))
}

/// One series of a metric: its labels and its value.
type Sample = (Vec<(&'static str, String)>, Value);

/// A metric: name (without `_total`, which the encoder adds to counters), help, type, samples.
struct Metric {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<Sample>,
}

/// Which listeners have a series: connections are the streams', frames the framed
/// streams', datagrams UDP's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Covers {
    Streams,
    Framed,
    Datagrams,
    All,
}

impl Covers {
    fn covers(self, listener: &ListenerFigures) -> bool {
        match self {
            Covers::Streams => !listener.datagram,
            Covers::Framed => listener.framed,
            Covers::Datagrams => listener.datagram,
            Covers::All => true,
        }
    }
}

/// What a per-listener value is.
enum Per {
    /// One value per listener.
    One(fn(&ListenerFigures) -> Value),
    /// One value per listener and reason.
    ByReason(fn(&ListenerFigures) -> &[(&'static str, u64)]),
}

/// The per-listener metrics: name, help, type, which listeners, the value.
const PER_LISTENER: [(&str, &str, MetricType, Covers, Per); 8] = [
    (
        "echoloop_connections_accepted",
        "Connections accepted and served.",
        MetricType::Counter,
        Covers::Streams,
        Per::One(|l| Value::Count(l.accepted)),
    ),
    (
        "echoloop_connections_rejected",
        "Connections closed without being served, by reason.",
        MetricType::Counter,
        Covers::Streams,
        Per::ByReason(|l| &l.rejected),
    ),
    (
        "echoloop_connections_open",
        "Connections open now.",
        MetricType::Gauge,
        Covers::Streams,
        Per::One(|l| level(l.open)),
    ),
    (
        "echoloop_received_bytes",
        "Bytes read from clients.",
        MetricType::Counter,
        Covers::All,
        Per::One(|l| Value::Count(l.received_bytes)),
    ),
    (
        "echoloop_sent_bytes",
        "Bytes echoed back to clients.",
        MetricType::Counter,
        Covers::All,
        Per::One(|l| Value::Count(l.sent_bytes)),
    ),
    (
        "echoloop_reads",
        "Reads that returned data.",
        MetricType::Counter,
        Covers::Streams,
        Per::One(|l| Value::Count(l.reads)),
    ),
    (
        "echoloop_datagrams",
        "Datagrams echoed.",
        MetricType::Counter,
        Covers::Datagrams,
        Per::One(|l| Value::Count(l.datagrams)),
    ),
    (
        "echoloop_datagrams_dropped",
        "Datagrams dropped unanswered, by reason.",
        MetricType::Counter,
        Covers::Datagrams,
        Per::ByReason(|l| &l.datagrams_dropped),
    ),
];

/// With `--framing`: the frame counts.
const FRAMING: [(&str, &str, MetricType, Covers, Per); 2] = [
    (
        "echoloop_frames",
        "Whole frames echoed.",
        MetricType::Counter,
        Covers::Framed,
        Per::One(|l| Value::Count(l.frames)),
    ),
    (
        "echoloop_frames_too_large",
        "Frames over --max-frame (each closes its connection).",
        MetricType::Counter,
        Covers::Framed,
        Per::One(|l| Value::Count(l.frames_too_large)),
    ),
];

/// The pending bytes, a level of every listener.
const PENDING: (&str, &str, MetricType, Covers, Per) = (
    "echoloop_pending_bytes",
    "Bytes read and not yet echoed.",
    MetricType::Gauge,
    Covers::All,
    Per::One(|l| level(l.pending)),
);

#[derive(Debug)]
struct Snapshot(Figures);

impl Snapshot {
    fn metrics(&self) -> Vec<Metric> {
        let f = &self.0;
        let build = Metric {
            name: "echoloop_build_info",
            help: "The running build: version and model (always 1).",
            kind: MetricType::Gauge,
            samples: vec![(vec![("version", f.version.into()), ("model", f.model.into())], Value::Level(1))],
        };
        let framing = if f.framing { &FRAMING[..] } else { &[] };
        let per_listener = PER_LISTENER.iter().chain(framing).chain([&PENDING]);
        let mut metrics: Vec<Metric> = std::iter::once(build)
            .chain(per_listener.map(|(name, help, kind, covers, per)| Metric {
                name,
                help,
                kind: *kind,
                samples: self.samples(*covers, per),
            }))
            .collect();
        if let Some(p) = f.process {
            metrics.extend(process_metrics(&p));
        }
        metrics
    }

    /// The samples of one per-listener metric.
    fn samples(&self, covers: Covers, per: &Per) -> Vec<Sample> {
        let mut samples = Vec::new();
        for l in self.0.listeners.iter().filter(|l| covers.covers(l)) {
            let listener = ("listener", l.name.clone());
            match per {
                Per::One(value) => samples.push((vec![listener], value(l))),
                Per::ByReason(reasons) => samples.extend(
                    reasons(l)
                        .iter()
                        .map(|&(r, n)| (vec![listener.clone(), ("reason", r.into())], Value::Count(n))),
                ),
            }
        }
        samples
    }
}

fn process_metrics(p: &ProcessSample) -> [Metric; 5] {
    let one = |value| vec![(Vec::new(), value)];
    [
        Metric {
            name: "process_cpu_seconds",
            help: "Total user and system CPU time spent in seconds.",
            kind: MetricType::Counter,
            samples: one(Value::Seconds(p.cpu_seconds)),
        },
        Metric {
            name: "process_resident_memory_bytes",
            help: "Resident memory size in bytes.",
            kind: MetricType::Gauge,
            samples: one(level(p.resident_bytes)),
        },
        Metric {
            name: "process_open_fds",
            help: "Number of open file descriptors.",
            kind: MetricType::Gauge,
            samples: one(level(p.open_fds)),
        },
        Metric {
            name: "process_max_fds",
            help: "Maximum number of open file descriptors.",
            kind: MetricType::Gauge,
            samples: one(level(p.max_fds)),
        },
        Metric {
            name: "process_start_time_seconds",
            help: "Start time of the process since unix epoch in seconds.",
            kind: MetricType::Gauge,
            samples: one(Value::Fraction(p.start_time_seconds)),
        },
    ]
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for metric in self.metrics() {
            let mut family = encoder.encode_descriptor(metric.name, metric.help, None, metric.kind)?;
            for (labels, value) in &metric.samples {
                let sample = family.encode_family(labels)?;
                match *value {
                    Value::Count(n) => ConstCounter::new(n).encode(sample)?,
                    Value::Seconds(s) => ConstCounter::new(s).encode(sample)?,
                    Value::Level(n) => ConstGauge::new(n).encode(sample)?,
                    Value::Fraction(x) => ConstGauge::new(x).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        let tcp = ListenerFigures {
            name: "127.0.0.1:7878".into(),
            accepted: 3,
            rejected: vec![("max_connections", 1), ("proxy_header", 2)],
            open: 1,
            received_bytes: 4096,
            sent_bytes: 4000,
            reads: 7,
            pending: 96,
            ..ListenerFigures::default()
        };
        let udp = ListenerFigures {
            name: "udp:127.0.0.1:7".into(),
            datagram: true,
            datagrams: 5,
            datagrams_dropped: vec![("reserved_source_port", 2)],
            ..ListenerFigures::default()
        };
        Figures { version: "0.1.0", model: "event-loop", listeners: vec![tcp, udp], ..Figures::default() }
    }

    #[test]
    fn every_series_has_help_type_and_exact_values() {
        let text = encode(figures());
        for line in [
            "# HELP echoloop_connections_accepted_total Connections accepted and served.",
            "# TYPE echoloop_connections_accepted_total counter",
            "echoloop_connections_accepted_total{listener=\"127.0.0.1:7878\"} 3",
            "echoloop_connections_rejected_total{listener=\"127.0.0.1:7878\",reason=\"proxy_header\"} 2",
            "# TYPE echoloop_connections_open gauge",
            "echoloop_connections_open{listener=\"127.0.0.1:7878\"} 1",
            "echoloop_received_bytes_total{listener=\"127.0.0.1:7878\"} 4096",
            "echoloop_sent_bytes_total{listener=\"127.0.0.1:7878\"} 4000",
            "echoloop_reads_total{listener=\"127.0.0.1:7878\"} 7",
            "echoloop_datagrams_total{listener=\"udp:127.0.0.1:7\"} 5",
            "echoloop_datagrams_dropped_total{listener=\"udp:127.0.0.1:7\",reason=\"reserved_source_port\"} 2",
            "echoloop_pending_bytes{listener=\"127.0.0.1:7878\"} 96",
            "echoloop_build_info{version=\"0.1.0\",model=\"event-loop\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        assert!(!text.contains("echoloop_frames_total"), "frames only with --framing:\n{text}");
        assert!(!text.contains("echoloop_datagrams_total{listener=\"127"), "no datagrams for TCP:\n{text}");
        assert!(
            !text.contains("echoloop_connections_open{listener=\"udp"),
            "no connections for UDP:\n{text}"
        );
    }

    #[test]
    fn framing_and_the_process_add_their_series() {
        let process = ProcessSample {
            cpu_seconds: 1.5,
            resident_bytes: 4 << 20,
            open_fds: 9,
            max_fds: 1024,
            start_time_seconds: 1.7e9,
        };
        let mut figures = figures();
        figures.listeners[0].framed = true;
        let text = encode(Figures { framing: true, process: Some(process), ..figures });
        for line in [
            "echoloop_frames_total{listener=\"127.0.0.1:7878\"} 0",
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 1.5",
            "process_resident_memory_bytes 4194304",
            "process_open_fds 9",
            "process_max_fds 1024",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        assert!(text.lines().any(|l| l.starts_with("process_start_time_seconds 17")), "{text}");
    }
}
