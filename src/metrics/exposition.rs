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
    /// Whether `--framing` is on (then `echoloop_frames_total` is reported).
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

/// One series of a metric: its labels and its value.
type Sample = (Vec<(&'static str, String)>, Value);

/// A metric: name (without `_total`, which the encoder adds to counters), help, type, samples.
struct Metric {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Snapshot(Figures);

impl Snapshot {
    fn metrics(&self) -> Vec<Metric> {
        let f = &self.0;
        let per = |value: fn(&ListenerFigures) -> u64| -> Vec<Sample> {
            f.listeners.iter().map(|l| (vec![("listener", l.name.clone())], Value::Count(value(l)))).collect()
        };
        let level = |value: fn(&ListenerFigures) -> u64| -> Vec<Sample> {
            let as_level = |v: u64| Value::Level(i64::try_from(v).unwrap_or(i64::MAX));
            f.listeners.iter().map(|l| (vec![("listener", l.name.clone())], as_level(value(l)))).collect()
        };
        let by_reason = |reasons: fn(&ListenerFigures) -> &Vec<(&'static str, u64)>| -> Vec<Sample> {
            let mut samples = Vec::new();
            for l in &f.listeners {
                for &(reason, n) in reasons(l) {
                    samples.push((
                        vec![("listener", l.name.clone()), ("reason", reason.into())],
                        Value::Count(n),
                    ));
                }
            }
            samples
        };
        use MetricType::{Counter, Gauge};
        let mut metrics = vec![
            Metric {
                name: "echoloop_build_info",
                help: "The running build: version and model (always 1).",
                kind: Gauge,
                samples: vec![(
                    vec![("version", f.version.into()), ("model", f.model.into())],
                    Value::Level(1),
                )],
            },
            Metric {
                name: "echoloop_connections_accepted",
                help: "Connections accepted and served.",
                kind: Counter,
                samples: per(|l| l.accepted),
            },
            Metric {
                name: "echoloop_connections_rejected",
                help: "Connections closed without being served, by reason.",
                kind: Counter,
                samples: by_reason(|l| &l.rejected),
            },
            Metric {
                name: "echoloop_connections_open",
                help: "Connections open now.",
                kind: Gauge,
                samples: level(|l| l.open),
            },
            Metric {
                name: "echoloop_received_bytes",
                help: "Bytes read from clients.",
                kind: Counter,
                samples: per(|l| l.received_bytes),
            },
            Metric {
                name: "echoloop_sent_bytes",
                help: "Bytes echoed back to clients.",
                kind: Counter,
                samples: per(|l| l.sent_bytes),
            },
            Metric {
                name: "echoloop_reads",
                help: "Reads that returned data.",
                kind: Counter,
                samples: per(|l| l.reads),
            },
        ];
        if f.framing {
            metrics.push(Metric {
                name: "echoloop_frames",
                help: "Whole frames echoed.",
                kind: Counter,
                samples: per(|l| l.frames),
            });
            metrics.push(Metric {
                name: "echoloop_frames_too_large",
                help: "Frames over --max-frame (each closes its connection).",
                kind: Counter,
                samples: per(|l| l.frames_too_large),
            });
        }
        metrics.extend([
            Metric {
                name: "echoloop_datagrams",
                help: "Datagrams echoed.",
                kind: Counter,
                samples: per(|l| l.datagrams),
            },
            Metric {
                name: "echoloop_datagrams_dropped",
                help: "Datagrams dropped unanswered, by reason.",
                kind: Counter,
                samples: by_reason(|l| &l.datagrams_dropped),
            },
            Metric {
                name: "echoloop_pending_bytes",
                help: "Bytes read and not yet echoed.",
                kind: Gauge,
                samples: level(|l| l.pending),
            },
        ]);
        if let Some(p) = f.process {
            metrics.extend(process_metrics(&p));
        }
        metrics
    }
}

fn process_metrics(p: &ProcessSample) -> [Metric; 5] {
    let one = |value| vec![(Vec::new(), value)];
    let level = |v: u64| Value::Level(i64::try_from(v).unwrap_or(i64::MAX));
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
        let text = encode(Figures { framing: true, process: Some(process), ..figures() });
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
