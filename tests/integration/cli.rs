//! The command line: bad input gets one clear line and the right exit code, never a panic;
//! good input prints the `listening on ADDR` line.

use std::net::{SocketAddr, TcpListener};

use crate::util::*;

/// Run `echoloop ARGS`, expecting failure with `code`; return stderr after the common checks:
/// no panic, and the first line says what went wrong.
#[track_caller]
fn fails(args: &[&str], code: i32) -> String {
    let (got, stdout, stderr) = run_bin(args);
    assert_eq!(got, code, "echoloop {args:?} exited {got}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "echoloop {args:?} panicked:\n{stderr}");
    assert!(stdout.is_empty(), "echoloop {args:?} printed on stdout: {stdout}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("error") || first.starts_with("echoloop: "), "unclear first line: {first}");
    stderr
}

/// Clap's usage errors: one `error:` line naming the culprit, exit 2.
#[track_caller]
fn usage_error(args: &[&str], culprit: &str) {
    let stderr = fails(args, 2);
    let first = stderr.lines().next().unwrap();
    assert!(first.starts_with("error:") && first.contains(culprit), "{args:?}: {first}");
}

/// Errors found at run time (binding): exactly one line, naming the address, non-zero exit.
#[track_caller]
fn runtime_error(args: &[&str], code: i32, mentions: &[&str]) {
    let stderr = fails(args, code);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: more than one line:\n{stderr}");
    for word in mentions {
        assert!(stderr.contains(word), "{args:?}: {stderr} does not mention {word}");
    }
}

/// An unknown flag is a usage error (exit 2) naming the flag.
#[test]
fn unknown_flag_is_a_usage_error() {
    usage_error(&["serve", "--bogus"], "--bogus");
    usage_error(&["--bogus"], "--bogus");
}

/// Values that do not parse or are out of range are usage errors naming the value.
#[test]
fn bad_values_are_usage_errors() {
    usage_error(&["serve", "--max-pending", "abc", "127.0.0.1:0"], "abc");
    usage_error(&["serve", "--workers", "0", "127.0.0.1:0"], "0");
    usage_error(&["serve", "--idle-timeout", "soon", "127.0.0.1:0"], "soon");
    usage_error(&["serve", "--max-connections", "-3", "127.0.0.1:0"], "-3");
    usage_error(&["serve", "--max-pending", "0", "127.0.0.1:0"], "--max-pending");
    usage_error(&["serve", "--shutdown-grace", "-1", "127.0.0.1:0"], "-1");
}

/// Addresses that cannot be parsed are rejected with a message naming the address.
#[test]
fn bad_addresses_are_named() {
    for addr in ["nonsense", "1.2.3.4:99999", "example.com:80", "unix:"] {
        usage_error(&["serve", addr], addr);
    }
}

/// A port that is already taken: one line naming the address and saying "in use", exit 1.
#[test]
fn address_in_use_is_one_line_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    runtime_error(&["serve", &addr], 1, &[&addr, "in use"]);
}

/// A Unix socket path in a directory that does not exist: one line naming the path, exit 1.
#[test]
fn unix_path_in_missing_directory_is_named() {
    let addr = "unix:/nonexistent-echoloop-dir/x.sock";
    runtime_error(&["serve", addr], 1, &[addr]);
}

/// A path that is a regular file is refused (naming it) and the file is left alone.
#[test]
fn unix_path_that_is_a_regular_file_is_left_alone() {
    let path = temp_socket_path("regular-file");
    std::fs::write(&path, b"precious").unwrap();
    let addr = format!("unix:{}", path.display());
    runtime_error(&["serve", &addr], 1, &[&addr, "not a socket"]);
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();
}

/// `--workers 2` on a Unix socket cannot share the port: a usage error (exit 2), one line.
#[test]
fn workers_need_a_tcp_address() {
    runtime_error(&["serve", "--workers", "2", "unix:/tmp/echoloop-never-bound.sock"], 2, &["--workers"]);
    assert!(!std::path::Path::new("/tmp/echoloop-never-bound.sock").exists());
}

/// `--help` prints the usage and exits 0, for the program and for `serve`.
#[test]
fn help_works() {
    for args in [&["--help"][..], &["serve", "--help"]] {
        let (code, stdout, stderr) = run_bin(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stdout.contains("Usage:"), "{args:?}: {stdout}");
    }
    let (_, stdout, _) = run_bin(&["serve", "--help"]);
    for flag in ["--max-pending", "--idle-timeout", "--shutdown-grace", "--max-connections", "--workers"] {
        assert!(stdout.contains(flag), "serve --help does not list {flag}");
    }
    // Regression: the UDP echo came with the framing merge, but ADDR's help (and so the
    // man page) still listed only the stream forms.
    let addr_help = stdout.split("[ADDR]").nth(2).expect("the ADDR argument's help");
    assert!(addr_help.contains("udp:HOST:PORT"), "serve --help does not name udp: addresses:\n{stdout}");
}

/// Port 0 on IPv4 prints `listening on 127.0.0.1:PORT` with the real port.
#[test]
fn listening_line_ipv4() {
    let bin = Bin::serve(&["127.0.0.1:0"]);
    let addr: SocketAddr = bin.addr.parse().expect("listening on HOST:PORT");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    assert_eq!(bin.addr, format!("127.0.0.1:{}", addr.port()));
}

/// Port 0 on IPv6 prints `listening on [::1]:PORT` with the real port.
#[test]
fn listening_line_ipv6() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        eprintln!("note: skipping listening_line_ipv6: this host has no IPv6 loopback ({e})");
        return;
    }
    let bin = Bin::serve(&["[::1]:0"]);
    let addr: SocketAddr = bin.addr.parse().expect("listening on [V6]:PORT");
    assert_ne!(addr.port(), 0);
    assert_eq!(bin.addr, format!("[::1]:{}", addr.port()));
}
