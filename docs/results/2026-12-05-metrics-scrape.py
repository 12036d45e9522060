"""Does being scraped 10 times a second change the event loop's CPU per message?

    python3 docs/results/2026-12-05-metrics-scrape.py target/release/echoloop ROUNDS SECS

1. Attribution: 500 scrapes of an idle server, one after another; each thread's CPU time
   (/proc/PID/task/TID/schedstat, nanoseconds) per scrape.
2. Interleaved rounds (A B, then B A, ...) under load: the server on CPU 0, this script, its
   scraper thread and `echoloop bench` (50 connections, closed loop, 128-byte messages) on
   CPU 1. A: no scraper; B: GET /metrics every 100 ms on a new connection. Per round, CPU
   per message of the event loop's thread (the main thread: worker 0) and of the process.
"""
import json, os, socket, subprocess, sys, threading, time

EXE, ROUNDS, SECS = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.sched_setaffinity(0, {1})


def start():
    server = subprocess.Popen(["taskset", "-c", "0", EXE, "serve", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "-q"],
                              stdout=subprocess.PIPE, text=True)
    addr = server.stdout.readline().split()[-1]
    metrics = server.stdout.readline().split("//")[1].split("/")[0]
    return server, addr, metrics


def per_thread(pid):  # {thread name: ns on CPU}
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        out[name] = out.get(name, 0) + int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
    return out


def get_metrics(metrics):
    host, port = metrics.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        while s.recv(65536):
            pass


server, addr, metrics = start()
before, n = per_thread(server.pid), 500
for _ in range(n):
    get_metrics(metrics)
after = per_thread(server.pid)
for name in sorted(after):
    print(f"attribution: thread {name}: {(after[name] - before.get(name, 0)) / n / 1000:.3f} us per scrape")


def scrape(stop, count):
    while not stop.is_set():
        get_metrics(metrics)
        count[0] += 1
        stop.wait(0.1)


def run(scraped):
    stop, count = threading.Event(), [0]
    scraper = threading.Thread(target=scrape, args=(stop, count))
    if scraped:
        scraper.start()
    before = per_thread(server.pid)
    out = subprocess.run([EXE, "bench", addr, "--connections", "50", "--duration", SECS, "--warmup", "0.5", "--json"],
                         capture_output=True, text=True, check=True)
    after = per_thread(server.pid)
    stop.set()
    if scraped:
        scraper.join()
    report, msgs = json.loads(out.stdout), json.loads(out.stdout)["total_msgs"]
    loop = after["echoloop"] - before["echoloop"]
    proc = sum(after.values()) - sum(before.values())
    return {"loop": loop / msgs, "proc": proc / msgs, "msgs_per_s": report["msgs_per_s"], "scrapes": count[0],
            "errors": report["errors"] + report["mismatches"]}


rows = []
for r in range(ROUNDS):
    res = {s: run(s) for s in ([False, True] if r % 2 == 0 else [True, False])}
    rows.append(res)
    a, b = res[False], res[True]
    print(f"round {r + 1}: A loop {a['loop']:.0f} ns/msg, process {a['proc']:.0f}, {a['msgs_per_s']:.0f} msg/s | "
          f"B loop {b['loop']:.0f}, process {b['proc']:.0f}, {b['msgs_per_s']:.0f} msg/s, {b['scrapes']} scrapes | "
          f"B/A loop {b['loop'] / a['loop']:.3f}, process {b['proc'] / a['proc']:.3f}; errors {a['errors'] + b['errors']}",
          flush=True)
server.terminate()
server.wait()
for key in ["loop", "proc"]:
    ratios = sorted(row[True][key] / row[False][key] for row in rows)
    mid = len(ratios) // 2
    median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    print(f"median of per-round B/A, {key} CPU per message: {median:.3f} (min {ratios[0]:.3f}, max {ratios[-1]:.3f})")
