#!/usr/bin/env python3
"""Per-round ratios from `echoloop bench --compare`: each round is one `--compare --rounds 1`
run (so the servers of a round run back to back, A B A B ...), and each round's ratio of a
server to the base server is taken before the median, so slow drift of the machine cancels.

Usage (from the repository root, after `cargo build --release --workspace`):
    python3 docs/results/compare-rounds.py ROUNDS BASE MODELS SCENARIOS [EXTRA ARGS...]
e.g.
    python3 docs/results/compare-rounds.py 5 peer-udp event-loop,peer-udp udp-small,udp-burst --references

Every run is `target/release/echoloop bench --compare --pin --rounds 1 --json --models MODELS
--scenarios SCENARIOS [EXTRA ARGS]`. Printed per scenario and server: the median msgs/s and
server CPU per message (µs), and the median (min–max) of the per-round ratios to BASE of
msgs/s and of CPU per message.
"""

import json
import statistics
import subprocess
import sys

BIN = "target/release/echoloop"


def one_round(models, scenarios, extra):
    argv = [BIN, "bench", "--compare", "--pin", "--rounds", "1", "--json",
            "--models", models, "--scenarios", scenarios, *extra]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    report = json.loads(out.stdout)
    cells = {}
    for run in report["runs"]:
        outcome = run["outcome"]
        if outcome.get("kind") != "echo" or run["problems"]:
            raise SystemExit(f"a problem in {run['model']} · {run['scenario']}: {run['problems']}")
        rate, cpu = outcome["msgs_per_s"], outcome.get("server_cpu")
        cells[(run["scenario"], run["model"])] = (rate, cpu / rate * 1e6 if cpu else None)
    return cells


def spread(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main():
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    rounds, base, models, scenarios, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
    runs = []
    for r in range(rounds):
        runs.append(one_round(models, scenarios, extra))
        print(f"round {r + 1}: {runs[-1]}", file=sys.stderr)
    print("| scenario | server | msgs/s (median) | CPU/msg µs (median) | msgs/s ÷ base, per round | CPU/msg ÷ base, per round |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario in scenarios.split(","):
        for model in models.split(","):
            cells = [run[(scenario, model)] for run in runs if (scenario, model) in run]
            if not cells:
                continue
            rate = statistics.median(c[0] for c in cells)
            cpu = statistics.median(c[1] for c in cells)
            ratios = ""
            if model != base:
                pairs = [(run[(scenario, model)], run[(scenario, base)]) for run in runs]
                ratios = f"{spread([a[0] / b[0] for a, b in pairs])} | {spread([a[1] / b[1] for a, b in pairs])}"
            else:
                ratios = "(base) | (base)"
            print(f"| {scenario} | {model} | {rate:,.0f} | {cpu:.2f} | {ratios} |")


if __name__ == "__main__":
    main()
