//! What installing needs: the man pages and shell completions generated from the command
//! line definitions, and the message for a port that needs privilege.

use std::net::TcpListener;
use std::process::{Command, Stdio};

use super::util::{Bin, IO_TIMEOUT, run_bin, wait_until};

/// The commands `echoloop --help` lists (but `help`).
fn commands() -> Vec<String> {
    let (code, help, stderr) = run_bin(&["--help"]);
    assert_eq!(code, 0, "{stderr}");
    let listed = help.split("Commands:").nth(1).expect("a Commands: list").split("\n\n").next().unwrap_or("");
    let names = listed.lines().filter_map(|line| line.split_whitespace().next());
    names.filter(|name| *name != "help").map(String::from).collect()
}

/// The long flags `echoloop COMMAND --help` documents, as `--name`.
fn flags_of(command: &str) -> Vec<String> {
    let (code, help, stderr) = run_bin(&[command, "--help"]);
    assert_eq!(code, 0, "{command}: {stderr}");
    let definitions = help.lines().map(str::trim_start).filter(|line| line.starts_with('-'));
    let flags =
        definitions.filter_map(|line| line.split([',', ' ', '.']).find(|word| word.starts_with("--")));
    flags.map(String::from).collect()
}

/// A flag as roff writes it in bold: `--max-pending` is `\fB\-\-max\-pending\fR`.
fn roff_bold(flag: &str) -> String {
    format!("\\fB{}\\fR", flag.replace('-', "\\-"))
}

/// `echoloop manpage` prints one page, echoloop(1), that documents every command with every
/// flag its `--help` has, in the sections man(7) names (none called "EXTRA"), and refers to
/// no page that it did not write.
#[test]
fn manpage_documents_every_command_and_flag() {
    let (code, page, stderr) = run_bin(&["manpage"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(page.contains(".TH echoloop 1"), "{page}");
    let commands = commands();
    assert!(commands.len() >= 4 && commands.iter().any(|c| c == "serve"), "commands: {commands:?}");
    for command in &commands {
        assert!(page.contains(&format!(".SS \"echoloop {command} ")), "no section for {command}:\n{page}");
        let flags = flags_of(command);
        assert!(flags.iter().any(|flag| flag == "--help"), "{command}: flags not found in --help");
        for flag in flags {
            assert!(page.contains(&roff_bold(&flag)), "{flag} of {command} is not on the page");
        }
    }
    let headings: Vec<&str> = page.lines().filter(|line| line.starts_with(".SH ")).collect();
    let expected = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "SIGNALS", "ENVIRONMENT"];
    let expected = expected.iter().map(|h| format!(".SH {h}")).chain([
        ".SH \"EXIT STATUS\"".to_string(),
        ".SH EXAMPLES".to_string(),
        ".SH \"SEE ALSO\"".to_string(),
    ]);
    assert_eq!(headings, expected.collect::<Vec<_>>());
    for variable in ["RUST_LOG", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "SIGUSR1", "130"] {
        assert!(page.contains(variable), "{variable} is not on the page");
    }
    // A page such as echoloop-serve(1), which `echoloop manpage` does not write.
    let pages = page.split("echoloop\\-").skip(1);
    let references =
        pages.filter(|rest| rest.trim_start_matches(|c: char| c.is_ascii_lowercase()).starts_with('('));
    assert_eq!(references.count(), 0, "refers to pages not written:\n{page}");
}

/// The page renders through man(1) without a warning (where man is installed).
#[test]
fn manpage_renders_without_warnings() {
    let (_, page, _) = run_bin(&["manpage"]);
    let path = std::env::temp_dir().join(format!("echoloop-{}.1", std::process::id()));
    std::fs::write(&path, page).unwrap();
    let rendered = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&path)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output();
    std::fs::remove_file(&path).unwrap();
    let Ok(rendered) = rendered else { return eprintln!("skipped: man is not installed") };
    let (text, warnings) =
        (String::from_utf8_lossy(&rendered.stdout), String::from_utf8_lossy(&rendered.stderr));
    assert!(rendered.status.success() && warnings.is_empty(), "man: {warnings}");
    for words in ["EXIT STATUS", "echoloop serve [OPTIONS] [ADDR]", "--max-pending <BYTES>"] {
        assert!(text.contains(words), "{words} is not in the rendered page:\n{text}");
    }
}

/// `echoloop manpage --dir DIR` writes that same page as DIR/echoloop.1; a directory that
/// does not exist is one line naming the file, and exit 1.
#[test]
fn manpage_into_a_directory() {
    let dir = std::env::temp_dir().join(format!("echoloop-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, stderr) = run_bin(&["manpage", "--dir", dir.to_str().unwrap()]);
    let written = std::fs::read_to_string(dir.join("echoloop.1"));
    let files = std::fs::read_dir(&dir).unwrap().count();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!((code, files), (0, 1), "{stderr}");
    assert_eq!(written.expect("echoloop.1"), run_bin(&["manpage"]).1);
    let missing = dir.join("missing");
    let (code, _, stderr) = run_bin(&["manpage", "--dir", missing.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot write") && stderr.contains("missing/echoloop.1"), "{stderr}");
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
