#!/usr/bin/env bash
# Installs Debian's libfaketime, which the wall-clock drill (tests/drills.rs)
# preloads into one gatewatch process to set its clock back and forward
# without touching the host's.
set -euo pipefail
if ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
    exit 0
fi
bash "$(dirname "$0")/apt.sh" libfaketime
