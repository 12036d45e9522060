//! The final summary as JSON (`--summary-json PATH`), for scripts and CI:
//!
//! ```json
//! {"exit_reason":"signal","signal":"SIGTERM","error":null,"duration_secs":12.5,
//!  "connections":3,"rejected":0,"reads":40,"bytes_echoed":5120,"peak_connections":2,
//!  "per_worker":[{"connections":3,"rejected":0,"reads":40,"bytes_echoed":5120,"peak_connections":2}]}
//! ```
//!
//! With `--framing`, `"frames"` (whole frames echoed) follows `"reads"`, in total and per
//! worker. A UDP echo adds what became of its datagrams:
//! `"datagrams":{"echoed":5,"dropped_reserved_port":1,"dropped_queue_full":0,"dropped_send_failed":0}`.
//! Each listener's share ends the document, in the order given, named by its address:
//! `"listeners":[{"addr":"127.0.0.1:7","connections":3,...},{"addr":"udp:127.0.0.1:7",...,"datagrams":{...}}]`.

use std::io;
use std::path::Path;

use serde::Serialize;

use super::{Datagrams, ListenerSummary, Summary, WorkerSummary};

/// Why the server ended, as the JSON summary says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// A signal (its name, `SIGTERM` say) asked for a graceful stop.
    Signal(String),
    /// A [`crate::ShutdownHandle::shutdown`] call did.
    Shutdown,
    /// It failed (the error, as printed).
    Error(String),
}

#[derive(Serialize)]
struct Document<'a> {
    exit_reason: &'static str,
    signal: Option<&'a str>,
    error: Option<&'a str>,
    duration_secs: f64,
    connections: u64,
    rejected: u64,
    rejected_proxy_header: u64,
    reads: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    frames: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frames_too_large: Option<u64>,
    bytes_echoed: u64,
    peak_connections: u64,
    per_worker: &'a [WorkerSummary],
    #[serde(skip_serializing_if = "Option::is_none")]
    datagrams: Option<Datagrams>,
    listeners: &'a [ListenerSummary],
}

/// Write `summary` and why the server ended to `path` as one JSON object (and a newline).
/// The error names the path.
pub fn write_summary_json(path: &Path, summary: &Summary, reason: &ExitReason) -> io::Result<()> {
    let (exit_reason, signal, error) = match reason {
        ExitReason::Signal(name) => ("signal", Some(name.as_str()), None),
        ExitReason::Shutdown => ("shutdown", None, None),
        ExitReason::Error(message) => ("error", None, Some(message.as_str())),
    };
    let document = Document {
        exit_reason,
        signal,
        error,
        duration_secs: summary.duration.as_secs_f64(),
        connections: summary.connections,
        rejected: summary.rejected,
        rejected_proxy_header: summary.rejected_proxy_header,
        reads: summary.reads,
        frames: summary.frames,
        frames_too_large: summary.frames_too_large,
        bytes_echoed: summary.bytes_echoed,
        peak_connections: summary.peak_connections,
        per_worker: &summary.per_worker,
        datagrams: summary.datagrams,
        listeners: &summary.listeners,
    };
    let mut text = serde_json::to_string(&document).map_err(io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write the summary to {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_field_is_written_and_parses_back() {
        let dir = std::env::temp_dir().join(format!("echoloop-json-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("summary.json");
        let worker = WorkerSummary {
            connections: 2,
            rejected: 1,
            rejected_proxy_header: 1,
            reads: 3,
            frames: Some(2),
            frames_too_large: Some(1),
            bytes_echoed: 40,
            peak_connections: 2,
        };
        let summary = Summary::combine(vec![worker, worker], Duration::from_millis(1500));
        write_summary_json(&path, &summary, &ExitReason::Error("boom".into())).unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(value["exit_reason"], "error");
        assert_eq!(value["error"], "boom");
        assert!(value["signal"].is_null());
        assert_eq!(value["duration_secs"], 1.5);
        assert_eq!((value["connections"].as_u64(), value["bytes_echoed"].as_u64()), (Some(4), Some(80)));
        assert_eq!((value["reads"].as_u64(), value["frames"].as_u64()), (Some(6), Some(4)));
        assert_eq!(value["per_worker"][1]["reads"], 3);
        assert_eq!(value["per_worker"][1]["frames"], 2);
        assert_eq!(
            (value["rejected_proxy_header"].as_u64(), value["frames_too_large"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(value["per_worker"].as_array().map(Vec::len), Some(2));
        assert!(value.get("datagrams").is_none(), "a stream server has no datagrams: {value}");
    }

    #[test]
    fn a_udp_summary_carries_its_drop_counts_and_no_frames() {
        let path = std::env::temp_dir().join(format!("echoloop-json-udp-{}.json", std::process::id()));
        let datagrams =
            Datagrams { echoed: 5, dropped_reserved_port: 1, dropped_queue_full: 2, dropped_send_failed: 3 };
        let summary = Summary { reads: 11, datagrams: Some(datagrams), ..Summary::default() };
        write_summary_json(&path, &summary, &ExitReason::Shutdown).unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let d = &value["datagrams"];
        assert_eq!(
            (d["echoed"].as_u64(), d["dropped_reserved_port"].as_u64()),
            (Some(5), Some(1)),
            "{value}"
        );
        assert_eq!((d["dropped_queue_full"].as_u64(), d["dropped_send_failed"].as_u64()), (Some(2), Some(3)));
        assert!(value.get("frames").is_none(), "{value}");
    }

    #[test]
    fn an_unwritable_path_is_named() {
        let path = Path::new("/nonexistent-dir/summary.json");
        let e = write_summary_json(path, &Summary::default(), &ExitReason::Shutdown).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/summary.json"), "{e}");
    }
}
