//! The load generator and the client take any address (issue 19), shown over a network of
//! the test's own: two namespaces joined by a veth pair (the [`Link`] of `netns`), the
//! real server in one, `echoloop bench` and `echoloop client` in the other, by IP address
//! and by host name. And a connection that fails says what happened, in one line naming
//! the address: refused, unreachable, timed out after `--connect-timeout`, name not found.
//!
//! Every address is inside the namespaces the test made. Host names come from a `hosts`
//! file that `ip netns exec` puts over `/etc/hosts` for the client namespace only, beside a
//! `resolv.conf` naming the namespace's own loopback (which is down): a name that is not
//! in the file fails without a packet leaving the namespace. Without root, `ip` or
//! namespaces, each test says so in one line and returns.
#![cfg(feature = "bench")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netns::{Link, Shape, sh};
use crate::util::{Bin, Finished, assert_same_bytes, random_bytes, run_with_stdin};

const ECHOLOOP: &str = env!("CARGO_BIN_EXE_echoloop");

/// A fast link: the tests here are about addresses, not shaping.
const FAST: Shape = Shape { rate: "1gbit", limit: 256_000, mtu: (1500, 1500) };

/// The name the client namespace's `hosts` file gives the server.
const SERVER_NAME: &str = "echo-server.test";

/// `ip netns exec NS echoloop ARGS...` with `stdin`, to completion (bounded).
fn in_ns(ns: &str, args: &[&str], stdin: Vec<u8>) -> Finished {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, ECHOLOOP]).args(args);
    run_with_stdin(command, stdin, Duration::from_secs(60))
}

/// `/etc/netns/NS/{hosts,resolv.conf}` for the client namespace: [`SERVER_NAME`] is the
/// server's address, and the resolver is the namespace's own loopback. Removed on drop.
struct Names(PathBuf);

impl Names {
    fn new(link: &Link) -> Names {
        let dir = PathBuf::from("/etc/netns").join(&link.client_ns);
        fs::create_dir_all(&dir).expect("create /etc/netns/NS");
        let names = Names(dir);
        let hosts = format!("127.0.0.1 localhost\n{} {SERVER_NAME}\n", link.server_ip);
        fs::write(names.0.join("hosts"), hosts).expect("write the namespace's hosts file");
        // Nothing answers there (the namespace's loopback is down): no query leaves it.
        fs::write(names.0.join("resolv.conf"), "nameserver 127.0.0.1\n").expect("write resolv.conf");
        names
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        let _ = fs::remove_dir("/etc/netns"); // only if no other namespace has files there
    }
}

/// The run's stdout as JSON.
fn json(run: &Finished) -> serde_json::Value {
    serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.stdout_text(), run.stderr))
}

/// An echo run from the client namespace to `addr`: clean, measured, every byte checked.
fn bench_cleanly(link: &Link, addr: &str) -> serde_json::Value {
    let flags =
        ["-c", "8", "--size", "1K", "--pipeline", "2", "--warmup", "0.1", "--duration", "0.4", "--json"];
    let run = in_ns(&link.client_ns, &[&["bench", addr][..], &flags].concat(), Vec::new());
    assert_eq!(run.code, 0, "bench {addr}: {}", run.stderr);
    let report = json(&run);
    assert!(report["msgs"].as_u64().unwrap() > 0, "{report}");
    assert_eq!((report["errors"].as_u64(), report["mismatches"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!(report["connections"].as_u64(), Some(8), "{report}");
    report
}

/// `echoloop client` from the client namespace: 256 KiB there and back, exact.
fn client_exactly(link: &Link, addr: &str) {
    let data = random_bytes(256 << 10, 1901);
    let run = in_ns(&link.client_ns, &["client", addr], data.clone());
    assert_eq!(run.code, 0, "client {addr}: {}", run.stderr);
    assert_same_bytes(&run.stdout, &data);
}

/// A server in another namespace, loaded by `bench` and used by `client` across the veth
/// link: by IP address, by host name (resolved from the namespace's hosts file), and over
/// UDP (the generator's sockets bind where the route says, not to loopback).
#[test]
fn bench_and_client_reach_a_server_on_another_host() {
    let Some(link) = Link::new("bench_and_client_reach_a_server_on_another_host", FAST) else { return };
    let _names = Names::new(&link);
    let server = link.serve(&["-q"]);
    let addr = server.addr.clone();
    let report = bench_cleanly(&link, &addr);
    assert_eq!(report["target"].as_str(), Some(addr.as_str()), "{report}");
    client_exactly(&link, &addr);

    let port = server.tcp().port();
    let named = format!("{SERVER_NAME}:{port}");
    let report = bench_cleanly(&link, &named);
    assert_eq!(report["target"].as_str(), Some(format!("{named} ({addr})").as_str()), "{report}");
    client_exactly(&link, &named);

    let udp_addr = format!("udp:{}:0", link.server_ip);
    let udp = Bin::start(
        Path::new("ip"),
        &[],
        &["netns", "exec", &link.server_ns, ECHOLOOP, "serve", "-q", &udp_addr],
    );
    let run = in_ns(
        &link.client_ns,
        &["bench", &udp.addr, "-c", "2", "--size", "64", "--warmup", "0.1", "--duration", "0.3", "--json"],
        Vec::new(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = json(&run);
    assert!(report["echoed"].as_u64().unwrap() > 0 && report["mismatches"].as_u64() == Some(0), "{report}");
}

/// Each way a connection fails, from `bench` and from `client` alike: one line on stderr
/// that names the address as typed and says what happened, and exit code 1. Refused: the
/// server's host, a port nothing listens on. Unreachable: a network with no route. Timed
/// out: a network routed to the server's namespace, which does not forward and drops the
/// packets. Name not found: a name the hosts file does not have.
#[test]
fn connect_failures_say_what_happened_in_one_line() {
    let Some(link) = Link::new("connect_failures_say_what_happened_in_one_line", FAST) else { return };
    let _names = Names::new(&link);
    let [_, _, n, _] = link.server_ip.octets();
    let dropped = format!("10.233.{n}.0/24");
    if let Err(e) =
        sh("ip", &["-n", &link.client_ns, "route", "add", &dropped, "via", &link.server_ip.to_string()])
    {
        panic!("route {dropped} through the server's namespace: {e}");
    }
    let cases = [
        (format!("{}:1", link.server_ip), "refused"),
        (format!("10.232.{n}.1:7"), "unreachable"),
        (format!("10.233.{n}.1:7"), "timed out after --connect-timeout 0.5s"),
        ("nonexistent.invalid:7".to_string(), "name not found"),
        (format!("{SERVER_NAME}:1"), "refused"),
    ];
    for (addr, what) in &cases {
        let timeout = ["--connect-timeout", "0.5"];
        let bench = in_ns(
            &link.client_ns,
            &[&["bench", addr, "-c", "2", "--duration", "0.2"][..], &timeout].concat(),
            Vec::new(),
        );
        let client = in_ns(&link.client_ns, &[&["client", addr][..], &timeout].concat(), b"hello\n".to_vec());
        for (who, run) in [("bench", &bench), ("client", &client)] {
            let stderr = run.stderr.trim_end();
            assert_eq!(run.code, 1, "{who} {addr}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{who} {addr}: one line, not: {stderr}");
            assert!(
                stderr.contains(addr.as_str()) && stderr.contains(what),
                "{who} {addr}: want '{what}': {stderr}"
            );
        }
    }
}
