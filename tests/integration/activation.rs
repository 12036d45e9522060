//! Socket activation: sockets are passed in the way systemd passes them, and `echoloop
//! serve` serves every one, for every model: TCP, Unix and UDP, in any order.
//!
//! How a test passes sockets like a service manager: it binds them itself, then starts the
//! binary with them duplicated onto fds 3, 4, ... (in `pre_exec`, between fork and exec)
//! and `LISTEN_FDS=N`. `LISTEN_PID` must be the *server's* pid, which is not
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

use super::listeners::{assert_echoes, stop};
use super::udp::{receive_each, send_train};
use super::util::{
    Bin, IO_TIMEOUT, assert_same_bytes, connect, echo_chunked, random_bytes, run_to_end, temp_socket_path,
};
use super::variants::Variant;

/// Exec echoloop with `LISTEN_PID` set to its own pid (see the module docs).
const EXEC_WITH_OWN_PID: &str = r#"export LISTEN_PID=$$; exec "$0" "$@""#;

/// `echoloop ARGS...` with `listener` as fd 3 and `LISTEN_FDS=1`, as a service manager
/// starts it. `own_pid`: set `LISTEN_PID` to the server's pid (else it stays as `env` says).
fn activated_command(listener: RawFd, own_pid: bool, env: &[(&str, &str)], args: &[&str]) -> Command {
    passing(&[listener], own_pid, env, args)
}

