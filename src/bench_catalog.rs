//! `echoloop bench` in this binary: the load generator (crates/bench, which knows nothing of
//! the server) with this binary's models as the servers that `--compare` starts.

use echoloop::Error;

/// `echoloop bench`: the load generator, with this binary's models as the servers that
/// `--compare` starts.
pub fn run(args: &echoloop_bench::BenchArgs) -> Result<(), Error> {
    let catalog = builtin_servers(args.server_exe())?;
    echoloop_bench::run(args, &catalog).map_err(|e| match e {
        echoloop_bench::Error::Usage(message) => Error::Usage(message),
        echoloop_bench::Error::Run(e) => Error::Io(e),
    })
}

/// Each model as a command line: `EXE serve --model ... {addr}`, where EXE is this binary
/// or `--server-exe`, and for the UDP scenarios the models that serve UDP as `... udp:{addr}`.
/// The table sets the event loop against thread-per-conn. The reference servers
/// (`--references`) are the workspace's peer binaries beside EXE.
fn builtin_servers(server_exe: Option<&std::path::Path>) -> std::io::Result<echoloop_bench::Catalog> {
    use echoloop_bench::{ADDR_PLACEHOLDER, Catalog, ServerSpec};
    let exe = match server_exe {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()?,
    };
    // Quiet logs; a short grace, so that stopping is quick; then the model's flags.
    let argv = |model: &[&str], tail: &[&str]| -> Vec<std::ffi::OsString> {
        let head =
            [exe.as_os_str(), "serve".as_ref(), "--shutdown-grace".as_ref(), "1".as_ref(), "-q".as_ref()];
        head.into_iter().map(Into::into).chain(model.iter().chain(tail).map(Into::into)).collect()
    };
    // A cap above the idle scenario's 10000 connections, so it is never what is measured.
    let serve = |name: &str, model: &[&str]| {
        ServerSpec::new(name, argv(model, &["--max-connections", "20000", ADDR_PLACEHOLDER]))
    };
    let serve_udp = |name: &str, model: &[&str]| {
        ServerSpec::udp(name, argv(model, &[&format!("udp:{ADDR_PLACEHOLDER}")]))
    };
    let servers = vec![
        serve("event-loop", &["--model", "event-loop"]),
        serve_udp("event-loop", &["--model", "event-loop"]),
        serve("event-loop-w2", &["--model", "event-loop", "--workers", "2"]),
        serve("thread-per-conn", &["--model", "thread-per-conn"]),
        serve_udp("thread-per-conn", &["--model", "thread-per-conn"]),
        // One connection at a time: only the 1-connection scenario means anything for it.
        serve("blocking", &["--model", "blocking"]).serving_at_most(1),
        serve("io-uring", &["--model", "io-uring"]),
        serve_udp("io-uring", &["--model", "io-uring"]),
    ];
    let exe_dir = exe.parent().unwrap_or(std::path::Path::new("."));
    let peer_argv = |name: &str| [exe_dir.join(name).into_os_string(), ADDR_PLACEHOLDER.into()];
    let peer = |name: &str| ServerSpec::new(name, peer_argv(name));
    Ok(Catalog {
        servers,
        ratio: Some(("event-loop".into(), "thread-per-conn".into())),
        references: vec![
            peer("peer-epoll"),
            peer("peer-tokio"),
            ServerSpec::udp("peer-udp", peer_argv("peer-udp")),
        ],
    })
}
