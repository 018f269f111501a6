#!/usr/bin/env bash
# Load test of the decision API with a real HTTP load generator (wrk):
# 100,000 decisions in force, the engine ingesting simulated traffic from the
# followed file, then /v1/authz and /v1/decision in turn. Prints wrk's report
# (requests/s, latency percentiles) and how many events the engine took in
# meanwhile. Numbers for this machine are in docs/PERFORMANCE.md.
#
#   bash scripts/bench-api.sh [DURATION=20s] [CONNECTIONS=32] [FEED_LINES_PER_S=5000]
#   GATEWATCH_BIN=/path/to/other/gatewatch bash scripts/bench-api.sh …
#
# wrk and gatewatch share the machine: on 2 cores wrk gets one thread.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-20s}"
CONNECTIONS="${2:-32}"
FEED="${3:-5000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatewatch-target}"
if ! command -v wrk >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
# GATEWATCH_BIN=path runs another build (an A/B against a previous binary).
if [ -z "${GATEWATCH_BIN:-}" ]; then
    cargo build --release -q
fi
BIN="${GATEWATCH_BIN:-$CARGO_TARGET_DIR/release/gatewatch}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/bench.toml" <<TOML
extends = "$(pwd)/pipelines/default.toml"
[state]
dir = "state"
[api]
workers = ${WORKERS:-0}
TOML
GW_KEY="$("$BIN" --pipeline "$WORK/bench.toml" keys create --role gateway --name bench-gateway)"
ADMIN_KEY="$("$BIN" --pipeline "$WORK/bench.toml" keys create --role admin --name bench-admin)"
echo "== simulating traffic to feed the engine"
"$BIN" simulate --seed 77 --hours 1 --formats json --out "$WORK/sim" >/dev/null
: > "$WORK/access.log"
"$BIN" --pipeline "$WORK/bench.toml" run --listen 127.0.0.1:0 --input "$WORK/access.log" 2> "$WORK/run.err" &
PIDS+=($!)
for _ in $(seq 1 100); do
    ADDR="$(grep -o 'serving decisions on http://[0-9.:]*' "$WORK/run.err" | sed 's|.*http://||' || true)"
    [ -n "$ADDR" ] && break
    sleep 0.1
done
[ -n "$ADDR" ] || { cat "$WORK/run.err"; exit 1; }
echo "== gatewatch on $ADDR; loading 100,000 decisions"
python3 - "$WORK/blocklist.json" <<'PY'
import json, sys
actions = ["deny", "deny", "challenge", "throttle"]
items = [{"entity_type": "ip", "entity": f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", "action": actions[i % 4],
          "ttl": "6h", "reason": "load test"} for i in range(100_000)]
json.dump(items, open(sys.argv[1], "w"))
PY
curl -sf -X POST -H "X-Api-Key: $ADMIN_KEY" -H 'Content-Type: application/json' \
    --data-binary @"$WORK/blocklist.json" "http://$ADDR/v1/admin/decisions"
echo

# The engine ingests while the API is under load: one long-lived writer appends
# the simulated log at FEED lines/s in 10 ms steps (forking a process per chunk
# would itself disturb the latency being measured).
if [ "$FEED" -gt 0 ]; then
    python3 - "$WORK/sim/access.jsonl" "$WORK/access.log" "$FEED" <<'PY' &
import sys, time
lines = open(sys.argv[1], "rb").readlines()
per_step = max(1, int(sys.argv[3]) // 100)
with open(sys.argv[2], "ab", buffering=0) as out:
    i, next_t = 0, time.monotonic()
    while True:
        chunk = lines[i:i + per_step] or lines[:per_step]
        i = (i + per_step) % len(lines)
        out.write(b"".join(chunk))
        next_t += 0.01
        time.sleep(max(0.0, next_t - time.monotonic()))
PY
    PIDS+=($!)
fi
sleep 2

events() { curl -sf -H "X-Api-Key: $GW_KEY" "http://$ADDR/metrics" | awk '/^gatewatch_events_total/ {print $2}'; }
for MODE in authz decision; do
    before="$(events)"
    echo "== wrk: /v1/$MODE, $CONNECTIONS connections, $DURATION"
    MODE="$MODE" KEY="$GW_KEY" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s scripts/bench/rotate.lua "http://$ADDR"
    after="$(events)"
    echo "engine ingested $((after - before)) events during this run"
done
curl -sf -H "X-Api-Key: $GW_KEY" "http://$ADDR/metrics" | grep -E '^gatewatch_(active_decisions|decision_stream_cursor|dead_letters_total) '
