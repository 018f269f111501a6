#!/usr/bin/env bash
# Installs Debian packages for the test services. The scripts beside it check
# first whether what they need is there and call this only for what is
# missing: apt.sh PKG...
set -euo pipefail
if [ $# -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "missing: $*; install (apt-get install -y $*) or run this script as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "$@" >/dev/null
