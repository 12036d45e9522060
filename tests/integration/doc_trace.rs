//! The example trace in `docs/design.md` is produced here, from the real binary, so it cannot
//! drift from the code: when a log line changes, this test fails and says how to regenerate
//! the block (`UPDATE_DOCS=1 cargo test --release --test integration doc_trace`).
//!
//! The session is deterministic: one connection, and each step waits for the server's last
//! log line of the step before the next begins, so the lines and their order are always the
//! same. Only timestamps and port numbers vary from run to run; they are normalised.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;

use crate::util::*;

/// The markers around the generated block in `docs/design.md`.
const BEGIN: &str = "<!-- trace:begin -->";
const END: &str = "<!-- trace:end -->";

/// `docs/design.md` shows exactly what `RUST_LOG=echoloop=trace` prints for one short session.
#[test]
fn design_doc_trace_is_what_the_server_logs() {
    let trace = record_session();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/design.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (before, documented, after) = split_at_markers(&doc);
    let generated = format!("\n```text\n{trace}```\n");
    if documented == generated {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
        std::fs::write(&path, format!("{before}{BEGIN}{generated}{END}{after}"))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return eprintln!("doc_trace: rewrote the trace block in {}", path.display());
    }
    panic!(
        "the trace in docs/design.md is not what the server logs now.\n\
         --- documented ---{documented}--- logged now ---{generated}---\n\
         If the new lines are right, regenerate the block with:\n    \
         UPDATE_DOCS=1 cargo test --release --test integration doc_trace"
    );
}

/// Run the scripted session against the real binary; return its normalised log, with a
/// comment line before the lines each client step caused.
fn record_session() -> String {
    // Started with a soft descriptor limit of 256, as if from a shell with a low `ulimit -n`,
    // so that the line about raising it reads the same on every machine but for the number.
    let mut command = crate::scale::with_soft_limit(&["serve", "127.0.0.1:0"], 256);
    command.env("RUST_LOG", "echoloop=trace");
    let bin = Bin::spawn(command);
    let server_port = bin.tcp().port();
    let mut steps = Vec::new(); // (comment, number of log lines once the step is over)
    let mut step = |comment: &str, last_line: &str| {
        assert!(bin.wait_for_stderr(last_line, IO_TIMEOUT), "no {last_line:?} in the log:\n{}", bin.stderr());
        steps.push((comment.to_string(), bin.stderr().lines().count()));
    };
    step("", "event loop running");

    let mut stream = connect(bin.tcp());
    let client_port = stream.local_addr().expect("client address").port();
    step("# a client connects", "opened");

    stream.write_all(b"hello\n").expect("send");
    assert_eq!(read_n(&stream, 6), b"hello\n");
    step("# it sends \"hello\\n\" and reads the echo", "write n=6");

    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(stream.read(&mut [0; 16]).expect("EOF"), 0, "EOF after the echo");
    step("# it half-closes (shutdown(SHUT_WR)) and reads until EOF", "closed (done)");

    bin.signal(libc::SIGTERM);
    let (status, log) = bin.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    steps.push(("# SIGTERM (Ctrl-C sends SIGINT, which does the same)".into(), log.lines().count()));

    let hard = crate::scale::hard_limit();
    let lines: Vec<String> =
        log.lines().map(|line| normalise(line, server_port, client_port, hard)).collect();
    let mut trace = String::from("$ RUST_LOG=echoloop=trace echoloop serve 127.0.0.1:0\n");
    trace.push_str("listening on 127.0.0.1:<port>\n");
    let mut done = 0;
    for (comment, count) in steps {
        if !comment.is_empty() {
            trace.push_str(&format!("\n{comment}\n"));
        }
        for line in &lines[done..count] {
            trace.push_str(line);
            trace.push('\n');
        }
        done = count;
    }
    trace
}

/// Drop the timestamp (`[2026-11-30T06:02:53Z INFO  ...` becomes `[INFO  ...`) and replace the
/// ports the OS picked with `<port>` (the server's) and `<client-port>`, and this machine's
/// hard descriptor limit with `<hard>`.
fn normalise(line: &str, server_port: u16, client_port: u16, hard: u64) -> String {
    let line = match line.strip_prefix('[').and_then(|rest| rest.split_once(' ')) {
        Some((stamp, rest)) if stamp.ends_with('Z') && stamp.contains('T') => format!("[{rest}"),
        _ => line.to_string(),
    };
    line.replace(&format!("127.0.0.1:{server_port}"), "127.0.0.1:<port>")
        .replace(&format!("127.0.0.1:{client_port}"), "127.0.0.1:<client-port>")
        .replace(&format!("descriptor limit {hard} "), "descriptor limit <hard> ")
}

/// The text before the begin marker, between the markers, and from the end marker on.
fn split_at_markers(doc: &str) -> (&str, &str, &str) {
    let begin = doc.find(BEGIN).unwrap_or_else(|| panic!("no {BEGIN} in docs/design.md"));
    let inner = begin + BEGIN.len();
    let end = inner + doc[inner..].find(END).unwrap_or_else(|| panic!("no {END} after {BEGIN}"));
    (&doc[..begin], &doc[inner..end], &doc[end + END.len()..])
}

/// The normalisation keeps everything but the timestamp and the two port numbers.
#[test]
fn normalise_drops_the_timestamp_and_the_ports() {
    let line = "[2026-11-30T06:02:54Z DEBUG echoloop::event_loop::accept] token=0 opened \
                peer=127.0.0.1:52320 (open: 1)";
    assert_eq!(
        normalise(line, 37019, 52320, 20000),
        "[DEBUG echoloop::event_loop::accept] token=0 opened peer=127.0.0.1:<client-port> (open: 1)"
    );
    assert_eq!(
        normalise("[INFO  x] serving 127.0.0.1:37019", 37019, 1, 20000),
        "[INFO  x] serving 127.0.0.1:<port>"
    );
}
