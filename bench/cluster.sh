#!/usr/bin/env bash
# Several instances on one PostgreSQL database: makes a fresh schema in
# FUTURNAL_DATABASE_URL's database with 20 tracked repositories, then starts 1, then 2,
# then 3 `serve` processes on it (release build, --no-poll, one data dir and instance
# name each) and drives them with wrk, 128 connections in all: one wrk per instance with
# 128/n of them, posting GitHub's `issues` example for the 20 repositories in turn, each
# request with its own delivery id (bench/issues.lua). For each step it reports the
# acknowledged deliveries/s (summed over the instances), each wrk's p99 and the workers'
# pace meanwhile; then the drain rate of n instances' workers over the 20 repositories:
# a receiver alone queues a backlog (a few seconds of load), n instances with only their
# workers start on it, and the queue depth on /health is sampled for a few seconds (the
# backlog is emptied before the next step). Each step checks that the deliveries stored
# in the schema meanwhile equal the 2xx the servers sent (their /metrics counters, summed).
#
# Before the load it measures what idle instances cost the database (no leader yet:
# every instance runs its own loops): transactions/s committed in the database
# (pg_stat_database.xact_commit) with 3 idle instances, less the same with none. Other
# sessions on a shared server add to both.
#
# The schema is dropped at the end.
#
#   FUTURNAL_DATABASE_URL=postgres://… bench/cluster.sh [SECONDS_PER_STEP] [CONNECTIONS]
#   env: FUTURNAL_BENCH_BIN=a futurnal binary to measure instead of building this checkout's
#        FUTURNAL_BENCH_CONFIG=extra TOML appended to the config (after [postgres])
#        FUTURNAL_BENCH_IDLE_SECS=seconds of each idle measurement (default 10)
#        FUTURNAL_BENCH_DRAIN_SECS=seconds the drain rate is sampled for (default 5)
#        FUTURNAL_BENCH_FILL_SECS=seconds of load that make the backlog to drain (default 4)
#        FUTURNAL_BENCH_STEPS=the instance counts to run (default "1 2 3")
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
duration=${1:-10}
connections=${2:-128}
idle_secs=${FUTURNAL_BENCH_IDLE_SECS:-10}
drain_secs=${FUTURNAL_BENCH_DRAIN_SECS:-5}
fill_secs=${FUTURNAL_BENCH_FILL_SECS:-4}
steps=${FUTURNAL_BENCH_STEPS:-1 2 3}
repos=20
url=${FUTURNAL_DATABASE_URL:-}
if [[ "$url" != postgres* ]]; then
  echo "bench: FUTURNAL_DATABASE_URL=postgres://… is required: the instances share that database" \
    "(a fresh schema is made in it and dropped afterwards)" >&2
  exit 1
fi
for tool in wrk psql curl python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done
payload="$root/tests/fixtures/github-webhooks/payloads/issues/edited.payload.json"
[ -f "$payload" ] || { echo "bench: $payload not found" >&2; exit 1; }

if [ -n "${FUTURNAL_BENCH_BIN:-}" ]; then
  bin=$FUTURNAL_BENCH_BIN
else
  (cd "$root" && cargo build --release --quiet)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/futurnal"
