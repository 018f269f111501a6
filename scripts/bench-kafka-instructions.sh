#!/usr/bin/env bash
# Instructions one `run --role engine` instance executes to read a log from
# Kafka and decide on it, against a file replay of the same lines with the
# same pipeline (docs/PERFORMANCE.md, "Kafka against file replay, counted in
# instructions"). Both run under valgrind's cachegrind (no cache simulation),
# so the figures do not move with this VM's speed as CPU-seconds do; the
# cachegrind files are kept for `cg_annotate`.
#
#   scripts/bench-kafka-instructions.sh LOG_FILE BROKERS [PARTITIONS] [LINES_PER_MESSAGE] [OUT_DIR]
#
# Every sink of pipelines/kafka.toml is on, as in scripts/bench-kafka.sh.
# Under valgrind the engine runs ~40× slower, so its wall-clock batch age
# (`output.batch_max_age`) cuts more and smaller batches than at full speed:
# the live figure is an upper bound.
set -euo pipefail

log=$(realpath "$1")
brokers=$2
partitions=${3:-2}
per_message=${4:-10}
out=$(realpath -m "${5:-/tmp/gatewatch-instructions}")
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${GATEWATCH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/gatewatch}")
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
lines=$(grep -c . "$log")
topic=instr-$(date +%s%N)
port=18831

. "$root/scripts/bench/kafka-pipeline.sh"
kafka_pipeline "$work/p.toml" "$work/state" "$port" "$brokers" "$topic" "g-$topic"
"$bin" --pipeline "$work/p.toml" produce --input "$log" --topic "$topic" --partitions "$partitions" \
    --lines-per-message "$per_message" >&2
key=$("$bin" --pipeline "$work/p.toml" keys create --role gateway --name bench 2>/dev/null)
metric() {
    curl -s -H "X-Api-Key: $key" "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

cg() { valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$1" "${@:2}"; }
(cd "$work" && cg "$out/run.cg" "$bin" --pipeline "$work/p.toml" run --role engine >"$work/run.log" 2>&1) &
runner=$!
taken=0
for _ in $(seq 6000); do
    sleep 0.5
    e=$(metric gatewatch_events_total || true)
    l=$(metric 'gatewatch_input_anomalies_total{kind="late"}' || true)
    taken=$(( ${e:-0} + ${l:-0} ))
    [ "$taken" -ge "$lines" ] && break
done
# valgrind is the process that answers the signal; it writes its counts on exit.
pkill -INT -f -- "--pipeline $work/p.toml run" || true
wait "$runner" 2>/dev/null || true
(cd "$work" && cg "$out/replay.cg" "$bin" --pipeline "$work/p.toml" replay --input "$log" --out "$work/replay" \
    >/dev/null 2>&1)

total() { awk '/^summary:/ { print $2 }' "$1"; }
run_i=$(total "$out/run.cg")
replay_i=$(total "$out/replay.cg")
echo "lines: $lines ($taken taken in by the live instance), partitions: $partitions, lines per message: $per_message"
awk -v r="$run_i" -v f="$replay_i" -v n="$lines" 'BEGIN {
    printf "file replay: %.0f instructions/line\n", f / n
    printf "kafka run:   %.0f instructions/line (the replay does %.1f %% of its work)\n", r / n, 100 * f / r
}'
echo "per function: cg_annotate $out/run.cg; cg_annotate $out/replay.cg"
