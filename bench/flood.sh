#!/usr/bin/env bash
# Flood: for SECONDS (default 30), wrk sends unsigned and badly signed deliveries as fast as
# it can from one address (bench/flood.lua: no signature, a wrong one, garbage, every
# GitHub header around a wrong one) over many connections, while at the same time
#   - bench/flood_signed.py sends 50 correctly signed deliveries a second (a new
#     connection each, as GitHub does, from the same address),
#   - bench/flood_probe.py health asks /health on the webhook and the admin listener
#     every 100 ms,
#   - bench/flood_probe.py idle holds 2,000 idle connections to the webhook listener
#     (opened before the rest starts; one the server drops for sending nothing within
#     header_read_timeout_secs is opened again, so 2,000 are open at any time).
# Then checks: every signed delivery acknowledged (2xx) and stored, their p99 <= 50 ms,
# /health max <= 100 ms on both listeners, and the flood answered 401/429 only.
#
#   bench/flood.sh [SECONDS]
#   env: FUTURNAL_FLOOD_CONNECTIONS (wrk, default 256), FUTURNAL_FLOOD_THREADS (wrk, 2),
#        FUTURNAL_FLOOD_SIGNED_RATE (50), FUTURNAL_FLOOD_IDLE (2000); a baseline without the
#        flood or the idle connections: FUTURNAL_FLOOD_CONNECTIONS=0, FUTURNAL_FLOOD_IDLE=0
#        FUTURNAL_FLOOD_NICE=N runs wrk under `nice -n N` (it shares the cores with the daemon),
#        FUTURNAL_BENCH_CONFIG extra TOML for the config (e.g. [webhook] header_read_timeout_secs = 60),
#        FUTURNAL_BENCH_BIN a futurnal binary to measure instead of building this checkout's,
#        FUTURNAL_FLOOD_KEEP=1 keeps the data dir (results JSON, daemon log) and prints its path
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
duration=${1:-30}
connections=${FUTURNAL_FLOOD_CONNECTIONS:-256}
threads=${FUTURNAL_FLOOD_THREADS:-2}
rate=${FUTURNAL_FLOOD_SIGNED_RATE:-50}
idle=${FUTURNAL_FLOOD_IDLE:-2000}
flood_body="$root/tests/fixtures/github-webhooks/payloads/push/payload.json"
signed_body="$root/tests/fixtures/github-webhooks/payloads/issues/opened.payload.json"

if ! command -v wrk >/dev/null; then
  echo "bench: wrk is not installed; installing it (apt-get install -y wrk)" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { echo "bench: could not install wrk (apt-get install wrk)" >&2; exit 1; }
