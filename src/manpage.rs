//! `echoloop manpage`: echoloop(1), one page with every command and all of its options.
//!
//! clap_mangen renders a page per command. Its page for `echoloop` only lists the commands
//! and refers to pages (`echoloop-serve(1)`, ...) that `echoloop manpage | man -l -` never
//! shows, and it files a command's closing notes under "EXTRA". So the page is put together
//! here: clap_mangen renders what it knows from the same definitions as `--help` (the name,
//! the global options, each command's description and options), and the sections that clap
//! has no place for (SIGNALS, ENVIRONMENT, EXIT STATUS, EXAMPLES) are written below.

use std::io::{self, Write};

use clap::Command;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

/// The whole page, in roff, for `cli` (the binary's command line).
pub fn render(cli: Command) -> io::Result<String> {
    let mut cli = cli.disable_help_subcommand(true);
    cli.build(); // each command's usage then starts with `echoloop`
    let man = Man::new(cli.clone());
    let mut title = Vec::new();
    man.render_title(&mut title)?; // with the preamble that every render starts with
    let mut page = String::from_utf8_lossy(&title).into_owned();
    page += &piece(|w| man.render_name_section(w))?;
    page += &piece(|w| synopsis(&cli).to_writer(w))?;
    page += &piece(|w| man.render_description_section(w))?;
    page += &piece(|w| description_end().to_writer(w))?;
    page += &piece(|w| man.render_options_section(w))?;
    page += ".SH COMMANDS\n";
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        page += &command_section(command)?;
    }
    page += &piece(|w| closing_sections(&cli).to_writer(w))?;
    Ok(page)
}

/// Where to look for what, after the one-line description.
fn description_end() -> Roff {
    let mut roff = Roff::new();
    roff.control("PP", []).text([roman(
        "The options under OPTIONS apply to every command; each command, with options of its \
         own, is under COMMANDS. Logs go to stderr.",
    )]);
    roff
}

/// One line per command: `echoloop serve [OPTIONS] [ADDR]`, ...
fn synopsis(cli: &Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        let (name, rest) = usage(command);
        roff.text([bold(name), roman(rest)]).control("br", []);
    }
    roff
}

/// A command's usage, split after its name: ("echoloop serve", " [OPTIONS] [ADDR]").
fn usage(command: &Command) -> (String, String) {
    let usage = command.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    let name = command.get_bin_name().unwrap_or(command.get_name());
    let rest = usage.strip_prefix(name).unwrap_or(usage);
    (name.to_string(), rest.to_string())
}

/// `.SS echoloop serve [OPTIONS] [ADDR]`, what it does, and every option of its own (the
/// global ones and `--help` are listed once, under OPTIONS).
fn command_section(command: &Command) -> io::Result<String> {
    let own = command.clone().mut_args(|arg| {
        let elsewhere = arg.is_global_set() || arg.get_id() == "help";
        arg.hide(elsewhere)
    });
    let man = Man::new(own);
    let (name, rest) = usage(command);
    let mut section = Roff::new();
    section.control("SS", [format!("{name}{rest}").as_str()]);
    let description = piece(|w| man.render_description_section(w))?;
    let options = piece(|w| man.render_options_section(w))?;
    Ok(piece(|w| section.to_writer(w))? + &under_heading(&description) + &under_heading(&options))
}

