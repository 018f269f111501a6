#!/usr/bin/env bash
# Events per CPU-second from Kafka to decisions, one instance and two in one
# consumer group (reading as the lines are sent, and on a topic filled
# first), against a file replay of the same lines (docs/PERFORMANCE.md
# "Kafka to decisions").
#
#   scripts/bench-kafka.sh LOG_FILE BROKERS [PARTITIONS] [LINES_PER_MESSAGE]
#
# LOG_FILE: any log the engine reads, stamped in the past (e.g. a cut of
# `gatewatch simulate`'s access.jsonl). BROKERS: host:port of a broker
# (scripts/services/kafka.sh start DIR PORT runs the one the tests use).
# Every sink of pipelines/kafka.toml is on (Parquet, decisions JSONL, dead
# letters, the decisions and dead-letter topics). CPU is user + system time of
# the gatewatch processes only (the broker's is not counted).
set -euo pipefail

log=$(realpath "$1")
brokers=$2
partitions=${3:-4}
per_message=${4:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GATEWATCH_BIN:-$root/target/release/gatewatch}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
lines=$(grep -c . "$log")
stamp=$(date +%s%N)
topic=bench-$stamp

pipeline() { # NAME GROUP PORT
    cat > "$work/$1.toml" <<EOF
extends = "$root/pipelines/kafka.toml"
[state]
dir = "state-$1"
[api]
listen = "127.0.0.1:$3"
[input.kafka]
brokers = "$brokers"
topics = ["$topic"]
group = "$2"
[[sinks]]
type = "parquet"
[[sinks]]
type = "decisions_jsonl"
[[sinks]]
type = "dead_letters"
[[sinks]]
type = "kafka"
brokers = "$brokers"
decisions_topic = "$topic-decisions"
dead_letters_topic = "$topic-dead-letters"
EOF
    echo "$work/$1.toml"
}

cpu_of() { # PID: user + system seconds
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

metric() { # PORT KEY NAME
    curl -s -H "X-Api-Key: $2" "http://127.0.0.1:$1/metrics" | awk -v n="$3" '$1 == n { print $2 }'
}

one=$(pipeline one "g1-$stamp" 0)
"$bin" --pipeline "$one" produce --input "$log" --topic "$topic" --partitions "$partitions" \
    --lines-per-message "$per_message" >&2

# The same lines from the file, then from Kafka by one instance (replay: to the end).
/usr/bin/time -f "%U %S" -o "$work/file.time" "$bin" --pipeline "$one" replay --input "$log" --out "$work/file" >/dev/null 2>&1
/usr/bin/time -f "%U %S" -o "$work/one.time" "$bin" --pipeline "$one" replay --kafka --out "$work/one" >/dev/null 2>&1
file_cpu=$(awk '{ print $1 + $2 }' "$work/file.time")
one_cpu=$(awk '{ print $1 + $2 }' "$work/one.time")
one_events=$(grep -o '"events": [0-9]*' "$work/one/summary.json" | grep -o '[0-9]*$')

# Two instances of one group share the partitions: both start on an empty
# topic, and once each holds its share the lines are sent; they run until
# both together have read every line.
topic2=$topic-two
"$bin" --pipeline "$one" produce --input /dev/null --topic "$topic2" --partitions "$partitions" >&2
topic=$topic2
pids=()
keys=()
ports=(18801 18802)
for i in 0 1; do
    p=$(pipeline "two$i" "g2-$stamp" "${ports[$i]}")
    keys+=("$("$bin" --pipeline "$p" keys create --role gateway --name bench 2>/dev/null)")
    "$bin" --pipeline "$p" run --role engine >"$work/two$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 600); do
    sleep 0.5
    a=$(metric "${ports[0]}" "${keys[0]}" gatewatch_kafka_assigned_partitions || true)
    b=$(metric "${ports[1]}" "${keys[1]}" gatewatch_kafka_assigned_partitions || true)
    [ "${a:-0}" -gt 0 ] && [ "${b:-0}" -gt 0 ] && [ $(( a + b )) -eq "$partitions" ] && break
done
echo "partitions held: $a + $b" >&2
start0=$(cpu_of "${pids[0]}")
start1=$(cpu_of "${pids[1]}")
"$bin" --pipeline "$one" produce --input "$log" --topic "$topic2" --lines-per-message "$per_message" >&2
total=0
for _ in $(seq 2400); do
    sleep 0.5
    a=$(metric "${ports[0]}" "${keys[0]}" gatewatch_events_total || true)
    b=$(metric "${ports[1]}" "${keys[1]}" gatewatch_events_total || true)
    total=$(( ${a:-0} + ${b:-0} ))
    [ "$total" -ge "$lines" ] && break
done
cpu0=$(awk -v a="$(cpu_of "${pids[0]}")" -v b="$start0" 'BEGIN { printf "%.2f", a - b }')
cpu1=$(awk -v a="$(cpu_of "${pids[1]}")" -v b="$start1" 'BEGIN { printf "%.2f", a - b }')
kill "${pids[@]}"
wait "${pids[@]}" 2>/dev/null || true
live_a=$a live_b=$b

# Saturated: two instances of a new group start together on the first topic,
# already filled, and read it as fast as they can. CPU from process start
# (group join and start-up included) until both together have counted every
# line; a member that read a partition before a rebalance handed it over
# reads it again, and that shows as more events than lines.
topic=${topic%-two}
pids=()
keys=()
ports=(18803 18804)
for i in 0 1; do
    p=$(pipeline "full$i" "g3-$stamp" "${ports[$i]}")
    keys+=("$("$bin" --pipeline "$p" keys create --role gateway --name bench 2>/dev/null)")
done
for i in 0 1; do
    "$bin" --pipeline "$work/full$i.toml" run --role engine >"$work/full$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 2400); do
    sleep 0.2
    a=$(metric "${ports[0]}" "${keys[0]}" gatewatch_events_total || true)
    b=$(metric "${ports[1]}" "${keys[1]}" gatewatch_events_total || true)
    [ $(( ${a:-0} + ${b:-0} )) -ge "$lines" ] && break
done
full0=$(cpu_of "${pids[0]}")
full1=$(cpu_of "${pids[1]}")
wall=$(awk -v hz="$(getconf CLK_TCK)" -v up="$(cut -d' ' -f1 /proc/uptime)" \
    '{ printf "%.1f", up - $22 / hz }' "/proc/${pids[0]}/stat")
kill "${pids[@]}"
wait "${pids[@]}" 2>/dev/null || true

rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }'; }
echo "lines: $lines, partitions: $partitions, lines per message: $per_message"
echo "file replay:         $file_cpu CPU-s  $(rate "$lines" "$file_cpu") events/CPU-s"
echo "kafka, 1 instance:   $one_cpu CPU-s  $(rate "$one_events" "$one_cpu") events/CPU-s ($one_events events)"
echo "kafka, 2 instances:  $cpu0 + $cpu1 CPU-s  $(rate "$live_a" "$cpu0") + $(rate "$live_b" "$cpu1") events/CPU-s ($live_a + $live_b events, read as they were sent, from the send on; the engines' start-up not counted)"
echo "kafka, 2 saturated:  $full0 + $full1 CPU-s  $(rate "$a" "$full0") + $(rate "$b" "$full1") events/CPU-s ($a + $b events, topic filled first, from process start, ${wall} s wall)"
