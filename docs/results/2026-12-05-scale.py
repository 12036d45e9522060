#!/usr/bin/env python3
"""As many connections as the machine allows, as recorded in 2026-12-05-scale.md.

Usage (from the repository root, after `cargo build --release`; run as root to read
/proc/slabinfo):
    python3 docs/results/2026-12-05-scale.py memory [N...]          # default 10000 19900
    python3 docs/results/2026-12-05-scale.py threads [N]            # default 19900
    python3 docs/results/2026-12-05-scale.py latency MODEL [ROUNDS] # default 5 rounds
    python3 docs/results/2026-12-05-scale.py baseline BINARY [N]    # another build's server

Each part stays under about two minutes. Every server is fresh, pinned to CPU 0
(`taskset -c 0`), with `--max-connections 20000`; the load generator is pinned to CPU 1 and
connects from 19 source addresses (`--source 127.0.0.2-127.0.0.20`), so that neither the port
range nor one process's descriptors (the hard RLIMIT_NOFILE, 20,000 here, which root cannot
raise on this machine) is what stops it before the server does.

- memory: for the event loop and io-uring, and each N, hold N idle connections:
  `bench --mode idle -c N --server-pid PID --json`. The bench reads the server's VmRSS
  before the first connection and one second after the last, and the kernel's memory
  (/proc/meminfo, /proc/slabinfo, /proc/net/sockstat) at the same moments.
- threads: the same for thread-per-conn, once with the machine's settings (it stops where
  the process runs out of memory mappings: each thread maps a stack and a signal stack,
  each with a guard page, under vm.max_map_count), then once with vm.max_map_count raised
  for the run (and restored).
- latency: 100 connections at 10,000 messages/s (128 B, 1 s warm-up, 5 s measured), beside
  19,800 idle connections (`--mode idle -c 19900 --active 100`) and alone (`--mode echo -c
  100`), alternating which goes first from round to round; the ratio of p99s per round,
  and its median.
- baseline: the memory part's event-loop and io-uring runs against another build's binary
  (the commit before this work), with this build's load generator.

Kernel settings: `needs()` raises a setting for the duration of a part and puts the old
value back at exit. Only the second half of `threads` needs one here (vm.max_map_count);
fs.nr_open (1048576), somaxconn (4096), threads-max and pid_max are already enough.
"""

import atexit
import json
import os
import statistics
import subprocess
import sys
import time

BIN = "target/release/echoloop"
# The machine these runs were recorded on was shared with other builds and tests (load
# average 3 to 10 on 2 CPUs): the server and the generator run under a real-time policy
# (SCHED_FIFO, priority 20) so that latency measures them, not the queue for the CPU; both
# sleep in epoll_wait between messages, so they take only the CPU they use.
# PRIORITY="" to run without, or e.g. PRIORITY="nice -n -10".
NICE = os.environ.get("PRIORITY", "chrt -f 20").split()
SOURCES = "127.0.0.2-127.0.0.20"
MODELS = ["event-loop", "io-uring"]
RESTORE = {}


def sysctl_path(name):
    return "/proc/sys/" + name.replace(".", "/")


def needs(name, at_least):
    """Raise sysctl `name` to `at_least` if it is lower, and restore it at exit."""
    path = sysctl_path(name)
    value = int(open(path).read().split()[0])
    if value >= at_least:
        return
    RESTORE.setdefault(path, open(path).read())
    with open(path, "w") as f:
        f.write(str(at_least))
    print(f"# set {name} = {at_least} (was {value}; restored at exit)")


@atexit.register
def restore():
    for path, value in RESTORE.items():
        with open(path, "w") as f:
            f.write(value)


def limits():
    """The limits in force, for the record."""
    read = lambda name: open(sysctl_path(name)).read().split()
    out = subprocess.run(["sh", "-c", "ulimit -Sn; ulimit -Hn"], capture_output=True, text=True).stdout.split()
    return {
        "RLIMIT_NOFILE soft/hard": "/".join(out),
        "fs.nr_open": read("fs.nr_open")[0],
        "fs.file-max": read("fs.file-max")[0],
        "net.ipv4.ip_local_port_range": " ".join(read("net.ipv4.ip_local_port_range")),
        "net.core.somaxconn": read("net.core.somaxconn")[0],
        "net.ipv4.tcp_mem": " ".join(read("net.ipv4.tcp_mem")),
        "kernel.pid_max": read("kernel.pid_max")[0],
        "kernel.threads-max": read("kernel.threads-max")[0],
        "vm.max_map_count": read("vm.max_map_count")[0],
    }


def start_server(binary, model):
    argv = [*NICE, "taskset", "-c", "0", binary, "-q", "serve", "--model", model, "--max-connections", "20000",
            "127.0.0.1:0"]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    if not line.startswith("listening on "):
        server.kill()
        raise SystemExit(f"{model}: no 'listening on' line: {line!r}")
    return server, line.split()[-1]


def stop_server(server):
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def bench(args):
    argv = [*NICE, "taskset", "-c", "1", BIN, "bench", *args, "--source", SOURCES, "--json"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=110)
    try:
        return json.loads(run.stdout)
    except json.JSONDecodeError:
        return {"error": run.stderr.strip().splitlines()[-3:], "exit": run.returncode}


