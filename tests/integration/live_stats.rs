//! The live statistics line (`--stats-interval`, SIGUSR1) against a known load, and the
//! JSON summary (`--summary-json`), for every model.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use super::util::{Bin, IO_TIMEOUT, connect, random_bytes, run_bin, wait_until, write_until_blocked};
use super::variants::Variant;

/// Messages of this size, one at a time, each echoed before the next is sent: each is one
/// `read` on the server, so the line's `reads` count is exact.
const MESSAGE: usize = 128;
const MESSAGES: usize = 10;

/// Send [`MESSAGES`] messages one at a time and check every echo.
fn round_trips(stream: &mut TcpStream) {
    for i in 0..MESSAGES {
        let message = random_bytes(MESSAGE, i as u64);
        stream.write_all(&message).unwrap();
        let mut back = vec![0; MESSAGE];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, message);
    }
}

/// The value of `key=` in a statistics line (also used by `udp.rs`).
pub(crate) fn field(line: &str, key: &str) -> u64 {
    let start = line.find(&format!(" {key}=")).or_else(|| line.find(&format!("({key}=")));
    let rest = &line[start.unwrap_or_else(|| panic!("no {key}= in {line}")) + key.len() + 2..];
    let value: String = rest.chars().take_while(char::is_ascii_digit).collect();
    value.parse().unwrap_or_else(|_| panic!("{key}= is not a number in {line}"))
}

/// The statistics lines a server has logged so far.
fn stats_lines(server: &Bin) -> Vec<String> {
    server.stderr().lines().filter(|l| l.contains("stats: open=")).map(str::to_string).collect()
}

/// Send SIGUSR1 and return the line it logged (bounded; also used by `io_uring.rs`).
pub(crate) fn line_on_sigusr1(server: &Bin) -> String {
    let before = stats_lines(server).len();
    server.signal(libc::SIGUSR1);
    assert!(
        wait_until(IO_TIMEOUT, || stats_lines(server).len() > before),
        "no statistics line after SIGUSR1; stderr:\n{}",
        server.stderr()
    );
    stats_lines(server)[before].clone()
}

/// The sum of `key=` over every statistics line so far.
fn total(server: &Bin, key: &str) -> u64 {
    stats_lines(server).iter().map(|line| field(line, key)).sum()
}

/// SIGUSR1 logs a line at once, without --stats-interval, with the counts of a known load:
/// while the client is connected, then again after it left.
///
/// The client may see its last echo a moment before the server has counted it (the event
/// loop publishes its counts once per turn, after the turn's writes), so the test signals
/// until the lines account for every byte; over all lines, every count must then be exact.
fn sigusr1_line_counts_a_known_load(variant: Variant) {
    let server = Bin::serve(&[variant.args(), &["127.0.0.1:0"]].concat());
    let mut client = connect(server.tcp());
    round_trips(&mut client);
    let bytes = (MESSAGES * MESSAGE) as u64;
    let counted_all = || {
        line_on_sigusr1(&server);
        total(&server, "bytes") == bytes
    };
    assert!(wait_until(IO_TIMEOUT, counted_all), "lines never counted every byte:\n{}", server.stderr());
    let lines = stats_lines(&server);
    let last = lines.last().unwrap();
    for (key, want) in [("accepted", 1), ("rejected", 0), ("reads", MESSAGES as u64)] {
        assert_eq!(total(&server, key), want, "{key} over the lines:\n{}", lines.join("\n"));
    }
    for (key, want) in [("open", 1), ("pending", 0), ("peak", 1)] {
        assert_eq!(field(last, key), want, "{key} in {last}");
    }
    drop(client);
    // The next line counts only what happened since this one: nothing, and nobody open.
    assert!(
        wait_until(IO_TIMEOUT, || {
            let line = line_on_sigusr1(&server);
            field(&line, "open") == 0 && field(&line, "accepted") == 0 && field(&line, "bytes") == 0
        }),
        "the client never showed as gone; stderr:\n{}",
        server.stderr()
    );
    // SIGUSR1 is not a stop: the server still serves.
    round_trips(&mut connect(server.tcp()));
}

for_variants!(sigusr1_line_counts_a_known_load);

