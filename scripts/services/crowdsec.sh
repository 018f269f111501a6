#!/usr/bin/env bash
# Unpacks Debian's CrowdSec bouncers for tests/crowdsec.rs into a cache outside
# the clone (GATEWATCH_CROWDSEC_DIR, default ~/.cache/gatewatch-services/crowdsec),
# and installs nftables (`nft`, to read what the firewall bouncer programmed).
#
# The packages are unpacked rather than installed: installing them pulls in
# `crowdsec`, whose post-install script fails without systemd and leaves dpkg
# half-configured; the bouncers are static binaries that need nothing else.
set -euo pipefail
dir="${GATEWATCH_CROWDSEC_DIR:-$HOME/.cache/gatewatch-services/crowdsec}"
need_nft=0
command -v nft >/dev/null 2>&1 || need_nft=1
if [ -x "$dir/usr/bin/crowdsec-custom-bouncer" ] && [ -x "$dir/usr/bin/crowdsec-firewall-bouncer" ] && [ $need_nft = 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "the CrowdSec bouncer tests need root (apt, network namespaces): run this script as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ $need_nft = 1 ]; then
    apt-get install -y -qq nftables >/dev/null
fi
debs="$(mktemp -d)"
trap 'rm -rf "$debs"' EXIT
(cd "$debs" && apt-get download -qq crowdsec-custom-bouncer crowdsec-firewall-bouncer)
mkdir -p "$dir"
for deb in "$debs"/*.deb; do
    dpkg-deb -x "$deb" "$dir"
done
"$dir/usr/bin/crowdsec-custom-bouncer" -version >/dev/null 2>&1 || true
ls "$dir/usr/bin"
