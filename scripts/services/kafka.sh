#!/usr/bin/env bash
# A Kafka-protocol broker for the Kafka source and sinks' tests (tests/kafka.rs):
# tansu (Apache-2.0, crates.io) with its SQLite storage. Apache Kafka itself
# cannot be installed on these machines; tansu speaks the protocol, consumer
# groups and committed offsets included (not transactions, which gatewatch
# does not use).
#
#   kafka.sh                 builds tansu once (~20 min on 2 cores) into
#                            $GATEWATCH_SERVICES (default ~/.cache/gatewatch-services),
#                            outside the clone so later runs reuse it; also installs
#                            cmake and libcurl's headers for the broker's build (its
#                            aws-lc-sys builds with cmake; gatewatch's own librdkafka
#                            builds with its configure script and make, no cmake)
#   kafka.sh start DIR PORT  starts a broker on 127.0.0.1:PORT, its database, log and
#                            pid in DIR, and waits until it accepts connections
#   kafka.sh stop DIR        stops that broker
#
# scripts/test.sh starts one for the suite and exports GATEWATCH_KAFKA_BROKERS.
set -euo pipefail
root="${GATEWATCH_SERVICES:-$HOME/.cache/gatewatch-services}/tansu"
bin="$root/bin/tansu"
case "${1:-install}" in
install)
    missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || missing+=(libcurl4-openssl-dev)
    bash "$(dirname "$0")/apt.sh" "${missing[@]}"
    if [ -x "$bin" ]; then
        exit 0
    fi
    # Built in cargo's own temporary directory, not the project's target
    # directory: sharing it would make this build wait for the project's
    # (cargo's lock) and leave the broker's artefacts among the project's.
    env -u CARGO_TARGET_DIR cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root "$root"
    ;;
start)
    dir=$(realpath -m "$2") port=$3
    mkdir -p "$dir"
    # tansu reads a .env from its working directory, and opens the database
    # relative to it: start it from its own directory.
    (cd "$dir" && exec "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "sqlite://tansu.db" >"$dir/broker.log" 2>&1) &
    echo $! >"$dir/pid"
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            exit 0
        fi
        sleep 0.1
    done
    echo "kafka.sh: the broker did not start on port $port; its log:" >&2
    cat "$dir/broker.log" >&2
    exit 1
    ;;
stop)
    dir=$(realpath -m "$2")
    if [ -f "$dir/pid" ]; then
        kill "$(cat "$dir/pid")" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$dir/pid"
    fi
    ;;
*)
    echo "usage: kafka.sh [install | start DIR PORT | stop DIR]" >&2
    exit 2
    ;;
esac
