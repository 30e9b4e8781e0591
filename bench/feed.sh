#!/usr/bin/env bash
# The change feed under load: the receiver takes GitHub's push example at full speed (wrk,
# as bench/receiver.sh does) while a second client sends RATE issue updates a second
# (each one a change in the local copy). Runs alternate without and with an SSE follower
# connected (bench/feed.py follow), and print:
#   - the receiver's throughput with and without the follower (wrk's requests/s),
#   - the feed's lag behind the effects: when each change arrived at the follower minus
#     its `at` (the time the transaction that made it took its number), p50 and p99.
#
#   bench/feed.sh [SECONDS] [RUNS]
#   env: FUTURNAL_FEED_RATE (issue updates a second, default 100), FUTURNAL_FEED_CONNECTIONS
#        (wrk, default 128), FUTURNAL_BENCH_BIN (a futurnal binary instead of building this
#        checkout's), FUTURNAL_DATABASE_URL=postgres://… (a fresh schema, dropped afterwards)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
duration=${1:-15}
runs=${2:-2}
rate=${FUTURNAL_FEED_RATE:-100}
connections=${FUTURNAL_FEED_CONNECTIONS:-128}
push="$root/tests/fixtures/github-webhooks/payloads/push/payload.json"
issue="$root/tests/fixtures/github-webhooks/payloads/issues/opened.payload.json"
command -v wrk >/dev/null || { echo "bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }

if [ -n "${FUTURNAL_BENCH_BIN:-}" ]; then
  bin=$FUTURNAL_BENCH_BIN
else
  (cd "$root" && cargo build --release --quiet)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/futurnal"
fi
data=$(mktemp -d /tmp/futurnal-feed.XXXXXX)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export FUTURNAL_WEBHOOK_SECRET="$secret"
printf '[queue]\nmax_queued = 100000000\n' >"$data/config.toml"
if [[ "${FUTURNAL_DATABASE_URL:-}" == postgres* ]]; then
  schema="futurnal_feed_$$"
  printf '[postgres]\nschema = "%s"\npool_size = 32\n' "$schema" >>"$data/config.toml"
  trap 'kill "$pid" 2>/dev/null || true; psql "$FUTURNAL_DATABASE_URL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null; rm -rf "$data"' EXIT
fi
export FUTURNAL_CONFIG="$data/config.toml"

# Both examples are of Codertocat/Hello-World; its git fetches go to an empty local repository.
git init -q --bare "$data/remote.git"
"$bin" --data-dir "$data" sources github add Codertocat/Hello-World --no-sync --clone-url "file://$data/remote.git" >/dev/null
"$bin" --data-dir "$data" serve --no-poll --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$data/banner" 2>"$data/log" &
pid=$!
for _ in $(seq 100); do [ -s "$data/banner" ] && break; sleep 0.05; done
webhook=$(sed -n 's/.*webhook=\([^ ]*\).*/\1/p' "$data/banner")
admin=$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$data/banner")
sig=$(python3 -c 'import hmac,hashlib,sys; print("sha256="+hmac.new(sys.argv[1].encode(), open(sys.argv[2],"rb").read(), hashlib.sha256).hexdigest())' "$secret" "$push")
export FUT_BODY="$push" FUT_SIG="$sig"
newest() { curl -s "http://$admin/api/changes?since=0&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["newest"])'; }

echo "futurnal feed benchmark: $(nproc) cores, wrk -c$connections ${duration}s of push deliveries + $rate issue updates/s, $runs run(s) each way"
FUT_RUN="warm-$$" wrk -t2 -c"$connections" -d3s --timeout 10s -s "$here/push.lua" "http://$webhook/webhook/github" >/dev/null
results=()
for run in $(seq "$runs"); do
  for follower in no yes; do
    since=$(newest)
    fpid=
    rm -f "$data/expect"
    if [ "$follower" = yes ]; then
      # Until every acknowledged issue update has arrived as a change (or 120 s more).
      python3 "$here/feed.py" follow "$admin" "$since" "$((duration + 120))" "$data/lags-$run.txt" "$data/expect" >"$data/follow-$run.txt" &
      fpid=$!
    fi
    python3 "$here/feed.py" send "http://$webhook/webhook/github" "$secret" "$issue" "$rate" "$duration" "$(( (run * 2 + ${#results[@]}) * 1000000 ))" "$data/expect" >"$data/send.txt" &
    spid=$!
    FUT_RUN="run-$run-$follower-$$" wrk -t2 -c"$connections" -d"${duration}s" --timeout 10s -s "$here/push.lua" "http://$webhook/webhook/github" >"$data/wrk.txt"
    wait "$spid"
    [ -n "$fpid" ] && wait "$fpid"
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$data/wrk.txt")
    line="run=$run follower=$follower receiver_requests_per_sec=$rps issues_$(cat "$data/send.txt" | tr ' ' ' ')"
    [ "$follower" = yes ] && line="$line $(cat "$data/follow-$run.txt")"
    echo "$line"
    results+=("$line")
  done
done
kill -TERM "$pid"; wait "$pid" || true
python3 - "${results[@]}" <<'PY'
import statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in sys.argv[1:]]
for way in ("no", "yes"):
    rps = [float(r["receiver_requests_per_sec"]) for r in rows if r["follower"] == way]
    print(f"median receiver throughput, follower={way}: {statistics.median(rps):.0f} requests/s ({', '.join(f'{x:.0f}' for x in rps)})")
lags = [r for r in rows if r["follower"] == "yes" and "lag_p50_ms" in r]
if lags:
    print("feed lag per run (p50 / p99 / max ms): " + "; ".join(f"{r['lag_p50_ms']} / {r['lag_p99_ms']} / {r['lag_max_ms']} ({r['changes']} changes)" for r in lags))
PY
