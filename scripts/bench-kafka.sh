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
bin=${GATEWATCH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/gatewatch}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
lines=$(grep -c . "$log")
stamp=$(date +%s%N)
topic=bench-$stamp

. "$root/scripts/bench/kafka-pipeline.sh"
pipeline() { # NAME GROUP PORT
    kafka_pipeline "$work/$1.toml" "state-$1" "$3" "$brokers" "$topic" "$2"
    echo "$work/$1.toml"
}

cpu_of() { # PID: user + system seconds
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

sys_of() { # PID: system seconds (the kernel's share: page faults, wake-ups)
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", $15 / hz }' "/proc/$1/stat"
}

metric() { # PORT KEY NAME
    curl -s -H "X-Api-Key: $2" "http://127.0.0.1:$1/metrics" | awk -v n="$3" '$1 == n { print $2 }'
}

# Lines an instance has taken in: events applied, and events past the
# lateness bound (counted, not applied). Sent faster than real time, a
# partition read a second behind the other is minutes behind in event time.
taken() { # PORT KEY
    local e l
    e=$(metric "$1" "$2" gatewatch_events_total || true)
    l=$(metric "$1" "$2" 'gatewatch_input_anomalies_total{kind="late"}' || true)
    echo $(( ${e:-0} + ${l:-0} ))
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
    a=$(taken "${ports[0]}" "${keys[0]}")
    b=$(taken "${ports[1]}" "${keys[1]}")
    total=$(( a + b ))
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
# Each instance's CPU is also sampled when its own count last grew: the one
# with the smaller share idles (polling) while the other finishes.
done0=0 done1=0 prev0=-1 prev1=-1 still=0
for _ in $(seq 2400); do
    sleep 0.2
    a=$(taken "${ports[0]}" "${keys[0]}")
    b=$(taken "${ports[1]}" "${keys[1]}")
    still=$(( still + 1 ))
    [ "$a" != "$prev0" ] && done0=$(cpu_of "${pids[0]}") prev0=$a still=0
    [ "$b" != "$prev1" ] && done1=$(cpu_of "${pids[1]}") prev1=$b still=0
    [ $(( a + b )) -ge "$lines" ] && break
    # 80 s without a line taken in, short of the total: an engine has
    # stopped reading. What each holds, for whoever looks into it (an engine
    # logs its partitions' state after a minute of messages queued and none
    # handed out).
    if [ "$still" -ge 400 ]; then
        echo "saturated instances stopped at $a + $b of $lines lines:" >&2
        for i in 0 1; do
            curl -s -H "X-Api-Key: ${keys[$i]}" "http://127.0.0.1:${ports[$i]}/metrics" |
                grep -E '^gatewatch_(events|events_rebuilt|dead_letters|input_anomalies|kafka)_' | sed "s/^/  instance $i: /" >&2
            echo "  instance $i: $(cpu_of "${pids[$i]}") CPU-s" >&2
            grep -E 'nothing handed out|WARN|ERROR' "$work/full$i.log" | tail -5 | sed "s/^/  instance $i log: /" >&2
        done
        if [ "$a" = 0 ] && [ "$b" = 0 ]; then
            # Neither was ever given a partition: the group did not form. On
            # the test broker this is tansu grown slow (a SQLite file near
            # 1 GB after a bench or two answers no metadata within 10 s).
            echo "neither instance read a line: the group never formed; rerun on a fresh broker" >&2
        fi
        exit 1
    fi
done
full0=$(cpu_of "${pids[0]}")
full1=$(cpu_of "${pids[1]}")
sys0=$(sys_of "${pids[0]}")
sys1=$(sys_of "${pids[1]}")
# Lines read again to rebuild windows (a partition that moved at the
# group's first rebalance): work, but not events.
rebuilt0=$(metric "${ports[0]}" "${keys[0]}" gatewatch_events_rebuilt_total || true)
rebuilt1=$(metric "${ports[1]}" "${keys[1]}" gatewatch_events_rebuilt_total || true)
wall=$(awk -v hz="$(getconf CLK_TCK)" -v up="$(cut -d' ' -f1 /proc/uptime)" \
    '{ printf "%.1f", up - $22 / hz }' "/proc/${pids[0]}/stat")
kill "${pids[@]}"
wait "${pids[@]}" 2>/dev/null || true

# Each saturated instance against a file replay of the lines it read: its
# partitions' lines, in the log's order (librdkafka's default partitioner is
# CRC-32 of the key, the client's /24 or IPv6 /48: crate::kafka::key_and_time; the
# instance's partitions are the ones whose lines add up to its event count).
# Like with like: this says what reading from Kafka and sharing the work
# cost, apart from what a smaller input costs per event. JSON logs only.
python3 - "$log" "$partitions" "$work" "$a" "$b" <<'PY'
import ipaddress, itertools, json, sys, zlib
log, parts, work, counts = sys.argv[1], int(sys.argv[2]), sys.argv[3], [int(sys.argv[4]), int(sys.argv[5])]
def part(line):
    try:
        ip = ipaddress.ip_address(json.loads(line)["client_ip"])
    except (ValueError, KeyError, TypeError):
        return None
    if ip.version == 4:
        o = str(ip).split(".")
        key = f"{o[0]}.{o[1]}.{o[2]}.0/24"
    else:
        key = f"{ipaddress.ip_network(f'{ip}/48', strict=False).network_address}/48"
    return zlib.crc32(key.encode()) % parts
lines = open(log).readlines()
where = [part(l) for l in lines]
sizes = [where.count(p) for p in range(parts)]
for i, n in enumerate(counts):
    share = next((set(c) for k in range(1, parts + 1) for c in itertools.combinations(range(parts), k)
                  if sum(sizes[p] for p in c) == n), None)
    with open(f"{work}/share{i}.jsonl", "w") as f:
        f.writelines(l for l, p in zip(lines, where) if share is not None and p in share)
PY
share_cpu=()
share_sys=()
for i in 0 1; do
    /usr/bin/time -f "%U %S" -o "$work/share$i.time" "$bin" --pipeline "$one" replay --input "$work/share$i.jsonl" \
        --out "$work/share$i" >/dev/null 2>&1
    share_cpu+=("$(awk '{ print $1 + $2 }' "$work/share$i.time")")
    share_sys+=("$(awk '{ print $2 }' "$work/share$i.time")")
done

rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }'; }
echo "lines: $lines, partitions: $partitions, lines per message: $per_message"
echo "file replay:         $file_cpu CPU-s  $(rate "$lines" "$file_cpu") events/CPU-s"
echo "kafka, 1 instance:   $one_cpu CPU-s  $(rate "$one_events" "$one_cpu") events/CPU-s ($one_events events)"
echo "kafka, 2 instances:  $cpu0 + $cpu1 CPU-s  $(rate "$live_a" "$cpu0") + $(rate "$live_b" "$cpu1") events/CPU-s ($live_a + $live_b lines taken in, late ones included, read as they were sent, from the send on; the engines' start-up not counted)"
echo "kafka, 2 saturated:  $full0 + $full1 CPU-s  $(rate "$a" "$full0") + $(rate "$b" "$full1") events/CPU-s ($a + $b lines taken in, topic filled first, from process start, ${wall} s wall; system $sys0 + $sys1)"
echo "  each until its own last line: $done0 + $done1 CPU-s  $(rate "$a" "$done0") + $(rate "$b" "$done1") events/CPU-s; lines read again to rebuild windows: ${rebuilt0:-0} + ${rebuilt1:-0}"
echo "file, each one's share: ${share_cpu[0]} + ${share_cpu[1]} CPU-s  $(rate "$a" "${share_cpu[0]}") + $(rate "$b" "${share_cpu[1]}") events/CPU-s (the lines each saturated instance read, replayed from a file; system ${share_sys[0]} + ${share_sys[1]})"
