#!/usr/bin/env bash
# CPU of `gatewatch run` following a file appended at a steady rate, against
# `replay` of the same file (docs/PERFORMANCE.md "live rounds").
#
#   scripts/bench-trickle.sh LOG_FILE RATE [PIPELINE] [PORT]
#
# LOG_FILE: any log the engine reads (e.g. `gatewatch simulate`'s
# access.jsonl). RATE: lines per second, appended every 10 ms. PIPELINE:
# extended by the run (default pipelines/default.toml). CPU is user + system
# time of the gatewatch process, from the first line to the last event counted
# in /metrics.
set -euo pipefail

log=$(realpath "$1")
rate=$2
root=$(cd "$(dirname "$0")/.." && pwd)
base=$(realpath "${3:-$root/pipelines/default.toml}")
port=${4:-18811}
bin=${GATEWATCH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/gatewatch}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/p.toml" <<P
extends = "$base"
[state]
dir = "$work/state"
[api]
listen = "127.0.0.1:$port"
P
lines=$(grep -c . "$log")
/usr/bin/time -f "%U %S" -o "$work/file.time" "$bin" --pipeline "$work/p.toml" replay --input "$log" --out "$work/file" >/dev/null 2>&1
key=$("$bin" --pipeline "$work/p.toml" keys create --role gateway --name bench 2>/dev/null)
: > "$work/in.log"
"$bin" --pipeline "$work/p.toml" run --input "$work/in.log" > "$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -sf -H "X-Api-Key: $key" "http://127.0.0.1:$port/metrics" >/dev/null && break
    sleep 0.2
done
cpu() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
s0=$(cpu)
python3 - "$log" "$work/in.log" "$rate" <<'PY'
import sys, time
src, dst, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
lines = open(src, 'rb').readlines()
per = max(1, int(rate / 100))
t0 = time.time()
with open(dst, 'ab', buffering=0) as f:
    for i in range(0, len(lines), per):
        f.write(b''.join(lines[i:i + per]))
        d = t0 + (i + per) / rate - time.time()
        if d > 0:
            time.sleep(d)
print(f"appended {len(lines)} lines in {time.time() - t0:.1f} s", file=sys.stderr)
PY
for _ in $(seq 600); do
    n=$(curl -s -H "X-Api-Key: $key" "http://127.0.0.1:$port/metrics" | awk '$1 == "gatewatch_events_total" { print $2 }')
    [ "${n:-0}" -ge "$lines" ] && break
    sleep 0.2
done
s1=$(cpu)
awk -v a="$s0" -v b="$s1" -v hz="$(getconf CLK_TCK)" -v n="$lines" -v f="$(awk '{ print $1 + $2 }' "$work/file.time")" \
    'BEGIN { c = (b - a) / hz; printf "replay %.2f CPU-s, %.0f events/CPU-s | run at a steady rate %.2f CPU-s, %.0f events/CPU-s\n", f, n / f, c, n / c }'
