//! The example traces in the docs are produced here, from the real binary, so they cannot
//! drift from the code: `docs/design.md` shows the event loop's, `docs/models.md` the
//! io-uring model's. When a log line changes, a test fails and says how to regenerate the
//! blocks (`UPDATE_DOCS=1 cargo test --release --test integration doc_trace`).
//!
//! Each session is deterministic: one connection, and each step waits until the server has
//! logged the step's last line (for the io-uring model: until it is back in `io_uring_enter`)
//! before the next begins, so the lines and their order are always the same. Only
//! timestamps, port numbers and the descriptor of the io-uring model's connection vary from
//! run to run; they are normalised.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;

use crate::util::*;

/// The markers around a generated block in a doc.
const BEGIN: &str = "<!-- trace:begin -->";
const END: &str = "<!-- trace:end -->";

/// One model's traced session: where it is documented, how the server runs, and how the test
/// tells that the server has finished a step.
struct Session {
    /// The doc, relative to the repository, with one block between the markers.
    doc: &'static str,
    /// After `echoloop serve`.
    args: &'static [&'static str],
    /// The line the server logs once it is running and waiting.
    ready: &'static str,
    /// The marker of each client step's last line (or of a line in the step, with `settled`).
    markers: [&'static str; 3],
    /// A step is over once the last line logged contains this (the loop waits in the kernel
    /// again); `None`: once it contains the step's marker.
    settled: Option<&'static str>,
    /// Record the shutdown (SIGTERM) as a step too.
    stop: bool,
}

/// `docs/design.md`: the event loop, from start to shutdown.
const EVENT_LOOP: Session = Session {
    doc: "docs/design.md",
    args: &["127.0.0.1:0"],
    ready: "event loop running",
    markers: ["opened", "write n=6", "closed (done)"],
    settled: None,
    stop: true,
};

/// `docs/models.md`: the io-uring model, one message from accept to close. (Not its
/// shutdown: whether the signal interrupts `io_uring_enter` before or after the signal
/// thread logs it is up to the scheduler.) The receive mode is named, so the trace does not
/// depend on what the kernel offers (`auto` would pick single-shot recvs before 6.17).
const IO_URING: Session = Session {
    doc: "docs/models.md",
    args: &["--model", "io-uring", "--uring-recv", "bundle", "127.0.0.1:0"],
    ready: "] enter:",
    markers: ["opened", "send n=6", "closed"],
    settled: Some("] enter:"),
    stop: false,
};

/// `docs/design.md` shows exactly what `RUST_LOG=echoloop=trace` prints for one short session.
#[test]
fn design_doc_trace_is_what_the_server_logs() {
    check_doc(&EVENT_LOOP, &record_session(&EVENT_LOOP));
}

/// `docs/models.md` shows exactly what the io-uring model logs for one message.
#[test]
fn models_doc_io_uring_trace_is_what_the_server_logs() {
    if let Some(reason) = crate::io_uring::kernel_refuses() {
        return eprintln!("skipped: {reason}");
    }
    let bundles = config(echoloop::Model::IoUring).with_uring_recv(echoloop::UringRecv::Bundle);
    if let Err(echoloop::Error::Io(e)) = echoloop::Server::bind(&bundles)
        && e.kind() == std::io::ErrorKind::Unsupported
    {
        return eprintln!("skipped: {e}"); // a kernel before 6.17: one line, no trace to compare
    }
    check_doc(&IO_URING, &record_session(&IO_URING));
}

/// Compare `trace` with the block in `session.doc`; rewrite the block with `UPDATE_DOCS=1`,
/// else fail with both and the command that regenerates it.
fn check_doc(session: &Session, trace: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(session.doc);
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (before, documented, after) = split_at_markers(&doc, session.doc);
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
        "the trace in {} is not what the server logs now.\n\
         --- documented ---{documented}--- logged now ---{generated}---\n\
         If the new lines are right, regenerate the block with:\n    \
         UPDATE_DOCS=1 cargo test --release --test integration doc_trace",
        session.doc
    );
}

