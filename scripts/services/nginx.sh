#!/usr/bin/env bash
# Installs Debian's nginx for the auth_request end-to-end test (tests/nginx.rs).
# The test starts and stops its own nginx on a loopback port; nothing runs here.
set -euo pipefail
if command -v nginx >/dev/null 2>&1; then
    exit 0
fi
bash "$(dirname "$0")/apt.sh" nginx
# Debian's package may start a daemon on :80 where systemd exists; the tests do not need it.
if [ -f /run/nginx.pid ]; then
    kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi
command -v nginx
