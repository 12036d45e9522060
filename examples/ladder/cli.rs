//! The command line every rung shares, and none of them is about: the address as the one
//! argument (default 127.0.0.1:7878, port 0 lets the OS pick), the `listening on ADDR`
//! line that scripts and tests wait for, and one line and a non-zero exit on failure.

use std::io::{self, Write};
use std::net::SocketAddr;

/// Where a rung listens when run without an argument.
const DEFAULT: ([u8; 4], u16) = ([127, 0, 0, 1], 7878);

/// Run `serve` on the address given as the program's only argument: a bad argument is a
/// usage error (exit 2), a failure of `serve` one line naming the address (exit 1).
pub fn run(program: &str, serve: impl FnOnce(SocketAddr) -> io::Result<()>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    serve_or_exit(program, address(program, &args), serve);
}

/// Run `serve` on `addr`; if it fails, say so in one line naming the address, and exit 1.
pub fn serve_or_exit(program: &str, addr: SocketAddr, serve: impl FnOnce(SocketAddr) -> io::Result<()>) {
    if let Err(e) = serve(addr) {
        eprintln!("{program}: {addr}: {e}");
        std::process::exit(1);
    }
}

/// `args` must be empty or one `HOST:PORT`; anything else exits 2 with a usage line.
pub fn address(program: &str, args: &[String]) -> SocketAddr {
    let addr = match args {
        [] => Ok(SocketAddr::from(DEFAULT)),
        [one] => one.parse().map_err(|e| format!("'{one}': {e}")),
        _ => Err("expected one argument".to_string()),
    };
    addr.unwrap_or_else(|problem| usage(program, &problem, "[HOST:PORT]"))
}

/// One line saying what is wrong, one saying what is expected; exit 2.
pub fn usage(program: &str, problem: &str, expected: &str) -> ! {
    eprintln!("{program}: {problem}\nusage: {program} {expected}");
    std::process::exit(2)
}

/// Print `listening on ADDR` with the address actually bound, and flush: stdout to a pipe is
/// block-buffered, and whoever started us is waiting for this line.
pub fn announce(bound: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {bound}")?;
    out.flush()
}
