#!/usr/bin/env python3
"""Helpers of bench/feed.sh.

  feed.py send URL SECRET BODY RATE SECONDS OFFSET [EXPECT]
      sends RATE signed `issues` deliveries a second for SECONDS (over four keep-alive
      connections), each a newer update of the example issue (its `updated_at` grows from
      2030 + OFFSET seconds), so each one is a change in the local copy; prints how many
      were acknowledged (and writes the number to EXPECT).
  feed.py follow ADMIN SINCE SECONDS OUT EXPECT
      follows the change feed as Server-Sent Events from SINCE and writes one line per
      change to OUT: seq, the change's time (`at`, ms) and when it arrived here (ms);
      stops once the file EXPECT holds a number and that many changes arrived (or none
      for 3 s), or after SECONDS; then prints the lag (arrival - at) percentiles.
"""

import datetime
import hashlib
import hmac
import http.client
import json
import socket
import sys
import time
import uuid


def send(url, secret, body_path, rate, seconds, offset, connections=4):
    """RATE a second over CONNECTIONS keep-alive connections (an answer that takes long
    on one does not hold back the others); `updated_at` grows with each one sent."""
    import threading

    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    template = json.load(open(body_path, encoding="utf-8"))
    start = time.monotonic()
    # Each run's updates are newer than the last run's (OFFSET apart), so each is a change.
    base = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=offset)
    lock = threading.Lock()
    counts = {"next": 0, "acked": 0}

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        payload = json.loads(json.dumps(template))
        while True:
            with lock:
                n = counts["next"]
                counts["next"] += 1
            due = start + n / rate
            if due - start >= seconds:
                return
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            payload["issue"]["updated_at"] = (base + datetime.timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
            payload["issue"]["title"] = f"feed bench {n}"
            body = json.dumps(payload).encode()
            sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers = {
                "Content-Type": "application/json",
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sig,
            }
            try:
                conn.request("POST", "/webhook/github", body, headers)
                response = conn.getresponse()
                response.read()
                if 200 <= response.status < 300:
                    with lock:
                        counts["acked"] += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = min(counts["next"], int(rate * seconds))
    print(f"sent={sent} acknowledged={counts['acked']}")
    return counts["acked"]


def parse_at(text):
    # 2026-12-01T20:31:26.123Z
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def expected(path):
    try:
        with open(path, encoding="utf-8") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def follow(admin, since, seconds, out_path, expect_path):
    host, port = admin.split(":")
    sock = socket.create_connection((host, int(port)))
    request = (
        f"GET /api/changes?since={since} HTTP/1.1\r\nHost: {admin}\r\n"
        "Accept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(request.encode())
    sock.settimeout(1.0)
    deadline = time.monotonic() + seconds
    buffer = b""
    lags = []
    headers_done = False
    with open(out_path, "w", encoding="utf-8") as out:
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            want = expected(expect_path)
            # Done: all of them, or the sender is done and nothing came for 3 s (updates
            # that overtook each other on their connections are refused as older: no change).
            if want is not None and (len(lags) >= want or time.monotonic() - last_change > 3):
                break
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            arrived = time.time() * 1000
            buffer += chunk
            if not headers_done:
                if b"\r\n\r\n" not in buffer:
                    continue
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                status = head.split(b"\r\n", 1)[0]
                if b" 200 " not in status:
                    sys.exit(f"feed.py follow: {status.decode()}")
                headers_done = True
            # Chunked transfer: data lines are found regardless of the chunk sizes between them.
            while b"\ndata: " in buffer:
                start = buffer.index(b"\ndata: ") + 7
                end = buffer.find(b"\n", start)
                if end < 0:
                    break
                change = json.loads(buffer[start:end])
                buffer = buffer[end:]
                at = parse_at(change["at"])
                lags.append(arrived - at)
                last_change = time.monotonic()
                out.write(f"{change['seq']} {at} {arrived:.1f}\n")
    lags.sort()
    if not lags:
        print("changes=0")
        return
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
    print(f"changes={len(lags)} lag_p50_ms={pick(0.5):.1f} lag_p99_ms={pick(0.99):.1f} lag_max_ms={lags[-1]:.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "send":
        acked = send(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]))
        if len(sys.argv) > 8:
            with open(sys.argv[8] + ".tmp", "w", encoding="utf-8") as f:
                f.write(f"{acked}\n")
            import os
            os.replace(sys.argv[8] + ".tmp", sys.argv[8])
    elif sys.argv[1] == "follow":
        follow(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        sys.exit(__doc__)
