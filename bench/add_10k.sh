#!/usr/bin/env bash
# Initial `add` of a repository with 10,000 commits from a local remote, against
# `git clone --mirror` followed by `git log --name-status` of the same history, in the
# same run. Each side runs 3 times; medians are compared (target: add <= 1.5x git).
#   bench/add_10k.sh [COMMITS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
commits=${1:-10000}
(cd "$root" && cargo build --release --quiet)
bin="$root/target/release/futurnal"
tmp=$(mktemp -d /tmp/futurnal-add.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# A history of $commits commits touching 200 files in 20 directories, made with fast-import.
git init -q --bare "$tmp/remote.git"
git -C "$tmp/remote.git" symbolic-ref HEAD refs/heads/main
python3 - "$commits" > "$tmp/history.fi" <<'PY'
import sys
n = int(sys.argv[1])
out = sys.stdout
for i in range(n):
    msg = f"commit {i}: change file {i % 200}\n"
    out.write(f"commit refs/heads/main\ncommitter Bench <b@example.com> {1_600_000_000 + i * 60} +0000\n")
    out.write(f"data {len(msg)}\n{msg}")
    for j in range(1 + i % 3):
        path = f"dir{(i + j) % 20}/file{(i * 7 + j) % 200}.txt"
        content = f"{i} {j}\n" * (1 + (i + j) % 5)
        out.write(f"M 644 inline {path}\ndata {len(content)}\n{content}")
    out.write("\n")
PY
git -C "$tmp/remote.git" fast-import --quiet < "$tmp/history.fi"
git -C "$tmp/remote.git" gc -q

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
git_times=(); file_times=(); add_times=()
for run in 1 2 3; do
  rm -rf "$tmp/mirror.git" "$tmp/mirror2.git" "$tmp/data"
  t0=$(now)
  git clone -q --mirror "$tmp/remote.git" "$tmp/mirror.git"   # a local path: git hard-links the packs
  git -C "$tmp/mirror.git" log --name-status main > /dev/null
  t1=$(now)
  git clone -q --mirror "file://$tmp/remote.git" "$tmp/mirror2.git"   # file://: the pack protocol, as over a network
  git -C "$tmp/mirror2.git" log --name-status main > /dev/null
  t2=$(now)
  "$bin" --data-dir "$tmp/data" sources github add octo/bench --clone-url "$tmp/remote.git" 2>/dev/null >/dev/null
  t3=$(now)
  git_times+=("$(echo "$t1 - $t0" | bc)"); file_times+=("$(echo "$t2 - $t1" | bc)"); add_times+=("$(echo "$t3 - $t2" | bc)")
done
stored=$("$bin" --data-dir "$tmp/data" --json sources github commits octo/bench --limit 100000 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
g=$(printf '%s\n' "${git_times[@]}" | median); f=$(printf '%s\n' "${file_times[@]}" | median); a=$(printf '%s\n' "${add_times[@]}" | median)
echo "history: $commits commits; stored by futurnal: $stored"
echo "git clone --mirror PATH + git log --name-status:    runs ${git_times[*]} s, median $g s"
echo "git clone --mirror file:// + git log --name-status: runs ${file_times[*]} s, median $f s"
echo "futurnal sources github add (PATH):                 runs ${add_times[*]} s, median $a s"
echo "RESULT ratio_vs_path=$(echo "scale=2; $a / $g" | bc) ratio_vs_file_url=$(echo "scale=2; $a / $f" | bc)"
[ "$stored" -eq "$commits" ] || { echo "MISMATCH: $stored commits stored, $commits in the history" >&2; exit 1; }
