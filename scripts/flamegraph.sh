#!/usr/bin/env bash
# Where an event loop's CPU goes: a flame graph of one rung of the ladder under load, and the
# share of its CPU time spent in the kernel, and in the kernel's TCP/IP stack.
#
#   scripts/flamegraph.sh [OUT.svg] [EXAMPLE]
#
# OUT.svg defaults to docs/results/<today>-ladder-flamegraph.svg, EXAMPLE to
# ladder-3-event-loop (any rung, or anything that takes an address and prints
# `listening on ADDR`). The rung runs on CPU 0, the load generator (`echoloop bench`: 100
# connections, 128-byte messages, over loopback) on CPU 1, and `perf record -e cpu-clock -g`
# samples the rung for 4 seconds. cpu-clock is a software event: it works where the machine
# offers no hardware performance counters (most VMs). Kernel call chains are complete; the
# rung's own frames are as deep as its frame pointers allow (release builds omit them).
#
# Needs perf (Debian: apt-get install linux-perf), inferno (cargo install inferno) and
# taskset, and permission to profile (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-docs/results/$(date -u +%F)-ladder-flamegraph.svg}
example=${2:-ladder-3-event-loop}
for tool in perf inferno-collapse-perf inferno-flamegraph taskset; do
    if ! command -v "$tool" >/dev/null; then
        echo "flamegraph.sh: $tool not found (perf: apt-get install linux-perf; inferno: cargo install inferno)" >&2
        exit 1
    fi
done

cargo build --release --quiet --bin echoloop --example "$example"
tmp=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

taskset -c 0 "target/release/examples/$example" 127.0.0.1:0 >"$tmp/stdout" &
server=$!
for _ in $(seq 100); do
    grep -q '^listening on ' "$tmp/stdout" && break
    sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$tmp/stdout")
[ -n "$addr" ] || { echo "flamegraph.sh: $example did not say where it listens" >&2; exit 1; }

# The load runs 1 s longer on each side than the 4 s sampled.
taskset -c 1 target/release/echoloop bench "$addr" -c 100 --size 128 --warmup 1 --duration 5 \
    >"$tmp/bench.txt" 2>&1 &
load=$!
sleep 1.5
perf record -q -e cpu-clock -F 999 -g -p "$server" -o "$tmp/perf.data" -- sleep 4 2>"$tmp/perf.log"
wait "$load" || { cat "$tmp/bench.txt" >&2; exit 1; }

perf script -i "$tmp/perf.data" 2>/dev/null | inferno-collapse-perf --kernel >"$tmp/folded"
inferno-flamegraph --title "$example: 100 connections echoing 128-byte messages ($(date -u +%F))" \
    --colors aqua <"$tmp/folded" >"$out"

# Shares of the rung's sampled CPU time, each sample counted once. A folded line is
# `frame;frame;...;leaf WEIGHT`; kernel frames end in _[k]. A sample is user space when its
# leaf is not a kernel function; else epoll when it is inside epoll_wait or epoll_ctl (which
# also ask each socket for its readiness); else TCP/IP when its stack passes through socket,
# TCP, IP or loopback-device code (with io_uring, inside io_uring_enter); else other kernel
# work (system call entry and exit, scheduling, memory).
awk '
    { n = $NF; total += n; stack = $0; sub(/ [0-9]+$/, "", stack)
      leaf = stack; sub(/.*;/, "", leaf)
      if (leaf !~ /_\[k\]$/) user += n
      else if (stack ~ /(do_epoll_wait|do_epoll_ctl|ep_poll)[^;]*_\[k\]/) poll += n
      else if (stack ~ /(tcp_|inet_|ip_|ip6_|sock_|__sys_(recvfrom|sendto)|net_rx|__netif|loopback_xmit|__dev_queue_xmit)[^;]*_\[k\]/) net += n
      else other += n }
    END { if (total == 0) { print "no samples"; exit 1 }
          printf "the rung'"'"'s CPU time: socket, TCP, IP and loopback %.0f%%; epoll %.0f%%; other kernel work %.0f%%; user space %.0f%%\n",
                 100 * net / total, 100 * poll / total, 100 * other / total, 100 * user / total }
' "$tmp/folded"
grep -E 'throughput' "$tmp/bench.txt" || true
echo "flame graph: $out"