def idle(binary, model, n):
    server, addr = start_server(binary, model)
    time.sleep(0.3)
    try:
        return bench([addr, "--mode", "idle", "-c", str(n), "--duration", "3", "--connect-timeout", "5",
                      "--server-pid", str(server.pid)])
    finally:
        stop_server(server)


def summarise_idle(model, n, r):
    if "error" in r:
        return f"| {model} | {n} | failed: {' / '.join(r['error'])} |"
    server, kernel = r.get("server") or {}, r["kernel"]
    caches = ", ".join(f"{name} {grew / r['held'] :.0f} B" for name, grew in kernel["growth"]["caches"][:6])
    return (f"| {model} | {n} | held {r['held']} (failed {r['failed']}, dropped {r['dropped']}) | "
            f"{r['connect_s']:.2f} s, {r['connects_per_s']:.0f}/s (tenths: "
            f"{' '.join(f'{x:.0f}' for x in r['slices_per_s'])}) | "
            f"{server.get('rss_before', 0) / 1024:.0f} → {server.get('rss_held', 0) / 1024:.0f} KiB | "
            f"{server.get('bytes_per_connection', float('nan')):.1f} B | "
            f"{kernel['bytes_per_connection'] / 1024:.2f} KiB ({caches}) | {r['first_error'] or ''} |")


def part_threads(n):
    """thread-per-conn as the machine is set up, then with room for four mappings a thread."""
    needs("kernel.pid_max", n + 4096)  # a thread (a pid) per connection
    needs("kernel.threads-max", n + 4096)
    results = {}
    for label in ["as set up", "vm.max_map_count raised"]:
        if label != "as set up":
            needs("vm.max_map_count", 4 * n + 8192)  # stack, signal stack, a guard page each
        results[label] = r = idle(BIN, "thread-per-conn", n)
        print(summarise_idle(f"thread-per-conn ({label})", n, r), flush=True)
    return results


def part_memory(ns):
    results = {}
    for model in MODELS:
        for n in ns:
            r = idle(BIN, model, n)
            results[f"{model} {n}"] = r
            print(summarise_idle(model, n, r), flush=True)
    return results


def part_latency(model, rounds):
    load = ["--rate", "10000", "--size", "128", "--warmup", "1", "--duration", "5"]
    results = []
    for i in range(rounds):
        time.sleep(2)
        server, addr = start_server(BIN, model)
        time.sleep(0.3)
        try:
            crowd = lambda: bench([addr, "--mode", "idle", "-c", "19900", "--active", "100", *load,
                                   "--server-pid", str(server.pid)])
            alone = lambda: bench([addr, "--mode", "echo", "-c", "100", *load, "--server-pid", str(server.pid)])
            # Two seconds between runs: closing 19,800 connections is kernel work (sockets
            # freed after an RCU grace period) that should not land in the next run.
            if i % 2 == 0:
                a = alone(); time.sleep(2); c = crowd()
            else:
                c = crowd(); time.sleep(2); a = alone()
        finally:
            stop_server(server)
        if "error" in c or "error" in a:
            print(f"round {i}: failed: {c.get('error')} {a.get('error')}", flush=True)
            continue
        active = c["active"]
        ratio = active["latency"]["p99_us"] / a["latency"]["p99_us"]
        results.append({"crowd": c, "alone": a, "ratio_p99": ratio})
        print(f"round {i} ({'alone first' if i % 2 == 0 else 'crowd first'}): idle held {c['held']}, "
              f"active p50/p99/p99.9 {active['latency']['p50_us']:.0f}/{active['latency']['p99_us']:.0f}/"
              f"{active['latency']['p999_us']:.0f} µs, errors {active['errors']}; alone "
              f"{a['latency']['p50_us']:.0f}/{a['latency']['p99_us']:.0f}/{a['latency']['p999_us']:.0f} µs; "
              f"p99 ratio {ratio:.2f}; server CPU {active.get('server_cpu') or 0:.2f} vs {a.get('server_cpu') or 0:.2f}",
              flush=True)
    if results:
        ratios = [r["ratio_p99"] for r in results]
        print(f"{model}: median p99 ratio (crowd / alone) over {len(ratios)} rounds: "
              f"{statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    return results


def main():
    part = sys.argv[1] if len(sys.argv) > 1 else "memory"
    print("# limits:", json.dumps(limits()))
    if part == "memory":
        ns = [int(n) for n in sys.argv[2:]] or [10000, 19900]
        results = part_memory(ns)
    elif part == "threads":
        results = part_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 19900)
    elif part == "latency":
        results = part_latency(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 5)
    elif part == "baseline":
        binary, n = sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 19900
        results = {}
        for model in ["event-loop", "io-uring"]:
            results[model] = r = idle(binary, model, n)
            print(summarise_idle(model + " (baseline)", n, r), flush=True)
    else:
        raise SystemExit(__doc__)
    with open(f"/tmp/scale-{part}-{os.getpid()}.json", "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