fi
data=$(mktemp -d /tmp/futurnal-cluster-bench.XXXXXX)
schema="futurnal_cluster_bench_$$"
declare -A pids=() webhook=() admin=()
stop_all() {
  local k
  for k in "${!pids[@]}"; do kill -TERM "${pids[$k]}" 2>/dev/null || true; done
  for k in "${!pids[@]}"; do wait "${pids[$k]}" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap cleanup EXIT

secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export FUTURNAL_WEBHOOK_SECRET="$secret" FUTURNAL_DATABASE_URL="$url" FUTURNAL_CONFIG="$data/config.toml"
cat > "$data/config.toml" <<TOML
[queue]
max_queued = 100000000
[postgres]
schema = "$schema"
${FUTURNAL_BENCH_CONFIG:-}
TOML

# The repositories' git remote is an empty local repository, never GitHub (issues need none).
git init -q --bare "$data/remote.git"
for i in $(seq 0 $((repos - 1))); do
  "$bin" --data-dir "$data/inst-1" sources github add "bench/repo-$i" --no-sync --clone-url "file://$data/remote.git" >/dev/null
done
mkdir "$data/load"
python3 - "$secret" "$payload" "$data/load" "$repos" <<'PY'
import hashlib, hmac, json, sys
secret, payload, out, repos = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
value = json.load(open(payload))
for i in range(repos):
    value["repository"].update(id=81000 + i, full_name=f"bench/repo-{i}", name=f"repo-{i}")
    body = json.dumps(value).encode()
    open(f"{out}/body-{i}.json", "wb").write(body)
    open(f"{out}/sig-{i}", "w").write("sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest() + "\n")
PY

sql() { psql "$url" -Atc "$1"; }
stored() { sql "SELECT count(*) FROM $schema.deliveries"; }
done_count() { sql "SELECT count(*) FROM $schema.deliveries WHERE status = 'done'"; }
commits() { sql "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }
depth() { curl -s "http://${admin[$1]}/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["queue_depth"])'; }
queued() { curl -s "http://${admin[$1]}/metrics" | sed -n 's/^futurnal_webhook_requests_total{outcome="queued"} \([0-9]*\)$/\1/p'; }
now() { date +%s.%N; }
per_second() { python3 -c 'import sys; n, t = map(float, sys.argv[1:]); print(f"{n / t:.1f}" if t > 0 else "n/a")' "$1" "$2"; }

start() { # instance k (role $2, default all): its own data dir and name, the shared config
  local k=$1 role=${2:-all} dir="$data/inst-$1"
  mkdir -p "$dir"
  : >"$dir/banner"
  FUTURNAL_INSTANCE="bench-$k" "$bin" --data-dir "$dir" serve --no-poll --role "$role" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$dir/banner" 2>>"$dir/log" &
  pids[$k]=$!
  for _ in $(seq 200); do [ -s "$dir/banner" ] && break; sleep 0.05; done
  webhook[$k]=$(sed -n 's/.*webhook=\([^ ]*\).*/\1/p' "$dir/banner")
  admin[$k]=$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$dir/banner")
  [ -n "${webhook[$k]}" ] || { echo "bench: instance $k did not start: $(tail -3 "$dir/log")" >&2; exit 1; }
}

echo "futurnal cluster benchmark: $(nproc) cores, $repos repositories, wrk ${connections} connections in all, ${duration}s per step, schema $schema"

# Idle cost: the database's commits/s with nothing, then with 3 idle instances.
c0=$(commits); sleep "$idle_secs"; c1=$(commits)
baseline=$(per_second $((c1 - c0)) "$idle_secs")
for k in 1 2 3; do start "$k"; done
sleep 2 # past the start-up work (recovery, first claims)
c0=$(commits); sleep "$idle_secs"; c1=$(commits)
idle=$(per_second $((c1 - c0)) "$idle_secs")
stop_all
idle_cost=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.1f}")' "$idle" "$baseline")
echo "idle: $idle transactions/s with 3 idle instances, $baseline with none: $idle_cost/s for the 3 ($(per_second "$idle_cost" 3)/s each)"

status=0
results=()
elapsed_since() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.2f}")' "$1"; }
p99_of() { awk '/Latency Distribution/{f=1} f&&$1=="99%"{print $2; exit}' "$1"; }
ok_of() { # 2xx answers wrk read, and its seconds
  local total non
  total=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$1")
  non=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$1")
  echo "$((total - ${non:-0})) $(sed -n 's/^ *[0-9]* requests in \([0-9.]*\)s.*/\1/p' "$1")"
}
load() { # load k connections seconds file: wrk on instance k
  FUT_DIR="$data/load" FUT_REPOS=$repos FUT_RUN="$4-$$" \
    wrk -t"$5" -c"$2" -d"${3}s" --timeout 10s --latency -s "$here/issues.lua" "http://${webhook[$1]}/webhook/github" >"$data/$4.txt"
}
for n in $steps; do
  # 1. n instances receive and process: acknowledged/s and p99, the workers' pace meanwhile.
  before=$(stored)
  for k in $(seq 1 "$n"); do start "$k"; done
  done_before=$(done_count)
  load_started=$(now)
  wrks=()
  for k in $(seq 1 "$n"); do
    load "$k" $((connections / n)) "$duration" "run-$n-$k" $(( n == 1 ? 2 : 1 )) &
    wrks+=($!)
  done
  for w in "${wrks[@]}"; do wait "$w"; done
  processed=$(per_second $(( $(done_count) - done_before )) "$(elapsed_since "$load_started")")
  depths=""
  for k in $(seq 1 "$n"); do depths+=" $(depth "$k")"; done
  t0=$(now)
  while [ "$(depth 1)" -gt 0 ]; do sleep 0.25; done
  caught_up=$(elapsed_since "$t0")
  acked=0
  for k in $(seq 1 "$n"); do acked=$((acked + $(queued "$k"))); done
  stop_all
  rate=0 p99s="" ok=0
  for k in $(seq 1 "$n"); do
    read -r got secs < <(ok_of "$data/run-$n-$k.txt")
    ok=$((ok + got))
    rate=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) + float(sys.argv[2]) / float(sys.argv[3]):.0f}")' "$rate" "$got" "$secs")
    p99s+=" $(p99_of "$data/run-$n-$k.txt")"
    grep -h "Socket errors" "$data/run-$n-$k.txt" | sed "s/^/  wrk $k: /" || true
  done

  # 2. The drain: a backlog over the 20 repositories queued by a receiver alone, then n
  # instances' workers on it; the queue depth on /health for a few seconds.
  start 0 receiver
  load 0 "$connections" "$fill_secs" "fill-$n" 2
  acked=$((acked + $(queued 0)))
  stop_all
  for k in $(seq 1 "$n"); do start "$k" worker; done
  d0=$(depth 1); t0=$(now); d1=$d0
  while [ "$d1" -gt 0 ] && python3 -c 'import sys; sys.exit(float(sys.argv[1]) - float(sys.argv[2]) >= float(sys.argv[3]))' "$(now)" "$t0" "$drain_secs"; do
    sleep 0.25; d1=$(depth 1)
  done
  elapsed=$(elapsed_since "$t0")
  drain=$(per_second $((d0 - d1)) "$elapsed")
  while [ "$(depth 1)" -gt 0 ]; do sleep 0.5; done
  stop_all
  step_stored=$(( $(stored) - before ))

  echo "$n instance(s): ${rate} acknowledged/s, p99 per instance:${p99s}; processed ${processed}/s meanwhile," \
    "queue after the load:${depths}, empty ${caught_up}s later; drain by ${n} instance(s)' workers: ${drain}/s over" \
    "${repos} repositories (${d0} -> ${d1} in ${elapsed}s); stored ${step_stored}, servers' 2xx ${acked}, wrk read ${ok} + fill"
  results+=("RESULT instances=$n acknowledged_per_sec=$rate p99=$(echo $p99s | tr " " ",") processed_per_sec=$processed drain_per_sec=$drain stored=$step_stored server_2xx=$acked")
  if [ "$acked" != "$step_stored" ]; then
    echo "MISMATCH: the servers acknowledged $acked deliveries but $step_stored were stored" >&2
    status=1
  fi
done
echo
printf '%s\n' "RESULT idle_transactions_per_sec=$idle_cost baseline=$baseline" "${results[@]}"
[ "$status" = 0 ] && echo "OK: every acknowledged delivery is stored (each step)"
exit "$status"
