#!/usr/bin/env python3
"""Server CPU per message (or datagram), split into user and kernel time, one row per
technique: the ladder in docs/models.md.

Usage (from the repository root, after `cargo build --release --workspace`):
    python3 docs/results/cpu-ladder.py [ROUNDS] [PREFIX]   # default 5 rounds, every row
e.g. `python3 docs/results/cpu-ladder.py 5 small-many` runs the TCP rows alone.

Each round runs every row once, in order (rows interleaved round by round). A row starts its
server pinned to CPU 0 and loads it from CPU 1 with the repository's load generator:
    taskset -c 1 target/release/echoloop bench ADDR LOAD --warmup 0.5 --duration 2 --json
The server's utime and stime (/proc/PID/stat) are read at the start and the end of the
measured window; divided by the messages the window measured (`msgs`, or UDP `echoed`),
they give CPU per message. Printed per row: the medians over the rounds of user, kernel and
total µs per message, and of messages per second.
"""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

BIN = "target/release/echoloop"
PEER_UDP = "target/release/peer-udp"
WARMUP, DURATION = 0.5, 2.0
TICK = os.sysconf("SC_CLK_TCK")

UDP_SMALL = ["-c", "64", "--size", "128"]
UDP_BURST = ["-c", "1", "--size", "1200", "--pipeline", "64", "--train", "32"]
SMALL_MANY = ["-c", "100", "--size", "128"]

# (row, server command with {addr}, "udp" or "tcp", load)
ROWS = [
    ("udp-small: recv_from + send_to per datagram (peer-udp)", [PEER_UDP, "{addr}"], "udp", UDP_SMALL),
    ("udp-small: event loop, 1 datagram per call", [BIN, "serve", "--udp-batch", "1", "--udp-offload", "off", "udp:{addr}"], "udp", UDP_SMALL),
    ("udp-small: event loop, recvmmsg/sendmmsg (64)", [BIN, "serve", "--udp-offload", "off", "udp:{addr}"], "udp", UDP_SMALL),
    ("udp-small: event loop, batches + GRO/GSO", [BIN, "serve", "udp:{addr}"], "udp", UDP_SMALL),
    ("udp-burst: recv_from + send_to per datagram (peer-udp)", [PEER_UDP, "{addr}"], "udp", UDP_BURST),
    ("udp-burst: event loop, 1 datagram per call", [BIN, "serve", "--udp-batch", "1", "--udp-offload", "off", "udp:{addr}"], "udp", UDP_BURST),
    ("udp-burst: event loop, recvmmsg/sendmmsg (64)", [BIN, "serve", "--udp-offload", "off", "udp:{addr}"], "udp", UDP_BURST),
    ("udp-burst: event loop, batches + GRO/GSO", [BIN, "serve", "udp:{addr}"], "udp", UDP_BURST),
    ("small-many: event loop (read/write, epoll)", [BIN, "serve", "{addr}"], "tcp", SMALL_MANY),
    ("small-many: io-uring, single-shot recv per turn", [BIN, "serve", "--model", "io-uring", "--uring-recv", "single", "{addr}"], "tcp", SMALL_MANY),
    ("small-many: io-uring, multishot recv", [BIN, "serve", "--model", "io-uring", "--uring-recv", "multishot", "{addr}"], "tcp", SMALL_MANY),
    ("small-many: io-uring, multishot recv in bundles", [BIN, "serve", "--model", "io-uring", "--uring-recv", "bundle", "{addr}"], "tcp", SMALL_MANY),
]


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def start(argv):
    argv = [a.replace("{addr}", "127.0.0.1:0") for a in argv]
    proc = subprocess.Popen(["taskset", "-c", "0", *argv, *([] if "peer" in argv[0] else ["-q"])],
                            stdout=subprocess.PIPE, text=True)
    match = re.match(r"listening on (\S+)", proc.stdout.readline())
    if not match:
        raise SystemExit(f"{argv}: no listening line")
    return proc, match.group(1)


def one(argv, kind, load):
    server, addr = start(argv)
    target = addr if kind == "tcp" or addr.startswith("udp:") else f"udp:{addr}"
    try:
        bench = subprocess.Popen(
            ["taskset", "-c", "1", BIN, "bench", target, *load, "--warmup", str(WARMUP),
             "--duration", str(DURATION), "--json"], stdout=subprocess.PIPE, text=True)
        time.sleep(WARMUP)
        u0, s0 = cpu_ticks(server.pid)
        time.sleep(DURATION)
        u1, s1 = cpu_ticks(server.pid)
        report = json.loads(bench.communicate(timeout=60)[0])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    msgs = report.get("echoed", report.get("msgs"))
    if not msgs or report.get("mismatches"):
        raise SystemExit(f"{argv}: nothing measured, or mismatches: {report}")
    per = lambda ticks: ticks / TICK / msgs * 1e6
    return per(u1 - u0), per(s1 - s0), msgs / DURATION


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    only = sys.argv[2] if len(sys.argv) > 2 else ""
    rows = [r for r in ROWS if r[0].startswith(only)]
    results = {row: [] for row, *_ in rows}
    for r in range(rounds):
        for row, argv, kind, load in rows:
            results[row].append(one(argv, kind, load))
            print(f"round {r + 1}: {row}: {results[row][-1]}", file=sys.stderr)
    print("| technique | user µs/msg | kernel µs/msg | total µs/msg | msgs/s |")
    print("|---|---:|---:|---:|---:|")
    for row, runs in results.items():
        user = statistics.median(u for u, _, _ in runs)
        kernel = statistics.median(k for _, k, _ in runs)
        total = statistics.median(u + k for u, k, _ in runs)
        rate = statistics.median(m for _, _, m in runs)
        print(f"| {row} | {user:.2f} | {kernel:.2f} | {total:.2f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
