//! A real Prometheus (the distribution's package): `promtool check metrics` accepts the
//! exposition, and a Prometheus server scraping `--metrics` every second reports, through
//! its query API, the connections this test made.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::metrics::{http_get, scrape};
use super::util::{Bin, IO_TIMEOUT, connect, installed, run_with_stdin, wait_until};

/// Connections the test makes; the query must return exactly this many.
const CONNECTIONS: u64 = 7;

/// `promtool check metrics` on a scrape after real traffic: no error, no lint problem.
#[test]
fn promtool_accepts_the_exposition() {
    let Some(promtool) = installed("promtool") else {
        return println!(
            "skipped: promtool is not installed (.ci/run installs the distribution's prometheus)"
        );
    };
    let server = Bin::serve(&["127.0.0.1:0", "--framing", "line", "--metrics", "127.0.0.1:0"]);
    let mut stream = connect(server.tcp());
    stream.write_all(b"a line\n").unwrap();
    stream.read_exact(&mut [0u8; 7]).unwrap();
    let exposition = scrape(&server).0;
    let mut command = Command::new(promtool);
    command.args(["check", "metrics"]);
    let checked = run_with_stdin(command, exposition.clone().into_bytes(), IO_TIMEOUT);
    assert!(
        checked.code == 0 && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {:?}\n{}{}\n{exposition}",
        checked.code,
        String::from_utf8_lossy(&checked.stdout),
        checked.stderr
    );
}

/// Prometheus, killed on drop, with its configuration and storage in a temporary directory.
struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_scrapes_the_connections_made() {
    let Some(program) = installed("prometheus") else {
        return println!(
            "skipped: prometheus is not installed (.ci/run installs the distribution's package)"
        );
    };
    let server = Bin::serve(&["127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    for i in 0..CONNECTIONS {
        let mut stream = connect(server.tcp());
        stream.write_all(&[i as u8; 10]).unwrap();
        stream.read_exact(&mut [0u8; 10]).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("echoloop-prometheus-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: echoloop\n    \
         static_configs:\n      - targets: ['{}']\n",
        server.metrics()
    );
    fs::write(dir.join("prometheus.yml"), config).unwrap();
    let web = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // free, released
    let child = Command::new(program)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _prometheus = Prometheus { child, dir };
    let query = format!(
        "/api/v1/query?query=echoloop_connections_accepted_total%7Blistener%3D%22{}%22%7D",
        server.addr.replace(':', "%3A")
    );
    let mut last = String::new();
    let seen = wait_until(Duration::from_secs(60), || {
        let Ok(stream) = std::net::TcpStream::connect(web) else { return false };
        drop(stream);
        let (status, body) = http_get(web, &query);
        last = body;
        status == 200 && answer(&last) == Some(CONNECTIONS)
    });
    assert!(seen, "Prometheus never reported {CONNECTIONS} connections; last answer: {last}");
}

/// The value of the one sample in a query API answer.
fn answer(body: &str) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let value = json["data"]["result"].get(0)?["value"].get(1)?.as_str()?;
    value.parse().ok()
}
