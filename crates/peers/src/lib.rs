//! What the reference servers share: their command line (one optional listen address)
//! and the one line they print once bound. The servers themselves are the binaries
//! `peer-epoll` (a bare epoll loop on `libc`), `peer-tokio` (tokio's echo server) and
//! `peer-udp` (the naive UDP echo: one `recv_from`, one `send_to`).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

/// Where a server listens when no address is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// A server's `main`: take the listen address from the command line and `serve` it. A bad
/// argument is one line on stderr and exit status 2 (usage); an error while serving is one
/// line and status 1; a clean stop (a signal) is 0.
pub fn run(program: &str, serve: impl FnOnce(SocketAddr) -> io::Result<()>) -> ExitCode {
    let (message, code) = match parse_args(std::env::args().skip(1)) {
        Err(message) => (message, 2),
        Ok(addr) => match serve(addr) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) => (e.to_string(), 1),
        },
    };
    eprintln!("{program}: {message}");
    ExitCode::from(code)
}

/// The listen address from the arguments after the program name: the only one, or
/// [`DEFAULT_ADDR`] when there is none. The error is one line for the user.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<SocketAddr, String> {
    let mut args = args.into_iter();
    let addr = args.next().unwrap_or_else(|| DEFAULT_ADDR.to_string());
    if let Some(extra) = args.next() {
        return Err(format!("unexpected argument {extra:?} (usage: PROGRAM [HOST:PORT])"));
    }
    addr.parse().map_err(|e| {
        format!("invalid address {addr:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:7878 or [::1]:7878)")
    })
}

/// Print `listening on ADDR` with the real bound address and flush it at once: a harness
/// that started the server on port 0 waits for this line to learn the port.
pub fn announce(addr: SocketAddr) -> io::Result<()> {
    print_flushed(format_args!("listening on {addr}"))
}

/// [`announce`] for a UDP echo: `listening on udp:ADDR`, as `echoloop serve` says it.
pub fn announce_udp(addr: SocketAddr) -> io::Result<()> {
    print_flushed(format_args!("listening on udp:{addr}"))
}

fn print_flushed(line: std::fmt::Arguments<'_>) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SocketAddr, String> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn no_argument_means_the_default_address() {
        assert_eq!(parse(&[]), Ok("127.0.0.1:7878".parse().unwrap()));
    }

    #[test]
    fn ipv4_and_ipv6_addresses_parse() {
        assert_eq!(parse(&["127.0.0.1:0"]).unwrap().to_string(), "127.0.0.1:0");
        assert_eq!(parse(&["[::1]:9000"]).unwrap().to_string(), "[::1]:9000");
    }

    #[test]
    fn bad_or_extra_arguments_are_one_line_errors() {
        for args in [&["localhost"][..], &["127.0.0.1"], &["127.0.0.1:99999"], &["127.0.0.1:1", "x"]] {
            let err = parse(args).expect_err("should be rejected");
            assert!(!err.contains('\n') && err.contains(args[args.len() - 1]), "{args:?}: {err}");
        }
    }
}