/// Run the scripted session against the real binary; return its normalised log, with a
/// comment line before the lines each client step caused.
fn record_session(session: &Session) -> String {
    // Started with a soft descriptor limit of 256, as if from a shell with a low `ulimit -n`,
    // so that the line about raising it reads the same on every machine but for the number.
    let args: Vec<&str> = std::iter::once("serve").chain(session.args.iter().copied()).collect();
    let mut command = crate::scale::with_soft_limit(&args, 256);
    command.env("RUST_LOG", "echoloop=trace");
    let bin = Bin::spawn(command);
    let server_port = bin.tcp().port();
    let mut steps = Vec::new(); // (comment, number of log lines once the step is over)
    let mut step = |comment: &str, marker: &str| {
        let done = steps.last().map_or(0, |&(_, count)| count);
        let settled = session.settled.unwrap_or(marker);
        let over = |log: &str| {
            let new: Vec<&str> = log.lines().skip(done).collect();
            new.iter().any(|line| line.contains(marker))
                && new.last().is_some_and(|line| line.contains(settled))
        };
        assert!(
            wait_until(IO_TIMEOUT, || over(&bin.stderr())),
            "no {marker:?} in the log:\n{}",
            bin.stderr()
        );
        steps.push((comment.to_string(), bin.stderr().lines().count()));
    };
    step("", session.ready);

    let mut stream = connect(bin.tcp());
    let client_port = stream.local_addr().expect("client address").port();
    step("# a client connects", session.markers[0]);

    stream.write_all(b"hello\n").expect("send");
    assert_eq!(read_n(&stream, 6), b"hello\n");
    step("# it sends \"hello\\n\" and reads the echo", session.markers[1]);

    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(stream.read(&mut [0; 16]).expect("EOF"), 0, "EOF after the echo");
    step("# it half-closes (shutdown(SHUT_WR)) and reads until EOF", session.markers[2]);

    bin.signal(libc::SIGTERM);
    let (status, log) = bin.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    if session.stop {
        steps.push(("# SIGTERM (Ctrl-C sends SIGINT, which does the same)".into(), log.lines().count()));
    }

    let fd = accepted_fd(&log);
    let hard = crate::scale::hard_limit();
    let lines: Vec<String> =
        log.lines().map(|line| normalise(line, server_port, client_port, fd, hard)).collect();
    let mut trace = format!("$ RUST_LOG=echoloop=trace echoloop serve {}\n", session.args.join(" "));
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

/// The descriptor the io-uring model's accept returned (`accept on LISTENER ADDR: fd=9`), if any.
fn accepted_fd(log: &str) -> Option<u32> {
    let line = log.lines().find(|line| line.contains("completion accept on LISTENER"))?;
    let after = line.split(": fd=").nth(1)?;
    after.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Drop the timestamp (`[2026-11-30T06:02:53Z INFO  ...` becomes `[INFO  ...`), replace the
/// ports the OS picked with `<port>` (the server's) and `<client-port>`, the accepted
/// descriptor `fd` (which depends on what else the process has open) with `fd=<fd>`, and
/// this machine's hard descriptor limit with `<hard>`.
fn normalise(line: &str, server_port: u16, client_port: u16, fd: Option<u32>, hard: u64) -> String {
    let line = match line.strip_prefix('[').and_then(|rest| rest.split_once(' ')) {
        Some((stamp, rest)) if stamp.ends_with('Z') && stamp.contains('T') => format!("[{rest}"),
        _ => line.to_string(),
    };
    let line = line
        .replace(&format!("127.0.0.1:{server_port}"), "127.0.0.1:<port>")
        .replace(&format!("127.0.0.1:{client_port}"), "127.0.0.1:<client-port>")
        .replace(&format!("descriptor limit {hard} "), "descriptor limit <hard> ");
    match fd {
        Some(fd) => replace_number(&line, &format!("fd={fd}"), "fd=<fd>"),
        None => line,
    }
}

/// `line` with every `name` that is not followed by another digit (`fd=8`, not `fd=80`)
/// replaced by `with`.
fn replace_number(line: &str, name: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(name) {
        let after = &rest[at + name.len()..];
        out.push_str(&rest[..at]);
        out.push_str(if after.starts_with(|c: char| c.is_ascii_digit()) { name } else { with });
        rest = after;
    }
    out + rest
}

/// The text before the begin marker, between the markers, and from the end marker on.
fn split_at_markers<'a>(doc: &'a str, name: &str) -> (&'a str, &'a str, &'a str) {
    let begin = doc.find(BEGIN).unwrap_or_else(|| panic!("no {BEGIN} in {name}"));
    let inner = begin + BEGIN.len();
    let end = inner + doc[inner..].find(END).unwrap_or_else(|| panic!("no {END} after {BEGIN} in {name}"));
    (&doc[..begin], &doc[inner..end], &doc[end + END.len()..])
}

/// The normalisation keeps everything but the timestamp, the two port numbers and the
/// accepted descriptor.
#[test]
fn normalise_drops_the_timestamp_the_ports_and_the_descriptor() {
    let line = "[2026-11-30T06:02:54Z DEBUG echoloop::event_loop::accept] token=0 opened \
                peer=127.0.0.1:52320 (open: 1)";
    assert_eq!(
        normalise(line, 37019, 52320, None, 20000),
        "[DEBUG echoloop::event_loop::accept] token=0 opened peer=127.0.0.1:<client-port> (open: 1)"
    );
    assert_eq!(
        normalise("[INFO  x] serving 127.0.0.1:37019", 37019, 1, None, 20000),
        "[INFO  x] serving 127.0.0.1:<port>"
    );
    let log = "[2026-11-30T06:02:54Z TRACE echoloop::io_uring] completion accept on LISTENER \
               127.0.0.1:37019: fd=8 (more)";
    assert_eq!(accepted_fd(log), Some(8));
    assert_eq!(
        normalise("[TRACE x] queue send fd=8 n=6 from fd=80, fd=8", 1, 2, Some(8), 20000),
        "[TRACE x] queue send fd=<fd> n=6 from fd=80, fd=<fd>"
    );
}