/// `--stats-interval`: lines come on their own, and over all of them the counts add up to
/// the load exactly. A connection over `--max-connections` shows as rejected.
#[test]
fn interval_lines_add_up_to_the_load() {
    let server = Bin::serve(&["127.0.0.1:0", "--stats-interval", "0.1", "--max-connections", "1"]);
    let mut client = connect(server.tcp());
    round_trips(&mut client);
    let refused = connect(server.tcp()); // over the cap: accepted and closed at once
    let mut buf = [0; 1];
    assert_eq!((&refused).read(&mut buf).unwrap_or(0), 0);
    drop(client);
    let total = |key| total(&server, key);
    let done =
        || total("accepted") == 1 && total("rejected") == 1 && total("bytes") == (MESSAGES * MESSAGE) as u64;
    assert!(wait_until(IO_TIMEOUT, done), "lines never added up; stderr:\n{}", server.stderr());
    assert_eq!(total("reads"), MESSAGES as u64);
    // Lines keep coming with nothing to report, and say the client has gone.
    let count = stats_lines(&server).len();
    assert!(wait_until(IO_TIMEOUT, || stats_lines(&server).len() >= count + 2), "lines stopped coming");
    let last = stats_lines(&server).pop().unwrap();
    assert!(last.contains("open=0 accepted=0 rejected=0 reads/s=0 bytes/s=0 pending=0"), "{last}");
}

/// With `--workers 2`, one line sums the workers and shows each one's share.
#[test]
fn workers_line_sums_and_splits() {
    let server = Bin::serve(&["127.0.0.1:0", "--workers", "2"]);
    let mut clients: Vec<TcpStream> = (0..8).map(|_| connect(server.tcp())).collect();
    for client in &mut clients {
        round_trips(client);
    }
    // As in `sigusr1_line_counts_a_known_load`: a worker may count its last echo a moment
    // after the client read it, so signal until the lines account for every byte.
    let bytes = (8 * MESSAGES * MESSAGE) as u64;
    let counted_all = || {
        line_on_sigusr1(&server);
        total(&server, "bytes") == bytes
    };
    assert!(wait_until(IO_TIMEOUT, counted_all), "lines never counted every byte:\n{}", server.stderr());
    let line = stats_lines(&server).pop().unwrap();
    assert_eq!(field(&line, "open"), 8, "{line}");
    let split =
        line.split(" per-worker open=[").nth(1).unwrap_or_else(|| panic!("no per-worker split: {line}"));
    let open: u64 = split.split(']').next().unwrap().split(',').map(|n| n.parse::<u64>().unwrap()).sum();
    assert_eq!(open, 8, "{line}");
}

/// Bytes a client does not take back are `pending`: exactly `--max-pending` once the
/// server has stopped reading it (backpressure).
#[test]
fn pending_shows_what_a_slow_client_holds() {
    let server = Bin::serve(&["127.0.0.1:0", "--max-pending", "64K"]);
    let client = connect(server.tcp());
    let sent = write_until_blocked(&client, &random_bytes(16 << 20, 5));
    assert!(sent > 64 * 1024, "only {sent} bytes went out");
    assert!(
        wait_until(IO_TIMEOUT, || field(&line_on_sigusr1(&server), "pending") == 64 * 1024),
        "pending never reached --max-pending; lines:\n{}",
        stats_lines(&server).join("\n")
    );
}

/// Regression: the event loop counted a closed connection's pending bytes as never echoed,
/// but not the bytes of a partial frame dropped at EOF or of a frame over `--max-frame`,
/// which were read and never became pending: `pending` stayed up (57 here) with nobody
/// connected, for good. Every model now shows `pending=0` once both clients are gone.
fn discarded_frames_leave_nothing_pending(variant: Variant) {
    let flags = ["127.0.0.1:0", "--framing", "length", "--max-frame", "100"];
    let server = Bin::serve(&[variant.args(), &flags].concat());
    let frame = |payload: &[u8]| [&(payload.len() as u32).to_be_bytes()[..], payload].concat();
    // A whole frame, then 3 bytes of a prefix, then EOF: the 3 bytes are discarded.
    let mut cut_short = connect(server.tcp());
    cut_short.write_all(&[frame(b"hello"), vec![0, 0, 0]].concat()).unwrap();
    cut_short.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    cut_short.read_to_end(&mut echoed).expect("the whole frame, then EOF");
    assert_eq!(echoed, frame(b"hello"));
    // A whole frame, then one declaring 1000 bytes (over the limit) and 50 of them.
    let mut refused = connect(server.tcp());
    refused.write_all(&[frame(b"ok"), 1000u32.to_be_bytes().to_vec(), vec![7; 50]].concat()).unwrap();
    let mut echoed = Vec::new();
    let _ = refused.read_to_end(&mut echoed); // EOF, or a reset once the frame is refused
    assert_eq!(echoed, frame(b"ok"));
    let gone = || field(&line_on_sigusr1(&server), "open") == 0;
    assert!(wait_until(IO_TIMEOUT, gone), "the clients never showed as gone:\n{}", server.stderr());
    let last = stats_lines(&server).pop().unwrap();
    assert_eq!(field(&last, "pending"), 0, "{last}");
}

