//! Socket activation: the listening socket is passed in the way systemd passes it, and
//! `echoloop serve` serves it, for every model, TCP and Unix.
//!
//! How a test passes a socket like a service manager: it binds the listener itself, then
//! starts the binary with the listener duplicated onto fd 3 (in `pre_exec`, between fork
//! and exec) and `LISTEN_FDS=1`. `LISTEN_PID` must be the *server's* pid, which is not
//! known before the fork, and setting a variable in `pre_exec` is not async-signal-safe
//! (`setenv` may allocate). So the child execs `/bin/sh -c 'export LISTEN_PID=$$; exec
//! "$0" "$@"' echoloop serve ...`: `$$` is the shell's pid, and `exec` keeps that pid for
//! echoloop, so the variable names the right process.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::util::{
    Bin, IO_TIMEOUT, assert_same_bytes, connect, echo_chunked, random_bytes, run_to_end, temp_socket_path,
};
use super::variants::Variant;

/// Exec echoloop with `LISTEN_PID` set to its own pid (see the module docs).
const EXEC_WITH_OWN_PID: &str = r#"export LISTEN_PID=$$; exec "$0" "$@""#;

/// `echoloop ARGS...` with `listener` as fd 3 and `LISTEN_FDS=1`, as a service manager
/// starts it. `own_pid`: set `LISTEN_PID` to the server's pid (else it stays as `env` says).
fn activated_command(listener: RawFd, own_pid: bool, env: &[(&str, &str)], args: &[&str]) -> Command {
    let echoloop = env!("CARGO_BIN_EXE_echoloop");
    let mut command = if own_pid {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c").arg(EXEC_WITH_OWN_PID).arg(echoloop);
        sh
    } else {
        Command::new(echoloop)
    };
    command.args(args).env("LISTEN_FDS", "1").envs(env.iter().copied());
    // SAFETY: between fork and exec only async-signal-safe calls are allowed: dup2 and
    // fcntl are. Every descriptor Rust opens is close-on-exec; dup2 makes a copy without
    // that flag, and if the listener already is fd 3, the flag is cleared by hand.
    unsafe {
        command.pre_exec(move || {
            if listener == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(listener, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Run an activated echoloop that is expected to exit at once; its output (bounded).
pub(crate) fn run_activated(listener: RawFd, args: &[&str]) -> Output {
    run_to_end(activated_command(listener, true, &[], args))
}

/// A test's own TCP listener on a free loopback port, as a `.socket` unit would bind it.
fn tcp_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind the socket to pass")
}

/// Every byte of 256 KiB comes back through a TCP socket the server inherited, and the
/// `listening on` line names the inherited socket's address.
fn serves_inherited_tcp(variant: Variant) {
    let listener = tcp_listener();
    let addr = listener.local_addr().unwrap();
    let server = Bin::spawn(activated_command(listener.as_raw_fd(), true, &[], &variant.serve_args(&[])));
    drop(listener); // the server has its own copy now; ours closing changes nothing
    assert_eq!(server.tcp(), addr, "the listening line names the passed socket");
    let data = random_bytes(256 * 1024, 12);
    assert_same_bytes(&echo_chunked(connect(addr), data.clone(), 3), &data);
    assert!(server.wait_for_stderr("socket activation: serving", IO_TIMEOUT), "stderr:\n{}", server.stderr());
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
}

/// The same through an inherited Unix socket, although an `ADDR` was given (it is ignored,
/// with a warning); the file is the service manager's, so the server leaves it in place.
fn serves_inherited_unix(variant: Variant) {
    let path = temp_socket_path(&format!("activated-{variant:?}"));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind the Unix socket to pass");
    let server = Bin::spawn(activated_command(
        listener.as_raw_fd(),
        true,
        &[("LISTEN_FDNAMES", "echo")],
        &variant.serve_args(&["127.0.0.1:0"]), // an ADDR, which the passed socket overrides
    ));
    drop(listener);
    assert_eq!(server.addr, format!("unix:{}", path.display()));
    let stream = UnixStream::connect(&path).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let data = random_bytes(256 * 1024, 13);
    assert_same_bytes(&echo_chunked(stream, data.clone(), 4), &data);
    assert!(
        server.wait_for_stderr("(fd 3 (echo))", IO_TIMEOUT),
        "the name is shown; stderr:\n{}",
        server.stderr()
    );
    assert!(server.wait_for_stderr("ignoring 127.0.0.1:0", IO_TIMEOUT), "stderr:\n{}", server.stderr());
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(IO_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(path.exists(), "the inherited socket's file was removed; log:\n{log}");
    std::fs::remove_file(&path).unwrap();
}

for_variants!(serves_inherited_tcp, needs: [Activation]);
for_variants!(serves_inherited_unix, needs: [Activation]);

/// Sockets passed for another process (`LISTEN_PID` is not ours) are not taken: the server
/// binds the address it was given, and the passed socket is left alone.
#[test]
fn a_wrong_listen_pid_is_ignored() {
    let listener = tcp_listener();
    let passed = listener.local_addr().unwrap();
    let command =
        activated_command(listener.as_raw_fd(), false, &[("LISTEN_PID", "1")], &["serve", "127.0.0.1:0"]);
    let server = Bin::spawn(command);
    assert_ne!(server.tcp(), passed, "it took a socket meant for pid 1");
    let mut stream = connect(server.tcp());
    stream.write_all(b"own socket").unwrap();
    let mut back = [0; 10];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"own socket");
    server.signal(libc::SIGTERM);
    let (status, log) = server.wait(IO_TIMEOUT);
    assert!(status.success() && !log.contains("socket activation"), "{status}; log:\n{log}");
}

/// A UDP socket (`ListenDatagram=`) is refused by name, exit 2.
#[test]
fn a_datagram_socket_is_refused() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = run_activated(socket.as_raw_fd(), &["serve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("fd 3 is a datagram socket (ListenDatagram=)"), "{stderr}");
}

/// A stream socket that is not listening (what `Accept=yes` passes) is refused, exit 2.
#[test]
fn a_connected_socket_is_refused() {
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let out = run_activated(ours.as_raw_fd(), &["serve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("not listening") && stderr.contains("Accept=no"), "{stderr}");
}

/// `LISTEN_FDS` that names a descriptor that is not open is an error, not a panic.
#[test]
fn a_missing_descriptor_is_refused() {
    let mut command = Command::new("/bin/sh");
    // Close fd 3 in the shell, then exec echoloop claiming it was passed.
    command
        .arg("-c")
        .arg(format!("export LISTEN_PID=$$; exec 3>&-; exec {} serve", env!("CARGO_BIN_EXE_echoloop")));
    command.env("LISTEN_FDS", "1");
    let out = run_to_end(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("fd 3 was passed, but it is not open"), "{stderr}");
}

/// The unit files stay loadable: `systemd-analyze verify` (where installed) finds nothing
/// to complain about, with `ExecStart` pointed at the binary under test.
#[test]
fn contrib_units_verify() {
    let Ok(status) = Command::new("systemd-analyze").arg("--version").stdout(Stdio::null()).status() else {
        return eprintln!("skipped: systemd-analyze is not installed");
    };
    assert!(status.success());
    let dir = std::env::temp_dir().join(format!("echoloop-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let service = std::fs::read_to_string(contrib.join("echoloop.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/echoloop serve"), "the installed path");
    let service = service.replace("/usr/local/bin/echoloop", env!("CARGO_BIN_EXE_echoloop"));
    std::fs::write(dir.join("echoloop.service"), service).unwrap();
    std::fs::copy(contrib.join("echoloop.socket"), dir.join("echoloop.socket")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("echoloop.socket"))
        .arg(dir.join("echoloop.service"))
        .output()
        .expect("run systemd-analyze");
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify:\n{stderr}");
}
