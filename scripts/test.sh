#!/usr/bin/env bash
# The whole test suite: installs what the tests need (nginx, wrk, Caddy, HAProxy,
# the CrowdSec bouncers, schemathesis, libfaketime), then runs every test
# target, benches included (each bench runs once as a smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services/nginx.sh
bash scripts/services/wrk.sh
bash scripts/services/gateways.sh
bash scripts/services/crowdsec.sh
bash scripts/services/schemathesis.sh
bash scripts/services/faketime.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatewatch-target}"
cargo test --release --all-targets "$@"