for_variants!(discarded_frames_leave_nothing_pending);

/// A path for a summary, unique per test.
fn summary_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("echoloop-summary-{}-{name}.json", std::process::id()))
}

fn read_json(path: &PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    std::fs::remove_file(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `--summary-json` after SIGTERM: why it ended, and the counts of a known load, in total
/// and per worker.
#[test]
fn summary_json_after_sigterm() {
    let path = summary_path("sigterm");
    let server = Bin::serve(&["127.0.0.1:0", "--workers", "2", "--summary-json", path.to_str().unwrap()]);
    for _ in 0..3 {
        round_trips(&mut connect(server.tcp()));
    }
    std::thread::sleep(Duration::from_millis(50)); // the last close reaches its worker
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    let json = read_json(&path);
    assert_eq!(json["exit_reason"], "signal", "{json}");
    assert_eq!(json["signal"], "SIGTERM");
    assert!(json["error"].is_null());
    assert_eq!(json["connections"], 3);
    assert_eq!(json["bytes_echoed"], 3 * MESSAGES * MESSAGE);
    assert_eq!(json["reads"], 3 * MESSAGES);
    assert!(json.get("frames").is_none() && json.get("datagrams").is_none(), "{json}");
    assert_eq!(json["rejected"], 0);
    assert!(json["duration_secs"].as_f64().is_some_and(|d| d > 0.0), "{json}");
    let workers = json["per_worker"].as_array().expect("per_worker is a list");
    assert_eq!(workers.len(), 2);
    let served: u64 = workers.iter().map(|w| w["connections"].as_u64().unwrap()).sum();
    assert_eq!(served, 3);
}

/// With `--framing line` the reports count frames, not reads: the statistics line says
/// `frames`, and the JSON summary has `frames` beside `reads`. Six lines, one of them cut
/// in two by the client's writes, are six frames however many reads they took.
fn framed_servers_count_frames(variant: Variant) {
    let path = summary_path(&format!("frames-{variant:?}"));
    let flags = ["127.0.0.1:0", "--framing", "line", "--summary-json", path.to_str().unwrap()];
    let server = Bin::serve(&[variant.args(), &flags].concat());
    let mut client = connect(server.tcp());
    let lines = b"one\ntwo\nthree\nfour\nfive\nsix\n";
    let (first, rest) = lines.split_at(9); // "one\ntwo\nt": the third line is cut
    for (part, echoed) in [(first, &lines[..8]), (rest, &lines[8..])] {
        client.write_all(part).unwrap();
        let mut back = vec![0; echoed.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, echoed);
    }
    let counted_all = || {
        line_on_sigusr1(&server);
        total(&server, "frames") == 6
    };
    assert!(wait_until(IO_TIMEOUT, counted_all), "lines never counted 6 frames:\n{}", server.stderr());
    assert!(stats_lines(&server).iter().all(|line| !line.contains("reads")), "{}", server.stderr());
    drop(client);
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(log.contains("bytes (6 frames)"), "summary line:\n{log}");
    let json = read_json(&path);
    assert_eq!(json["frames"], 6, "{json}");
    assert!(json["reads"].as_u64().is_some_and(|reads| reads >= 2), "{json}");
    let per_worker = json["per_worker"].as_array().expect("per_worker is a list");
    assert_eq!(per_worker.iter().map(|w| w["frames"].as_u64().unwrap()).sum::<u64>(), 6, "{json}");
}

for_variants!(framed_servers_count_frames);

/// A server that cannot even bind still writes its summary: exit reason "error", and the
/// error it printed.
#[test]
fn summary_json_after_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let path = summary_path("error");
    let (code, _, stderr) = run_bin(&["serve", &addr, "--summary-json", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let json = read_json(&path);
    assert_eq!(json["exit_reason"], "error", "{json}");
    let error = json["error"].as_str().expect("the error");
    assert!(error.contains(&addr) && stderr.contains(error), "json: {error}\nstderr: {stderr}");
    assert_eq!(json["connections"], 0);
}

/// An unwritable `--summary-json` path is reported, and makes the exit status non-zero.
#[test]
fn summary_json_to_an_unwritable_path_fails() {
    let server = Bin::serve(&["127.0.0.1:0", "--summary-json", "/nonexistent-dir/summary.json"]);
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(IO_TIMEOUT);
    assert_eq!(status.code(), Some(1), "log:\n{log}");
    assert!(log.contains("cannot write the summary to /nonexistent-dir/summary.json"), "{log}");
}
