#!/usr/bin/env python3
"""Event loop vs io-uring, as recorded in 2026-11-30-io-uring.md.

Usage (from the repository root, after `cargo build --release --workspace`, which also builds
the bare epoll reference `peer-epoll`):
    python3 docs/results/2026-11-30-io-uring.py [ROUNDS]        # default 5

Each round starts a fresh server per model and scenario, pinned to CPU 0 (`taskset -c 0`),
and loads it with the repository's own load generator pinned to CPU 1:
    taskset -c 1 target/release/echoloop bench 127.0.0.1:PORT --connections N --size S \
        --duration 3 --threads 1 --json
Models alternate order from round to round. Server CPU is utime+stime from /proc/PID/stat
over the whole bench run (1 s warm-up included), divided by every message of the run
(`total_msgs`). Then one pass under `strace -c -f -p PID` per model and scenario for system
calls per message, and one idle pass: VmRSS growth while `bench --mode idle` holds 10,000
connections, per connection.
"""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BIN = "target/release/echoloop"
# The two models, and the bare epoll reference (crates/peers, `cargo build --release --workspace`).
MODELS = ["event-loop", "io-uring", "peer-epoll"]
PEER = "target/release/peer-epoll"
SCENARIOS = [("small-many", 100, "128"), ("many", 2000, "128"), ("bulk", 8, "64K")]
TICK = os.sysconf("SC_CLK_TCK")


def start_server(model):
    log = tempfile.TemporaryFile()
    argv = [PEER, "127.0.0.1:0"] if model == "peer-epoll" else \
        [BIN, "serve", "--model", model, "-q", "127.0.0.1:0"]
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *argv],
        stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    match = re.match(r"listening on (\S+)", line)
    if not match:
        raise SystemExit(f"{model}: no listening line: {line!r}")
    return proc, match.group(1)


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def vm_rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit("no VmRSS")


def bench(addr, connections, size, duration=3):
    out = subprocess.run(
        ["taskset", "-c", "1", BIN, "bench", addr, "--connections", str(connections),
         "--size", size, "--duration", str(duration), "--threads", "1", "--json"],
        capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    if report["errors"] or report["mismatches"]:
        raise SystemExit(f"bench reported errors: {report}")
    return report


def one_run(model, connections, size):
    proc, addr = start_server(model)
    before = cpu_seconds(proc.pid)
    report = bench(addr, connections, size)
    used = cpu_seconds(proc.pid) - before
    stop_server(proc)
    return {
        "msgs_per_s": report["msgs_per_s"],
        "cpu_us_per_msg": used / report["total_msgs"] * 1e6,
        "server_cpu": used,
        "client_cpu": report["client_cpu"],
    }


def syscalls_per_message(model, connections, size):
    proc, addr = start_server(model)
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out.name, "-p", str(proc.pid)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached
        report = bench(addr, connections, size)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        table = out.read()
    stop_server(proc)
    calls = {}
    for line in table.splitlines():
        cols = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(cols) >= 5 and cols[0][0].isdigit() and cols[-1] != "total":
            calls[cols[-1]] = int(cols[3])
    msgs = report["total_msgs"]
    per_msg = {name: n / msgs for name, n in calls.items() if n / msgs >= 0.001}
    return sum(calls.values()) / msgs, per_msg, report["msgs_per_s"]


def idle_memory(model, connections=10_000):
    proc, addr = start_server(model)
    baseline = vm_rss_kib(proc.pid)
    holder = subprocess.Popen(
        ["taskset", "-c", "1", BIN, "bench", addr, "--mode", "idle", "--connections",
         str(connections), "--duration", "3", "--json"], stdout=subprocess.PIPE, text=True)
    peak = baseline
    while holder.poll() is None:
        peak = max(peak, vm_rss_kib(proc.pid))
        time.sleep(0.05)
    held = json.loads(holder.stdout.read())["held"]
    stop_server(proc)
    return baseline, peak, held, (peak - baseline) * 1024 / held


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    results = {(s, m): [] for s, _, _ in SCENARIOS for m in MODELS}
    for r in range(rounds):
        for name, connections, size in SCENARIOS:
            order = MODELS[r % len(MODELS):] + MODELS[:r % len(MODELS)]  # rotate the order
            for model in order:
                run = one_run(model, connections, size)
                results[(name, model)].append(run)
                print(f"round {r + 1} {name:10} {model:10} {run['msgs_per_s']:>10.0f} msg/s "
                      f"{run['cpu_us_per_msg']:6.2f} us/msg server cpu {run['server_cpu']:.2f}s "
                      f"client cpu {run['client_cpu']:.2f}", flush=True)
    med = lambda runs, key: statistics.median(x[key] for x in runs)  # noqa: E731
    print("\n| scenario | model | msg/s (median) | server CPU µs/msg (median) | load generator CPU |")
    print("|---|---|---|---|---|")
    for name, _, _ in SCENARIOS:
        for model in MODELS:
            runs = results[(name, model)]
            print(f"| {name} | {model} | {med(runs, 'msgs_per_s'):.0f} | {med(runs, 'cpu_us_per_msg'):.2f} "
                  f"| {med(runs, 'client_cpu'):.2f} |")
    print("\n| scenario | io-uring ÷ | throughput ratio (median of per-round ratios, min–max) "
          "| CPU/msg ratio (median of per-round ratios, min–max) |")
    print("|---|---|---|---|")
    for name, _, _ in SCENARIOS:
        iou = results[(name, "io-uring")]
        for base in ("event-loop", "peer-epoll"):
            ref = results[(name, base)]
            tput = [b["msgs_per_s"] / a["msgs_per_s"] for a, b in zip(ref, iou)]
            cpu = [b["cpu_us_per_msg"] / a["cpu_us_per_msg"] for a, b in zip(ref, iou)]
            print(f"| {name} | {base} | {statistics.median(tput):.2f} ({min(tput):.2}–{max(tput):.2}) "
                  f"| {statistics.median(cpu):.2f} ({min(cpu):.2}–{max(cpu):.2}) |")
    print("\n| scenario | model | syscalls/msg | msg/s under strace | per syscall (≥ 0.001/msg) |")
    print("|---|---|---|---|---|")
    for name, connections, size in SCENARIOS:
        for model in MODELS:
            total, per, rate = syscalls_per_message(model, connections, size)
            detail = ", ".join(f"{k} {v:.3f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
            print(f"| {name} | {model} | {total:.3f} | {rate:.0f} | {detail} |", flush=True)
    print("\n| model | VmRSS before (KiB) | peak while holding (KiB) | held | bytes per connection |")
    print("|---|---|---|---|---|")
    for model in MODELS:
        before, peak, held, per = idle_memory(model)
        print(f"| {model} | {before} | {peak} | {held} | {per:.0f} |", flush=True)


if __name__ == "__main__":
    main()