fi
command -v python3 >/dev/null || { echo "bench: python3 is needed" >&2; exit 1; }
# Idle connections, wrk's, the daemon's own files: well past the usual 1024 (the daemon
# inherits the limit).
want_files=$(( idle + connections + 1024 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_files" ]; then
  ulimit -n "$want_files" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_files" ]; then
  echo "bench: open file limit $(ulimit -n) is below the $want_files needed (raise the hard limit)" >&2
  exit 1
fi

if [ -n "${FUTURNAL_BENCH_BIN:-}" ]; then
  bin=$FUTURNAL_BENCH_BIN
else
  (cd "$root" && cargo build --release --quiet)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/futurnal"
fi
data=$(mktemp -d /tmp/futurnal-flood.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  if [ -n "${FUTURNAL_FLOOD_KEEP:-}" ]; then echo "kept: $data"; else rm -rf "$data"; fi
}
trap cleanup EXIT
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export FUTURNAL_WEBHOOK_SECRET="$secret"
cat > "$data/config.toml" <<TOML
${FUTURNAL_BENCH_CONFIG:-}
TOML
export FUTURNAL_CONFIG="$data/config.toml"

# The fixtures' repository is tracked (so signed deliveries are queued and processed); its
# remote is an empty local repository, never GitHub.
git init -q --bare "$data/remote.git"
"$bin" --data-dir "$data" sources github add Codertocat/Hello-World --no-sync --clone-url "file://$data/remote.git" >/dev/null
"$bin" --data-dir "$data" serve --no-poll --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$data/banner" 2>"$data/log" &
pid=$!
for _ in $(seq 200); do [ -s "$data/banner" ] && break; sleep 0.05; done
webhook=$(sed -n 's/.*webhook=\([^ ]*\).*/\1/p' "$data/banner")
admin=$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$data/banner")
[ -n "$webhook" ] && [ -n "$admin" ] || { echo "bench: the daemon did not start:" >&2; cat "$data/log" >&2; exit 1; }

# How fast this disk commits, for scale: with synchronous = "full" every acknowledged
# delivery waits for an fsync, so a disk whose fsyncs stall stalls the signed deliveries.
python3 "$here/flood_probe.py" fsync --seconds 5 "$data" >"$data/disk.txt"

# The idle connections first, so they are open for the whole flood.
idle_pid=
if [ "$idle" -gt 0 ]; then
  python3 "$here/flood_probe.py" idle --count "$idle" --ready "$data/idle.ready" --out "$data/idle.json" "$webhook" >"$data/idle.txt" &
  idle_pid=$!; pids+=("$idle_pid")
  for _ in $(seq 600); do [ -s "$data/idle.ready" ] && break; sleep 0.05; done
  [ -s "$data/idle.ready" ] || { echo "bench: $idle idle connections were not open within 30 s" >&2; exit 1; }
else
  echo 0 >"$data/idle.ready"
fi

echo "futurnal flood: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) before; ${duration}s of wrk -t$threads -c$connections" \
  "(unsigned/badly signed, as fast as it can) + $rate signed deliveries/s + /health every 100 ms on both listeners" \
  "+ $(cat "$data/idle.ready") idle connections"
cat "$data/disk.txt"

python3 "$here/flood_probe.py" health --out "$data/health.json" "webhook=$webhook" "admin=$admin" >"$data/health.txt" &
health_pid=$!; pids+=("$health_pid")
wrong_sig=$(python3 -c 'import hmac,hashlib,sys; print("sha256="+hmac.new(b"not-the-secret", open(sys.argv[1],"rb").read(), hashlib.sha256).hexdigest())' "$flood_body")
wrk_pid=
if [ "$connections" -gt 0 ]; then
  FUT_BODY="$flood_body" FUT_WRONG_SIG="$wrong_sig" FUT_RUN="$$" nice -n "${FUTURNAL_FLOOD_NICE:-0}" \
    wrk -t"$threads" -c"$connections" -d"${duration}s" --timeout 10s -s "$here/flood.lua" "http://$webhook/webhook/github" >"$data/wrk.txt" 2>&1 &
  wrk_pid=$!; pids+=("$wrk_pid")
else
  : >"$data/wrk.txt"
fi
signed_status=0
python3 "$here/flood_signed.py" --url "http://$webhook/webhook/github" --secret-env FUTURNAL_WEBHOOK_SECRET \
  --payload "$signed_body" --event issues --rate "$rate" --duration "$duration" --out "$data/signed.json" >"$data/signed.txt" || signed_status=$?
[ -z "$wrk_pid" ] || wait "$wrk_pid" || true
kill -TERM "$health_pid" $idle_pid
wait "$health_pid" $idle_pid || true

# The workers finish the queue; then the server's counters, and the store itself.
for _ in $(seq 300); do
  depth=$(curl -s --max-time 2 "http://$admin/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["queue_depth"])' 2>/dev/null || echo "?")
  [ "$depth" = 0 ] && break
  sleep 0.1
done
curl -s "http://$admin/metrics" >"$data/metrics.txt"
kill -TERM "$pid"; wait "$pid" || true
"$bin" --data-dir "$data" --json sources github webhook deliveries --limit 100000 >"$data/deliveries.json" 2>/dev/null

echo
sed -n '/Thread Stats/,$p' "$data/wrk.txt" | grep -v '^FLOOD_STATUS' || true
cat "$data/signed.txt" "$data/health.txt"
[ -z "$idle_pid" ] || cat "$data/idle.txt"
python3 - "$data" "$signed_status" "$connections" "$idle" <<'PY'
import json, os, re, sys
data, signed_status, flooded, idle_target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) > 0, int(sys.argv[4])
wrk = open(os.path.join(data, "wrk.txt")).read()
statuses = {int(s): int(n) for s, n in re.findall(r"^FLOOD_STATUS (\d+) (\d+)$", wrk, re.M)}
rps = re.search(r"^Requests/sec:\s*([0-9.]+)", wrk, re.M)
errors = re.search(r"^\s*Socket errors:.*$", wrk, re.M)
signed = json.load(open(os.path.join(data, "signed.json")))["summary"]
health = json.load(open(os.path.join(data, "health.json")))["summary"]
if idle_target:
    idle = json.load(open(os.path.join(data, "idle.json")))["summary"]
else:
    idle = dict(target=0, open_at_end=0, opened=0, closed_by_server=0, connect_failures=0)
metrics = open(os.path.join(data, "metrics.txt")).read()
def metric(name):
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+]+)$", metrics, re.M)
    return int(float(m.group(1))) if m else 0
