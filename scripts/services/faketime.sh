#!/usr/bin/env bash
# Installs Debian's libfaketime, which the wall-clock drill (tests/drills.rs)
# preloads into one gatewatch process to set its clock back and forward
# without touching the host's.
set -euo pipefail
if ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "missing: libfaketime; install it (apt-get install -y libfaketime) or run this script as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq libfaketime >/dev/null
