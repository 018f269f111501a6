#!/usr/bin/env bash
# Times every shipped investigation in both engines and checks they agree.
#
#   scripts/bench-investigations.sh DATA_DIR CLICKHOUSE_URL DATABASE IP ENTITY_TYPE ENTITY
#
# DATA_DIR: a replay's output (or a state directory); CLICKHOUSE_URL and
# DATABASE: where the same run's clickhouse sink wrote; IP: the address for
# address-timeline; ENTITY_TYPE, ENTITY: a decided entity for after-expiry.
# Prints, per query and engine, the wall-clock seconds of three runs (after
# one that warms the caches) and the rows answered. GATEWATCH names the binary.
set -euo pipefail
[ $# -eq 6 ] || { sed -n '4,10p' "$0"; exit 2; }
data=$1 url=$2 db=$3 ip=$4 etype=$5 entity=$6
gw=${GATEWATCH:-gatewatch}
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for q in blocked-by-collateral address-timeline keys-from-hosting-networks users-two-countries rules-fired-today after-expiry; do
    params=()
    case $q in
        address-timeline) params=(--param "ip=$ip") ;;
        after-expiry) params=(--param "entity_type=$etype" --param "entity=$entity") ;;
    esac
    for engine in parquet clickhouse; do
        if [ $engine = parquet ]; then src=(--data "$data"); else src=(--clickhouse "$url" --database "$db"); fi
        run() { "$gw" query "${src[@]}" --file "$here/queries/$q.sql" "${params[@]}" --format csv > "$out/$q.$engine.csv" 2>/dev/null; }
        run
        times=()
        for _ in 1 2 3; do
            s=$(date +%s%N); run; e=$(date +%s%N)
            times+=("$(awk -v n=$((e - s)) 'BEGIN { printf "%.3f", n / 1e9 }')")
        done
        printf '%-28s %-10s %s s  rows=%d\n' "$q" "$engine" "${times[*]}" $(($(wc -l < "$out/$q.$engine.csv") - 1))
    done
    # The engines print times differently (…T12:00:00.000Z against 12:00:00 for a DateTime).
    if sed -E 's/T([0-9:]{8})(\.[0-9]{3})?Z/ \1/g' "$out/$q.parquet.csv" | cmp -s - "$out/$q.clickhouse.csv"; then
        echo "$q: the same answer"
    else
        echo "$q: ANSWERS DIFFER" >&2
        exit 1
    fi
done
