#!/usr/bin/env bash
# The whole test suite: installs what the tests need (nginx, wrk, Caddy, HAProxy,
# the CrowdSec bouncers, schemathesis, libfaketime, ClickHouse, a Kafka-protocol
# broker, Chromium and Playwright), starts a ClickHouse server (GATEWATCH_CLICKHOUSE_URL) and a broker
# (GATEWATCH_KAFKA_BROKERS) for the suite, then runs every test target, benches
# included (each bench runs once as a smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services/nginx.sh
bash scripts/services/wrk.sh
bash scripts/services/gateways.sh
bash scripts/services/crowdsec.sh
bash scripts/services/schemathesis.sh
bash scripts/services/faketime.sh
bash scripts/services/clickhouse.sh
bash scripts/services/kafka.sh
bash scripts/services/browser.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A ClickHouse server and a broker for the suite, stopped however the tests end.
ch_dir=$(mktemp -d) kafka_dir=$(mktemp -d)
ch_port=$(free_port) kafka_port=$(free_port)
trap 'bash scripts/services/clickhouse.sh stop "$ch_dir"; bash scripts/services/kafka.sh stop "$kafka_dir"; rm -rf "$ch_dir" "$kafka_dir"' EXIT
bash scripts/services/clickhouse.sh start "$ch_dir" "$ch_port"
bash scripts/services/kafka.sh start "$kafka_dir" "$kafka_port"
export GATEWATCH_CLICKHOUSE_URL="http://127.0.0.1:$ch_port"
export GATEWATCH_KAFKA_BROKERS="127.0.0.1:$kafka_port"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatewatch-target}"
cargo test --release --all-targets "$@"
