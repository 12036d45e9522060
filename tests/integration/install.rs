//! What installing needs: the man pages and shell completions generated from the command
//! line definitions, and the message for a port that needs privilege.

use std::net::TcpListener;
use std::process::{Command, Stdio};

use super::util::{Bin, IO_TIMEOUT, run_bin, wait_until};

/// `echoloop manpage` prints a roff page that documents the subcommands.
#[test]
fn manpage_on_stdout() {
    let (code, page, stderr) = run_bin(&["manpage"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(page.starts_with(".ie") || page.contains(".TH echoloop 1"), "{page}");
    assert!(page.contains(".TH echoloop 1"), "{page}");
    assert!(page.contains("echoloop\\-serve(1)"), "the serve page is referenced:\n{page}");
}

/// `echoloop manpage --dir DIR` writes one page per subcommand, with every serve flag.
#[test]
fn manpages_into_a_directory() {
    let dir = std::env::temp_dir().join(format!("echoloop-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, stderr) = run_bin(&["manpage", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let serve = std::fs::read_to_string(dir.join("echoloop-serve.1"));
    let pages: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    std::fs::remove_dir_all(&dir).unwrap();
    for page in ["echoloop.1", "echoloop-serve.1", "echoloop-client.1", "echoloop-completions.1"] {
        assert!(pages.iter().any(|p| p == page), "{page} missing from {pages:?}");
    }
    let serve = serve.expect("echoloop-serve.1");
    for flag in ["stats\\-interval", "summary\\-json", "max\\-pending", "workers"] {
        assert!(serve.contains(flag), "--{flag} missing from echoloop-serve.1");
    }
}

/// A completion script for every shell clap_complete knows, naming the subcommands and
/// the serve flags; an unknown shell is a usage error.
#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, script, stderr) = run_bin(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        for word in ["serve", "completions", "stats-interval", "summary-json"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let (code, _, stderr) = run_bin(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{stderr}");
}

/// The bash completion script is valid bash (where bash is installed).
#[test]
fn bash_completion_parses() {
    let (_, script, _) = run_bin(&["completions", "bash"]);
    let Ok(mut bash) = Command::new("bash").args(["-n"]).stdin(Stdio::piped()).spawn() else {
        return eprintln!("skipped: bash is not installed");
    };
    use std::io::Write;
    bash.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(bash.wait().unwrap().success(), "bash -n rejects the completion script");
}

/// A privileged loopback port no one is using (as root, we can check by binding it).
fn free_low_port() -> Option<u16> {
    (600..1000).rev().find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Without privilege, binding a port below 1024 fails with a message that names the port
/// and both remedies. Run as the unprivileged user `nobody` via `setpriv` when the tests
/// run as root; run directly when they do not.
#[test]
fn a_privileged_port_without_privilege_names_the_remedies() {
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 600 {
        return eprintln!(
            "skipped: net.ipv4.ip_unprivileged_port_start is {start}: no port here is privileged"
        );
    }
    let port = if is_root() { free_low_port() } else { Some(999) };
    let Some(port) = port else { return eprintln!("skipped: no free port in 600..1000") };
    let addr = format!("127.0.0.1:{port}");
    let echoloop = env!("CARGO_BIN_EXE_echoloop");
    let mut command = if is_root() {
        let mut setpriv = Command::new("setpriv");
        setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", echoloop]);
        setpriv
    } else {
        Command::new(echoloop)
    };
    let Ok(out) = command.args(["serve", &addr]).stdin(Stdio::null()).output() else {
        return eprintln!("skipped: setpriv is not installed");
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("setpriv:") {
        return eprintln!("skipped: setpriv cannot switch to nobody here: {stderr}");
    }
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    assert!(stderr.contains(&format!("port {port} is privileged (below {start})")), "{stderr}");
    assert!(
        stderr.contains("contrib/systemd") && stderr.contains("setcap cap_net_bind_service=+ep"),
        "{stderr}"
    );
}

/// As root, a privileged port works, with an info line that suggests not running as root.
#[test]
fn a_privileged_port_as_root_works_and_says_so() {
    if !is_root() {
        return eprintln!("skipped: not running as root");
    }
    let Some(port) = free_low_port() else { return eprintln!("skipped: no free port in 600..1000") };
    let server = Bin::serve(&[&format!("127.0.0.1:{port}")]);
    assert_eq!(server.tcp().port(), port);
    assert!(
        wait_until(IO_TIMEOUT, || server
            .stderr()
            .contains(&format!("running as root to listen on privileged port {port}"))),
        "stderr:\n{}",
        server.stderr()
    );
    assert!(server.stderr().contains("DynamicUser=yes"), "{}", server.stderr());
}