/// `echoloop ARGS...` with `fds` as fds 3, 4, ... and `LISTEN_FDS` their count.
fn passing(fds: &[RawFd], own_pid: bool, env: &[(&str, &str)], args: &[&str]) -> Command {
    let echoloop = env!("CARGO_BIN_EXE_echoloop");
    let mut command = if own_pid {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c").arg(EXEC_WITH_OWN_PID).arg(echoloop);
        sh
    } else {
        Command::new(echoloop)
    };
    command.args(args).env("LISTEN_FDS", fds.len().to_string()).envs(env.iter().copied());
    let fds = fds.to_vec();
    // SAFETY: between fork and exec only async-signal-safe calls are allowed: fcntl and
    // dup2 are, and nothing here allocates (the list was copied before the fork). Each
    // socket is first copied above every target number (F_DUPFD_CLOEXEC, 100 and up), so
    // that placing one on fd 3 + i cannot clobber another still to be placed; dup2 makes
    // the placed copy without close-on-exec, and the high copies close at exec.
    unsafe {
        command.pre_exec(move || {
            let mut high = [0; 16];
            for (i, &fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in high[..fds.len()].iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
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

/// The same through an inherited Unix socket; the file is the service manager's, so the
/// server leaves it in place.
fn serves_inherited_unix(variant: Variant) {
    let path = temp_socket_path(&format!("activated-{variant:?}"));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind the Unix socket to pass");
    let server = Bin::spawn(activated_command(
        listener.as_raw_fd(),
        true,
        &[("LISTEN_FDNAMES", "echo")],
        &variant.serve_args(&[]),
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

/// Three sockets passed as systemd passes `ListenStream=` TCP, `ListenStream=` Unix and
/// `ListenDatagram=` UDP lines: all three served by one process, in the order passed, each
/// named in the log by `LISTEN_FDNAMES`, each echoing exactly.
fn serves_three_inherited_sockets(variant: Variant) {
    let tcp = tcp_listener();
    let path = temp_socket_path(&format!("three-{variant:?}"));
    let _ = std::fs::remove_file(&path);
    let unix = UnixListener::bind(&path).expect("bind the Unix socket to pass");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let fds = [tcp.as_raw_fd(), unix.as_raw_fd(), udp.as_raw_fd()];
    let names = [("LISTEN_FDNAMES", "echo-tcp:echo-unix:echo-udp")];
    let command = passing(&fds, true, &names, &variant.serve_args(&[]));
    let expected = [
        tcp.local_addr().unwrap().to_string(),
        format!("unix:{}", path.display()),
        format!("udp:{}", udp.local_addr().unwrap()),
    ];
    let server = Bin::spawn_listening(command, 3);
    drop((tcp, unix, udp));
    assert_eq!(server.addrs, expected, "one line per passed socket, in fd order");
    for (i, addr) in server.addrs.iter().enumerate() {
        assert_echoes(addr, 40 + i as u64);
    }
    for name in ["(fd 3 (echo-tcp))", "(fd 4 (echo-unix))", "(fd 5 (echo-udp))"] {
        assert!(server.wait_for_stderr(name, IO_TIMEOUT), "{name} not in the log:\n{}", server.stderr());
    }
    let log = stop(server);
    assert!(path.exists(), "the inherited socket's file was removed; log:\n{log}");
    std::fs::remove_file(&path).unwrap();
}
for_variants!(serves_three_inherited_sockets, needs: [Activation, Datagrams]);

/// Regression: a `ListenDatagram=` socket the service manager set up to stamp what it
/// receives (systemd's `Timestamping=`: SO_TIMESTAMPNS; here with SO_TIMESTAMPING and
/// SO_RXQ_OVFL as well) filled the 32 bytes the server kept for a message's control
/// messages before the kernel came to `UDP_GRO`'s, which was then left out: a train came
/// back as one datagram of 11,300 bytes. Each of its ten datagrams comes back on its own.
fn a_train_through_an_inherited_socket_that_stamps_comes_back_as_its_datagrams(variant: Variant) {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let stamps = [
        (libc::SO_TIMESTAMPNS, 1),
        (libc::SO_TIMESTAMPING, libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE),
        (libc::SO_RXQ_OVFL, 1),
    ];
    for (option, value) in stamps {
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid descriptor, and a pointer to an `int` that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                udp.as_raw_fd(),
                libc::SOL_SOCKET,
                option as libc::c_int,
                (&raw const value).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "setsockopt {option}: {}", std::io::Error::last_os_error());
    }
    let addr = udp.local_addr().unwrap();
    let server = Bin::spawn_listening(passing(&[udp.as_raw_fd()], true, &[], &variant.serve_args(&[])), 1);
    drop(udp);
    let sizes: Vec<usize> = [1200; 9].into_iter().chain([500]).collect();
    let want: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| random_bytes(n, 60 + i as u64)).collect();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    send_train(&client, addr, &want.concat(), 1200);
    receive_each(&client, addr, &want, &format!("{variant:?}"));
    stop(server);
}
for_variants!(a_train_through_an_inherited_socket_that_stamps_comes_back_as_its_datagrams, needs: [Activation, Datagrams]);

/// Addresses on the command line and sockets from the service manager: which to serve is
/// not ours to guess. A usage error naming both, exit 2, nothing served.
#[test]
fn addresses_with_inherited_sockets_are_a_usage_error() {
    let listener = tcp_listener();
    let out = run_activated(listener.as_raw_fd(), &["serve", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("fd 3") && stderr.contains("127.0.0.1:0"), "names both: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty(), "it started: {:?}", String::from_utf8_lossy(&out.stdout));
}

/// Each kind of descriptor that is not a socket echoloop serves, passed second (fd 4) after
/// a good one: one line naming fd 4, exit 2, nothing served.
#[test]
fn each_bad_descriptor_kind_is_refused_by_number() {
    let good = tcp_listener();
    let file = std::fs::File::open("/dev/null").unwrap();
    let (connected, _peer) = UnixStream::pair().unwrap();
    let (unix_datagram, _peer2) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let unbound_udp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    for (bad, says) in [
        (file.as_raw_fd(), "fd 4 is not a socket"),
        (connected.as_raw_fd(), "fd 4 is a stream socket but not listening"),
        (unix_datagram.as_raw_fd(), "fd 4 is a Unix datagram socket"),
        (unbound_udp.as_raw_fd(), "fd 4 is a UDP socket bound to no port"),
    ] {
        let out = run_to_end(passing(&[good.as_raw_fd(), bad], true, &[], &["serve"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{says}: {stderr}");
        assert!(stderr.contains(says) && stderr.lines().count() == 1, "{says}: {stderr}");
        assert!(out.stdout.is_empty(), "{says}: it started");
    }
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

/// Regression: a hostile `LISTEN_FDS` aborted the process (`LISTEN_FDS=2147483647`: a name
/// was built for every claimed descriptor first, a 51 GB allocation, exit 134) or printed a
/// 989 KB line (`LISTEN_FDS=100000`). Now the count is checked first: one short line, exit 2.
#[test]
fn a_huge_listen_fds_is_one_short_line() {
    for count in ["2147483647", "100000"] {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(EXEC_WITH_OWN_PID).arg(env!("CARGO_BIN_EXE_echoloop")).arg("serve");
        command.env("LISTEN_FDS", count).env("LISTEN_FDNAMES", "a:b");
        let out = run_to_end(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "LISTEN_FDS={count}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.len() < 200 && stderr.contains(&format!("LISTEN_FDS={count}")), "{stderr}");
    }
}

/// The unit files stay loadable: `systemd-analyze verify` (where installed) finds nothing
/// to complain about. It needs no running systemd, but it checks that `ExecStart`'s binary
/// exists, so a copy of the units points it at the binary under test. The same check on a
/// copy with a mistake fails, so a pass means the units were read.
#[test]
fn contrib_units_verify() {
    let Ok(status) = Command::new("systemd-analyze").arg("--version").stdout(Stdio::null()).status() else {
        return eprintln!("skipped: systemd-analyze is not installed");
    };
    assert!(status.success());
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let socket = std::fs::read_to_string(contrib.join("echoloop.socket")).unwrap();
    let service = std::fs::read_to_string(contrib.join("echoloop.service")).unwrap();
    for line in ["ListenStream=7\n", "ListenDatagram=7\n"] {
        assert!(socket.contains(line), "echoloop.socket lacks {line:?}: TCP and UDP, as inetd served echo");
    }
    for line in ["Type=notify\n", "WatchdogSec="] {
        assert!(service.contains(line), "echoloop.service lacks {line:?}");
    }
    assert!(service.contains("ExecStart=/usr/local/bin/echoloop serve"), "the installed path");
    let service = service.replace("/usr/local/bin/echoloop", env!("CARGO_BIN_EXE_echoloop"));
    let (status, report) = verify_units(&socket, &service);
    assert!(status.success() && report.trim().is_empty(), "systemd-analyze verify:\n{report}");
    let (status, report) = verify_units(&socket, &service.replace("Type=notify", "Type=notfiy"));
    assert!(!status.success() || !report.trim().is_empty(), "a mistake went unseen: {status}\n{report}");
}

/// `systemd-analyze verify` on the two units, written to a directory of their own; its exit
/// status and what it printed.
fn verify_units(socket: &str, service: &str) -> (std::process::ExitStatus, String) {
    let dir = std::env::temp_dir().join(format!("echoloop-units-{}-{}", std::process::id(), service.len()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("echoloop.socket"), socket).unwrap();
    std::fs::write(dir.join("echoloop.service"), service).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("echoloop.socket"))
        .arg(dir.join("echoloop.service"))
        .output()
        .expect("run systemd-analyze");
    std::fs::remove_dir_all(&dir).unwrap();
    let report = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status, report)
}
