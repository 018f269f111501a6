#!/usr/bin/env bash
# Installs the gateways the forward-auth tests run (tests/gateways.rs): Debian's
# Caddy and HAProxy. Each test starts and stops its own on loopback ports;
# nothing runs here.
set -euo pipefail
missing=()
command -v caddy >/dev/null 2>&1 || missing+=(caddy)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
bash "$(dirname "$0")/apt.sh" "${missing[@]}"
# Where systemd exists the packages start daemons on :80 and :2019; the tests need none.
systemctl stop caddy haproxy >/dev/null 2>&1 || true
