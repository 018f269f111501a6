#!/usr/bin/env bash
# Installs Debian's wrk, the HTTP load generator the soak test (tests/soak.rs)
# and scripts/bench-api.sh drive the decision API with.
set -euo pipefail
command -v wrk >/dev/null 2>&1 || bash "$(dirname "$0")/apt.sh" wrk
command -v wrk
