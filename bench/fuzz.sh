#!/usr/bin/env bash
# Runs each cargo-fuzz target under fuzz/ for SECONDS (default 600), one after the other,
# on its corpus (fuzz/corpus/T, kept between runs, not committed) with the committed seeds
# (fuzz/seeds/T) as a read-only second corpus and fuzz/dicts/T.dict when there is one,
# and prints for each target its runs, execs/s, coverage (libFuzzer's final cov: and ft:)
# and whether it crashed. Exits 1 if a target crashed (its input is in fuzz/artifacts/T/,
# its log beside it).
#
#   bench/fuzz.sh [SECONDS]              every target
#   FUZZ_TARGETS="form router" bench/fuzz.sh 60
#
# Needs the nightly toolchain (cargo-fuzz is installed when missing). One libFuzzer
# process at a time (-jobs=1 -workers=1): the machine has two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-600}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: bench/fuzz.sh [SECONDS]" >&2
  exit 2
fi
read -r -a targets <<<"${FUZZ_TARGETS:-signature routing form normalize config router}"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "bench/fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

echo "== building the fuzz targets"
cargo +nightly fuzz build --fuzz-dir "$root/fuzz"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The router target keeps its SQLite data dir under TMPDIR; libFuzzer exits without
# removing it, so each run gets a TMPDIR of its own, removed after it.
unset FUTURNAL_WEBHOOK_SECRET FUTURNAL_WEBHOOK_PREVIOUS_SECRET FUTURNAL_SECRET_KEY FUTURNAL_CONFIG

# How many inputs libFuzzer saved as failing (slow-unit-* files are only slow).
failing_inputs() {
  find "$1" -maxdepth 1 \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l
}

failed=0
summary=()
for target in "${targets[@]}"; do
  corpus=$root/fuzz/corpus/$target
  seeds=$root/fuzz/seeds/$target
  artifacts=$root/fuzz/artifacts/$target
  run=$work/$target
  mkdir -p "$corpus" "$artifacts" "$run/tmp"
  [[ -d $seeds ]] || { echo "bench/fuzz.sh: no seeds at $seeds" >&2; exit 2; }
  before=$(failing_inputs "$artifacts")
  dict=()
  [[ -f $root/fuzz/dicts/$target.dict ]] && dict=(-dict="$root/fuzz/dicts/$target.dict")
  echo "== $target: ${seconds} s"
  status=0
  # -jobs=1 makes libFuzzer run the fuzzing in one child process whose output goes to
  # fuzz-0.log in the working directory.
  (cd "$run" && TMPDIR=$run/tmp cargo +nightly fuzz run --fuzz-dir "$root/fuzz" "$target" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -jobs=1 -workers=1 -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "${dict[@]}") >"$run/cargo-fuzz.log" 2>&1 || status=$?
  log=$artifacts/fuzz.log
  cat "$run"/fuzz-*.log "$run/cargo-fuzz.log" >"$log" 2>/dev/null || cp "$run/cargo-fuzz.log" "$log"
  rm -rf "$run"
  after=$(failing_inputs "$artifacts")

  stats=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$stats")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$stats")
  corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$stats")
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -1)
  execs=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -1)
  if [[ -z $runs ]]; then
    runs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$stats")
  fi
  if ((status != 0 || after > before)) || ! grep -q '^Done [0-9]* runs' "$log"; then
    verdict="CRASH (exit $status; see $log and fuzz/artifacts/$target/)"
    failed=1
    grep -E 'panicked at|^==[0-9]+==ERROR|^SUMMARY|Test unit written|ALARM|out-of-memory' "$log" | awk '!seen[$0]++' | head -8 || true
  else
    verdict="no crash"
  fi
  line=$(printf '%-10s runs=%s exec/s=%s cov=%s ft=%s corpus=%s: %s' \
    "$target" "${runs:-?}" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict")
  echo "$line"
  summary+=("$line")
done

echo "== fuzzing summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
