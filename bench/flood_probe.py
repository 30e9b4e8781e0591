#!/usr/bin/env python3
"""The watchers of bench/flood.sh, standard library only; each runs until SIGTERM, then
writes its results (JSON) to --out and prints one line.

  flood_probe.py health --out FILE [--interval 0.1] NAME=ADDR...
      GET /health on each listener every INTERVAL seconds (a thread per listener, on a
      fixed schedule; a new connection per probe, as a monitor makes): latency and status.

  flood_probe.py idle --out FILE --ready FILE [--count 2000] ADDR
      opens COUNT TCP connections to ADDR that never send a byte, and keeps COUNT open:
      one the server closes (it drops a connection that sends no request within
      [webhook] header_read_timeout_secs) is counted and opened again. --ready is
      written once COUNT are open. Samples how many are open every second.

  flood_probe.py fsync --seconds 5 DIR
      how long this disk takes to fsync: a 4 KiB append and fsync every 20 ms in DIR for
      SECONDS, as a yardstick for the daemon's commits (one fsync each with
      synchronous = "full"): p50, p99 and max.
"""
import argparse
import errno
import http.client
import json
import math
import os
import selectors
import signal
import socket
import sys
import threading
import time

stop = threading.Event()


def on_term(signum, frame):
    stop.set()


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)]


def split_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


def health(args):
    listeners = [target.split("=", 1) for target in args.targets]
    samples = {name: [] for name, _ in listeners}

    def probe(name, addr):
        host, port = split_addr(addr)
        t0 = time.perf_counter()
        n = 0
        while not stop.is_set():
            start = time.perf_counter()
            status, error = None, None
            conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
            try:
                conn.request("GET", "/health")
                response = conn.getresponse()
                response.read()
                status = response.status
            except Exception as e:
                error = "%s: %s" % (type(e).__name__, e)
            finally:
                conn.close()
            end = time.perf_counter()
            samples[name].append({"at_s": start - t0, "latency_ms": (end - start) * 1000.0,
                                  "status": status, "error": error})
            n += 1
            # The next probe on schedule; one that is already due goes at once.
            pause = t0 + n * args.interval - time.perf_counter()
            if pause > 0:
                stop.wait(pause)

    threads = [threading.Thread(target=probe, args=(name, addr), daemon=True) for name, addr in listeners]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(args.timeout + 1)
    summary = {}
    for name, _ in listeners:
        rows = samples[name]
        latencies = sorted(r["latency_ms"] for r in rows)
        summary[name] = {
            "count": len(rows),
            "ok": sum(1 for r in rows if r["status"] == 200),
            "errors": [r["error"] or r["status"] for r in rows if r["status"] != 200][:10],
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": latencies[-1] if latencies else float("nan"),
            "slowest": sorted(rows, key=lambda r: -r["latency_ms"])[:5],
        }
    with open(args.out, "w") as f:
        json.dump({"summary": summary, "samples": samples}, f)
    for name, s in summary.items():
        print("health %s: %d probes, %d answered 200, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (name, s["count"], s["ok"], s["p50_ms"], s["p99_ms"], s["max_ms"]))


def idle(args):
    host, port = split_addr(args.addr)
    selector = selectors.DefaultSelector()
    counts = {"opened": 0, "connect_failures": 0, "closed_by_server": 0, "answered_by_server": 0}
    failures = []
    open_socks = set()

    def open_one():
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(5)
            s.connect((host, port))
            s.setblocking(False)
        except OSError as e:
            s.close()
            counts["connect_failures"] += 1
            if len(failures) < 10:
                failures.append("%s: %s" % (type(e).__name__, e))
            return False
        selector.register(s, selectors.EVENT_READ)
        open_socks.add(s)
        counts["opened"] += 1
        return True

    def on_readable(s):
        # A connection that never sent a request hears from the server only when it is
        # being closed (perhaps with an answer first, e.g. 408).
        try:
            data = s.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            counts["answered_by_server"] += 1
        selector.unregister(s)
        open_socks.discard(s)
        s.close()
        counts["closed_by_server"] += 1

    def drain_events(timeout):
        for key, _ in selector.select(timeout):
            on_readable(key.fileobj)

    started = time.perf_counter()
    while len(open_socks) < args.count and not stop.is_set():
        if not open_one():
            stop.wait(0.05)
        if counts["opened"] % 200 == 0:
            drain_events(0)
    ramp_s = time.perf_counter() - started
    with open(args.ready, "w") as f:
        f.write("%d\n" % len(open_socks))

    timeline = []
    next_sample = time.perf_counter()
    while not stop.is_set():
        drain_events(0.05)
        while len(open_socks) < args.count and not stop.is_set():
            if not open_one():
                break
        now = time.perf_counter()
        if now >= next_sample:
            timeline.append({"at_s": now - started, "open": len(open_socks)})
            next_sample += 1.0

    # At the end: what the server closed meanwhile is noticed and opened again, as during
    # the run (a wave of timeouts may fall just then), then every socket is checked.
    drain_events(0)
    while len(open_socks) < args.count:
        if not open_one():
            break
    alive = 0
    for s in list(open_socks):
        try:
            data = s.recv(1, socket.MSG_PEEK)
            if data:
                alive += 1  # open, with something from the server waiting
        except BlockingIOError:
            alive += 1
        except OSError as e:
            if e.errno == errno.EAGAIN:
                alive += 1
    after_ramp = [t["open"] for t in timeline]
    summary = dict(counts, target=args.count, ramp_s=ramp_s, open_at_end=alive,
                   min_open=min(after_ramp) if after_ramp else 0,
                   failures=failures)
    with open(args.out, "w") as f:
        json.dump({"summary": summary, "timeline": timeline}, f)
    for s in list(open_socks):
        s.close()
    print("idle: %d of %d open at the end (fewest open during the run %d), %d opened in all, %d closed by the server, "
          "%d connect failures"
          % (alive, args.count, summary["min_open"], counts["opened"], counts["closed_by_server"],
             counts["connect_failures"]))


def fsync(args):
    path = "%s/fsync-probe.%d" % (args.dir, time.time_ns())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    latencies = []
    end = time.perf_counter() + args.seconds
    try:
        while time.perf_counter() < end and not stop.is_set():
            os.write(fd, b"x" * 4096)
            start = time.perf_counter()
            os.fsync(fd)
            latencies.append((time.perf_counter() - start) * 1000.0)
            stop.wait(0.02)
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    print("disk: %d fsyncs of a 4 KiB append in %.0f s: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
          % (len(latencies), args.seconds, percentile(latencies, 50), percentile(latencies, 99), latencies[-1]))


def main():
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    h = sub.add_parser("health")
    h.add_argument("--out", required=True)
    h.add_argument("--interval", type=float, default=0.1)
    h.add_argument("--timeout", type=float, default=10.0)
    h.add_argument("targets", nargs="+", help="NAME=HOST:PORT")
    i = sub.add_parser("idle")
    i.add_argument("--out", required=True)
    i.add_argument("--ready", required=True)
    i.add_argument("--count", type=int, default=2000)
    i.add_argument("addr")
    d = sub.add_parser("fsync")
    d.add_argument("--seconds", type=float, default=5.0)
    d.add_argument("dir")
    args = parser.parse_args()
    {"health": health, "idle": idle, "fsync": fsync}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
