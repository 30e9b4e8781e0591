#!/usr/bin/env python3
"""Correctly signed deliveries at a constant rate, for bench/flood.sh.

Delivery n is due at start + n / RATE whatever happened to the ones before (an open
loop: a slow answer does not delay the next delivery, it is sent by another thread), on
a new connection each, as GitHub sends them, with a unique X-GitHub-Delivery. Each is
recorded with its latency (connect to the end of the answer), how late it went out, and
its status (or the error). Standard library only.

  flood_signed.py --url URL --secret-env VAR --payload FILE [--event issues]
                  [--rate 50] [--duration 30] [--out results.json]
"""
import argparse
import hashlib
import hmac
import http.client
import json
import math
import os
import queue
import sys
import threading
import time
import urllib.parse
import uuid


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    # Nearest rank: the smallest value with at least p % of the values at or below it.
    return sorted_values[max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret-env", required=True, help="the environment variable holding the webhook secret")
    parser.add_argument("--payload", required=True)
    parser.add_argument("--event", default="issues")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--out")
    args = parser.parse_args()

    secret = os.environ[args.secret_env].encode()
    body = open(args.payload, "rb").read()
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    url = urllib.parse.urlsplit(args.url)
    total = int(args.rate * args.duration)

    due = queue.Queue()
    results = []
    lock = threading.Lock()

    def send(n, scheduled, t0):
        delivery = str(uuid.uuid4())
        start = time.perf_counter()
        status, error = None, None
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
        try:
            conn.request("POST", url.path, body=body, headers={
                "Content-Type": "application/json",
                "User-Agent": "GitHub-Hookshot/flood",
                "X-GitHub-Event": args.event,
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": signature,
            })
            response = conn.getresponse()
            response.read()
            status = response.status
        except Exception as e:  # a timeout or a reset is a result too
            error = "%s: %s" % (type(e).__name__, e)
        finally:
            conn.close()
        end = time.perf_counter()
        with lock:
            results.append({
                "n": n, "delivery": delivery, "status": status, "error": error,
                "latency_ms": (end - start) * 1000.0,
                "late_ms": (start - scheduled) * 1000.0,
                "at_s": start - t0,
            })

    def worker(t0):
        while True:
            item = due.get()
            if item is None:
                return
            send(item[0], item[1], t0)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(t0,), daemon=True) for _ in range(args.threads)]
    for w in workers:
        w.start()
    for n in range(total):
        scheduled = t0 + n / args.rate
        pause = scheduled - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        due.put((n, scheduled))
    for _ in workers:
        due.put(None)
    for w in workers:
        w.join(args.timeout + 5)
    elapsed = time.perf_counter() - t0

    results.sort(key=lambda r: r["n"])
    acknowledged = [r for r in results if r["status"] is not None and 200 <= r["status"] < 300]
    latencies = sorted(r["latency_ms"] for r in results)
    late = sorted(r["late_ms"] for r in results)
    summary = {
        "due": total,
        "sent": len(results),
        "acknowledged": len(acknowledged),
        "statuses": {},
        "errors": [r["error"] for r in results if r["error"]][:10],
        "error_count": sum(1 for r in results if r["error"]),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "late_p99_ms": percentile(late, 99),
        "late_max_ms": late[-1] if late else float("nan"),
        "rate_achieved": len(results) / elapsed if elapsed > 0 else 0.0,
        "slowest": sorted(results, key=lambda r: -r["latency_ms"])[:5],
    }
    for r in results:
        key = str(r["status"]) if r["status"] is not None else "error"
        summary["statuses"][key] = summary["statuses"].get(key, 0) + 1
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "results": results}, f)
    print("signed: sent %d of %d due (%.1f/s), acknowledged %d, statuses %s, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
          % (summary["sent"], total, summary["rate_achieved"], summary["acknowledged"], summary["statuses"],
             summary["p50_ms"], summary["p99_ms"], summary["max_ms"]))
    return 0 if summary["acknowledged"] == total else 1


if __name__ == "__main__":
    sys.exit(main())