received = {o: metric('futurnal_webhook_requests_total{outcome="%s"}' % o)
            for o in ("queued", "unauthorized", "rate_limited", "bad_request", "unavailable", "queue_full")}
deliveries = json.load(open(os.path.join(data, "deliveries.json")))
by_status = {}
for d in deliveries:
    by_status[d["status"]] = by_status.get(d["status"], 0) + 1

print()
print("flood: %s requests/s; statuses wrk read: %s%s" % (
    rps.group(1) if rps else "?", ", ".join("%d: %d" % kv for kv in sorted(statuses.items())) or "none",
    "; " + errors.group(0).strip() if errors else ""))
print("server counted: %s" % ", ".join("%s %d" % kv for kv in received.items()))
print("signed: sent %d of %d, acknowledged (2xx) %d, p50 %.1f ms, p99 %.1f ms, max %.1f ms (sent up to %.1f ms late)" % (
    signed["sent"], signed["due"], signed["acknowledged"], signed["p50_ms"], signed["p99_ms"], signed["max_ms"],
    signed["late_max_ms"]))
if signed["error_count"]:
    print("signed errors: %d, e.g. %s" % (signed["error_count"], signed["errors"][:3]))
for name, h in health.items():
    print("health %s: %d probes, %d answered 200, p99 %.1f ms, max %.1f ms" % (name, h["count"], h["ok"], h["p99_ms"], h["max_ms"]))
print("idle: %d of %d held open at the end (%d opened in all, %d closed by the server and opened again, %d connect failures)" % (
    idle["open_at_end"], idle["target"], idle["opened"], idle["closed_by_server"], idle["connect_failures"]))
print("stored: %d deliveries (%s)" % (len(deliveries), ", ".join("%s %d" % kv for kv in sorted(by_status.items()))))

checks = [
    ("every signed delivery acknowledged", signed["acknowledged"] == signed["due"] and signed_status == 0,
     "%d of %d" % (signed["acknowledged"], signed["due"])),
    ("signed p99 <= 50 ms", signed["p99_ms"] <= 50, "%.1f ms" % signed["p99_ms"]),
    ("health max <= 100 ms (webhook)", health["webhook"]["max_ms"] <= 100 and health["webhook"]["ok"] == health["webhook"]["count"] > 0,
     "%.1f ms, %d/%d answered 200" % (health["webhook"]["max_ms"], health["webhook"]["ok"], health["webhook"]["count"])),
    ("health max <= 100 ms (admin)", health["admin"]["max_ms"] <= 100 and health["admin"]["ok"] == health["admin"]["count"] > 0,
     "%.1f ms, %d/%d answered 200" % (health["admin"]["max_ms"], health["admin"]["ok"], health["admin"]["count"])),
    ("stored = signed acknowledged = server's queued count",
     len(deliveries) == signed["acknowledged"] == received["queued"],
     "%d stored, %d acknowledged, %d counted" % (len(deliveries), signed["acknowledged"], received["queued"])),
]
if flooded:
    checks.append(("the flood got 401/429 only", bool(statuses) and set(statuses) <= {401, 429},
                   ", ".join("%d: %d" % kv for kv in sorted(statuses.items()))))
if idle_target:
    checks.append(("%d idle connections open at the same time" % idle["target"],
                   idle["open_at_end"] >= idle["target"] and idle["connect_failures"] == 0,
                   "%d open at the end, %d connect failures" % (idle["open_at_end"], idle["connect_failures"])))
print()
for name, ok, detail in checks:
    print("%s  %s (%s)" % ("PASS" if ok else "FAIL", name, detail))
failed = [name for name, ok, _ in checks if not ok]
print("RESULT %s flood_rps=%s signed_ack=%d/%d signed_p50=%.1f signed_p99=%.1f signed_max=%.1f health_webhook_max=%.1f "
      "health_admin_max=%.1f health_webhook_p99=%.1f health_admin_p99=%.1f idle_open=%d stored=%d" % (
    "FAIL" if failed else "PASS", rps.group(1) if rps else "?", signed["acknowledged"], signed["due"],
    signed["p50_ms"], signed["p99_ms"], signed["max_ms"], health["webhook"]["max_ms"], health["admin"]["max_ms"],
    health["webhook"]["p99_ms"], health["admin"]["p99_ms"], idle["open_at_end"], len(deliveries)))
sys.exit(1 if failed else 0)
PY
