#!/usr/bin/env python3
"""Fair shares under a streaming neighbour: small clients' p99 alone and beside a stream.

Usage (from the repository root, after `cargo build --release --workspace`):
    python3 docs/results/fairness.py [ROUNDS] [MODEL ...]     # default 5 rounds, event-loop io-uring
A MODEL is a `--model` name, or LABEL=PATH:MODEL to run another build of echoloop (say, one
built before a change) under its own label.

Each round, for each model in turn (a fresh server each time, pinned to CPU 0):
  1. alone: 100 clients at 10,000 messages/s in all, 128 B, open loop, on CPU 1:
       taskset -c 1 target/release/echoloop bench ADDR -c 100 --size 128 --rate 10K \
           --warmup 0.5 --duration 2 --json
  2. beside a stream: the same, while one client streams 64 KiB messages, 4 in flight, from
     a second load generator at nice 19 on CPU 1 (so it cannot delay the measuring one):
       taskset -c 1 nice -n 19 target/release/echoloop bench ADDR -c 1 --size 64K \
           --pipeline 4 --warmup 0.3 --duration 3 --json
     started 0.5 s before the small clients.
Printed: per model, the small clients' p99 alone and beside the stream (median and range over
the rounds), the stream's throughput beside them; and per round, the ratio of each model's
p99 beside the stream to the first model's, with the median of those ratios.
"""

import json
import re
import signal
import statistics
import subprocess
import sys
import time

BIN = "target/release/echoloop"
SMALL = ["-c", "100", "--size", "128", "--rate", "10K", "--warmup", "0.5", "--duration", "2", "--json"]
STREAM = ["-c", "1", "--size", "64K", "--pipeline", "4", "--warmup", "0.3", "--duration", "3", "--json"]


def start_server(spec):
    _, binary, model = parse_spec(spec)
    argv = [binary, "serve", "--model", model, "-q", "127.0.0.1:0"]
    proc = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.PIPE, text=True)
    match = re.match(r"listening on (\S+)", proc.stdout.readline())
    if not match:
        raise SystemExit(f"{spec}: no listening line")
    return proc, match.group(1)


def parse_spec(spec):
    """`event-loop` or `old=/tmp/echoloop:event-loop`: (label, binary, model)."""
    if "=" not in spec:
        return spec, BIN, spec
    label, rest = spec.split("=", 1)
    binary, model = rest.rsplit(":", 1)
    return label, binary, model


def bench(addr, args, nice=False):
    prefix = ["taskset", "-c", "1"] + (["nice", "-n", "19"] if nice else [])
    return subprocess.Popen(prefix + [BIN, "bench", addr, *args], stdout=subprocess.PIPE, text=True)


def report(proc):
    out, _ = proc.communicate(timeout=60)
    return json.loads(out)


def one(model):
    server, addr = start_server(model)
    try:
        alone = report(bench(addr, SMALL))
        stream = bench(addr, STREAM, nice=True)
        time.sleep(0.5)
        beside = report(bench(addr, SMALL))
        streamed = report(stream)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    for r in (alone, beside, streamed):
        if r["errors"] or r["mismatches"]:
            raise SystemExit(f"{model}: errors in a run: {r}")
    return {
        "alone_p99_us": alone["latency"]["p99_us"],
        "beside_p99_us": beside["latency"]["p99_us"],
        "beside_p999_us": beside["latency"]["p999_us"],
        "stream_mib_s": streamed["mib_per_s"],
    }


def spread(values):
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    models = sys.argv[2:] or ["event-loop", "io-uring"]
    results = {m: [] for m in models}
    for r in range(rounds):
        for model in models if r % 2 == 0 else list(reversed(models)):
            results[model].append(one(model))
            print(f"round {r + 1} {model}: {results[model][-1]}", file=sys.stderr)
    print("| model | p99 alone µs | p99 beside the stream µs | p99.9 beside µs | stream MiB/s |")
    print("|---|---:|---:|---:|---:|")
    for model, runs in results.items():
        col = lambda key: spread([run[key] for run in runs])
        print(f"| {parse_spec(model)[0]} | {col('alone_p99_us')} | {col('beside_p99_us')} | {col('beside_p999_us')} "
              f"| {col('stream_mib_s')} |")
    base = models[0]
    for model in models[1:]:
        for key, what in [("beside_p99_us", "p99 beside the stream"), ("stream_mib_s", "stream MiB/s")]:
            ratios = [a[key] / b[key] for a, b in zip(results[base], results[model])]
            listed = ", ".join(f"{x:.2f}" for x in ratios)
            print(f"\n{parse_spec(base)[0]} ÷ {parse_spec(model)[0]}, {what}, per round: {listed}; "
                  f"median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