/// What one of clap_mangen's renders wrote, without the preamble that each starts with: it
/// belongs once, at the top of the page.
fn piece(render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<String> {
    let mut out = Vec::new();
    render(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let kept = text.lines().filter(|line| !line.starts_with(".ie \\n(.g") && !line.starts_with(".el .ds Aq"));
    Ok(kept.flat_map(|line| [line, "\n"]).collect())
}

/// A section rendered for a command, moved under that command's `.SS` heading: its `.SH`
/// heading goes, and any further heading (an option group) becomes a bold line.
fn under_heading(section: &str) -> String {
    let lines = section.lines().skip(1); // .SH DESCRIPTION, .SH OPTIONS
    let moved = lines.map(|line| match line.strip_prefix(".SH ") {
        Some(group) => format!(".PP\n\\fB{}\\fR\n", group.trim_matches('"')),
        None => format!("{line}\n"),
    });
    moved.collect()
}

/// Each section a title and its entries (a term, then what it means).
type Sections = &'static [(&'static str, &'static [(&'static str, &'static str)])];

/// What clap has no place for.
const CLOSING: Sections = &[
    (
        "SIGNALS",
        &[
            (
                "SIGINT, SIGTERM",
                "serve stops accepting, lets pending echoes flush for up to --shutdown-grace, logs \
                 its summary line and exits 0. A second one during the grace period exits at once, \
                 with status 130.",
            ),
            ("SIGUSR1", "serve logs one statistics line at once, as --stats-interval does on a schedule."),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            (
                "RUST_LOG",
                "Which log lines go to stderr, in env_logger's syntax: info when unset; \
                 RUST_LOG=echoloop=trace shows every readiness event, read, write and interest \
                 change. -v and -q override it.",
            ),
            (
                "LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES",
                "Socket activation, as systemd passes sockets (sd_listen_fds(3)). When LISTEN_PID \
                 is this process, serve serves every socket passed from descriptor 3 on \
                 (LISTEN_FDS of them: listening TCP and Unix stream sockets and bound UDP sockets, \
                 in any order; LISTEN_FDNAMES names them in the log) instead of binding ADDR, \
                 with any model. A descriptor that is none of these is refused with one line \
                 naming it, and so are ADDRs given as well: exit 2. The three are unset at \
                 start, so that no program echoloop starts takes the sockets.",
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID",
                "sd_notify(3), for a Type=notify unit: serve sends READY=1 once every listener \
                 is served, STOPPING=1 when a stop begins, and each statistics line as STATUS=; \
                 with WATCHDOG_USEC (and WATCHDOG_PID unset or this process), WATCHDOG=1 from \
                 the serving loop every half of that interval. Without NOTIFY_SOCKET nothing is \
                 sent.",
            ),
        ],
    ),
    (
        "EXIT STATUS",
        &[
            (
                "0",
                "serve: a graceful stop (SIGINT, SIGTERM). client: every byte came back. bench: \
                 no error and no wrong byte.",
            ),
            (
                "1",
                "A runtime error, in one line naming its cause: an address in use or not \
                 permitted, a kernel that refuses io_uring, a connection lost; bench: an error \
                 or a wrong byte.",
            ),
            (
                "2",
                "A usage error: a bad flag or value, or a combination that cannot work (such as \
                 --workers 2 with a unix: address).",
            ),
            ("130", "serve: a second SIGINT or SIGTERM during the grace period."),
        ],
    ),
    (
        "EXAMPLES",
        &[
            ("echoloop serve", "The echo server on 127.0.0.1:7878, with the event loop."),
            (
                "echoloop serve --model thread-per-conn --idle-timeout 30 0.0.0.0:7007",
                "One thread per connection, on every IPv4 interface; silent clients are closed after 30 s.",
            ),
            ("echoloop serve --framing line unix:/tmp/echo.sock", "Echo whole lines only, on a Unix socket."),
            ("echoloop serve udp:7007", "The UDP echo on 127.0.0.1:7007: one reply per datagram."),
            (
                "echoloop client 127.0.0.1:7878 < file | cmp - file",
                "Send a file and check that every byte came back.",
            ),
            (
                "RUST_LOG=echoloop=trace echoloop serve --send-buffer 4096",
                "Watch partial writes and backpressure happen, in the log on stderr.",
            ),
            ("echoloop bench --compare --pin", "Start each I/O model in turn, load it, and print one table."),
            ("echoloop manpage | man -l -", "Read this page."),
        ],
    ),
    ("SEE ALSO", &[("sd_listen_fds(3), systemd.socket(5)", "Socket activation, as systemd does it.")]),
];

/// SIGNALS, ENVIRONMENT, EXIT STATUS, EXAMPLES, SEE ALSO; no example of a command this
/// build of `cli` lacks (`bench`, without the bench feature).
fn closing_sections(cli: &Command) -> Roff {
    let mut roff = Roff::new();
    for (title, entries) in CLOSING {
        roff.control("SH", [*title]);
        for (term, meaning) in entries.iter().filter(|(term, _)| runs_here(cli, term)) {
            roff.control("TP", []).text([bold(*term)]).text([roman(*meaning)]);
        }
    }
    roff
}

/// Whether `cli` has the command that `example` runs (the word after `echoloop`), if any.
fn runs_here(cli: &Command, example: &str) -> bool {
    let mut words = example.split_whitespace().skip_while(|word| *word != "echoloop").skip(1);
    words.next().is_none_or(|command| cli.find_subcommand(command).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_section_keeps_its_option_groups_under_its_own_heading() {
        let options = ".SH OPTIONS\n.TP\n\\fB\\-\\-a\\fR\n.SH \"LOAD OPTIONS\"\n.TP\n\\fB\\-\\-b\\fR\n";
        let moved = under_heading(options);
        assert_eq!(moved, ".TP\n\\fB\\-\\-a\\fR\n.PP\n\\fBLOAD OPTIONS\\fR\n.TP\n\\fB\\-\\-b\\fR\n");
    }

    /// Regression: ENVIRONMENT still described one stream socket on descriptor 3 ("anything
    /// else passed is refused") after serve learned to take every socket systemd passes,
    /// and named neither NOTIFY_SOCKET nor the watchdog.
    #[test]
    fn environment_names_every_socket_kind_and_sd_notify() {
        use clap::CommandFactory;
        let page = render(crate::cli::Cli::command()).unwrap();
        let environment = page.split(".SH ENVIRONMENT").nth(1).unwrap().split(".SH").next().unwrap();
        for said in ["LISTEN_FDNAMES", "UDP", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "READY=1"] {
            assert!(environment.contains(said), "ENVIRONMENT does not mention {said}:\n{environment}");
        }
        assert!(!environment.contains("the one listening"), "{environment}");
    }

    #[test]
    fn examples_of_commands_this_build_lacks_are_left_out() {
        let cli = Command::new("echoloop").subcommand(Command::new("serve"));
        assert!(runs_here(&cli, "echoloop serve udp:7007"));
        assert!(runs_here(&cli, "RUST_LOG=trace echoloop serve"));
        assert!(!runs_here(&cli, "echoloop bench --compare"));
        assert!(runs_here(&cli, "sd_listen_fds(3)"));
    }
}
