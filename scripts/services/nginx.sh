#!/usr/bin/env bash
# Installs Debian's nginx for the auth_request end-to-end test (tests/nginx.rs).
# The test starts and stops its own nginx on a loopback port; nothing runs here.
set -euo pipefail
if command -v nginx >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "nginx is missing; install it (apt-get install -y nginx) or run this script as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nginx >/dev/null
# Debian's package may start a daemon on :80 where systemd exists; the tests do not need it.
if [ -f /run/nginx.pid ]; then
    kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi
command -v nginx
