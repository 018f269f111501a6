#!/usr/bin/env bash
# Installs Debian's wrk, the HTTP load generator the soak test (tests/soak.rs)
# and scripts/bench-api.sh drive the decision API with.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "wrk is missing; install it (apt-get install -y wrk) or run this script as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq wrk >/dev/null
command -v wrk
