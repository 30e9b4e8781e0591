#!/usr/bin/env bash
# Receiver throughput with durability: starts the release binary on a fresh data dir,
# drives it with wrk (128 connections by default) posting GitHub's push example, each
# request with its own delivery id, then stops the daemon and checks on disk that the
# number of stored deliveries equals the number of 2xx answers the server sent (its
# /metrics counter), and lies between the 2xx answers wrk read and that plus the requests
# wrk abandoned in flight when its clock ran out (at most one per connection per run).
#
#   bench/receiver.sh [DURATION_SECONDS] [CONNECTIONS]
#   env: FUTURNAL_BENCH_RATE=N offers N requests/s at a constant rate with wrk2 (latency
#        corrected for coordinated omission: a stall counts against every request that
#        should have been sent during it) instead of as fast as wrk can; FUTURNAL_WRK2=path
#        (default `wrk2` on the PATH; build: git clone https://github.com/giltene/wrk2 && make)
#        FUTURNAL_BENCH_CONFIG=extra TOML appended to the config (e.g. [queue] compression = "none")
#        FUTURNAL_BENCH_BIN=a futurnal binary to measure instead of building this checkout's
#        FUTURNAL_BENCH_ROLE=receiver runs the daemon without workers (default: all)
#        FUTURNAL_DATABASE_URL=postgres://… measures PostgreSQL (a fresh schema `futurnal_bench_<pid>`,
#        dropped afterwards) instead of the SQLite file
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
duration=${1:-20}
connections=${2:-128}
payload="$root/tests/fixtures/github-webhooks/payloads/push/payload.json"
command -v wrk >/dev/null || { echo "bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
rate=${FUTURNAL_BENCH_RATE:-}
wrk2=${FUTURNAL_WRK2:-wrk2}
if [ -n "$rate" ]; then
  command -v "$wrk2" >/dev/null || { echo "bench: FUTURNAL_BENCH_RATE needs wrk2 ($wrk2 not found; git clone https://github.com/giltene/wrk2 && make, then FUTURNAL_WRK2=path)" >&2; exit 1; }
fi
[ -f "$payload" ] || { echo "bench: $payload not found" >&2; exit 1; }

if [ -n "${FUTURNAL_BENCH_BIN:-}" ]; then
  bin=$FUTURNAL_BENCH_BIN
else
  (cd "$root" && cargo build --release --quiet)
  bin="$root/target/release/futurnal"
fi
data=$(mktemp -d /tmp/futurnal-bench.XXXXXX)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export FUTURNAL_WEBHOOK_SECRET="$secret"
cat > "$data/config.toml" <<TOML
[queue]
max_queued = 100000000
${FUTURNAL_BENCH_CONFIG:-}
TOML
if [[ "${FUTURNAL_DATABASE_URL:-}" == postgres* ]]; then
  schema="futurnal_bench_$$"
  printf '[postgres]\nschema = "%s"\npool_size = 32\n' "$schema" >>"$data/config.toml"
  trap 'kill "$pid" 2>/dev/null || true; psql "$FUTURNAL_DATABASE_URL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null; rm -rf "$data"' EXIT
fi
export FUTURNAL_CONFIG="$data/config.toml"

# The workers' git fetches go to an empty local repository, never to GitHub.
git init -q --bare "$data/remote.git"
"$bin" --data-dir "$data" sources github add Codertocat/Hello-World --no-sync --clone-url "file://$data/remote.git" >/dev/null
"$bin" --data-dir "$data" serve --no-poll --role "${FUTURNAL_BENCH_ROLE:-all}" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$data/banner" 2>"$data/log" &
pid=$!
for _ in $(seq 100); do [ -s "$data/banner" ] && break; sleep 0.05; done
webhook=$(sed -n 's/.*webhook=\([^ ]*\).*/\1/p' "$data/banner")
admin=$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$data/banner")

sig=$(python3 -c 'import hmac,hashlib,sys; print("sha256="+hmac.new(sys.argv[1].encode(), open(sys.argv[2],"rb").read(), hashlib.sha256).hexdigest())' "$secret" "$payload")
export FUT_BODY="$payload" FUT_SIG="$sig"

if [ -n "$rate" ]; then load="wrk2 -t2 -c$connections -d${duration}s -R$rate (constant rate)"; else load="wrk -t2 -c$connections -d${duration}s (as fast as it can)"; fi
echo "futurnal receiver benchmark: role ${FUTURNAL_BENCH_ROLE:-all}, $(nproc) cores, $load, body $(stat -c %s "$payload") bytes, synchronous=FULL"
FUT_RUN="warm-$$" wrk -t2 -c"$connections" -d3s --timeout 10s -s "$here/push.lua" "http://$webhook/webhook/github" >"$data/warm.txt"
if [ -n "$rate" ]; then
  FUT_RUN="run-$$" "$wrk2" -t2 -c"$connections" -d"${duration}s" -R"$rate" --timeout 10s --latency -s "$here/push.lua" "http://$webhook/webhook/github" >"$data/run.txt"
else
  FUT_RUN="run-$$" wrk -t2 -c"$connections" -d"${duration}s" --timeout 10s --latency -s "$here/push.lua" "http://$webhook/webhook/github" >"$data/run.txt"
fi
cat "$data/run.txt"

count2xx() { # requests minus non-2xx minus... wrk prints "N requests in", and "Non-2xx or 3xx responses: M"
  local total non
  total=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$1")
  non=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$1")
  echo $(( total - ${non:-0} ))
}
ok=$(( $(count2xx "$data/warm.txt") + $(count2xx "$data/run.txt") ))
errors=$(grep -h "Socket errors" "$data/warm.txt" "$data/run.txt" || true)
sleep 1
health=$(curl -s "http://$admin/health" || true)
depth() { curl -s "http://$admin/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["queue_depth"])'; }
d0=$(depth); sleep 5; d1=$(depth)
drain=$(( (d0 - d1) / 5 ))
sent_2xx=$(curl -s "http://$admin/metrics" | sed -n 's/^futurnal_webhook_requests_total{outcome="queued"} \([0-9]*\)$/\1/p')

kill -TERM "$pid"; wait "$pid" || true
if [ -n "${schema:-}" ]; then
  stored=$(psql "$FUTURNAL_DATABASE_URL" -Atc "SELECT count(*) FROM $schema.deliveries")
else
  stored=$(python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute("select count(*) from deliveries").fetchone()[0])' "$data/futurnal.db")
fi
rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$data/run.txt")
# wrk prints "99%", wrk2 "99.000%".
p50=$(awk '/Latency Distribution/{f=1} f&&($1=="50%"||$1=="50.000%"){print $2; exit}' "$data/run.txt")
p99=$(awk '/Latency Distribution/{f=1} f&&($1=="99%"||$1=="99.000%"){print $2; exit}' "$data/run.txt")
echo
echo "health at the end of the run: $health"
[ -n "$errors" ] && echo "wrk: $errors"
echo "workers, after the load: $drain deliveries/s processed (one repository, so strictly in order)"
echo "RESULT ${rate:+offered=$rate }requests_per_sec=$rps p50=$p50 p99=$p99 server_2xx=$sent_2xx wrk_read_2xx=$ok stored=$stored"
if [ "$sent_2xx" != "$stored" ]; then
  echo "MISMATCH: the server acknowledged $sent_2xx deliveries but $stored are stored" >&2
  exit 1
fi
if [ "$stored" -lt "$ok" ] || [ "$stored" -gt $(( ok + 2 * connections )) ]; then
  echo "MISMATCH: wrk read $ok 2xx answers; $stored stored is outside [$ok, $ok + 2 x $connections in flight]" >&2
  exit 1
fi
echo "OK: every acknowledged delivery is on disk ($stored stored = $sent_2xx acknowledged)"
