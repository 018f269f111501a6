#!/usr/bin/env bash
# Installs gatewatch as a systemd service (run as root from the source tree):
#   the binary, stripped, in /usr/local/bin; the shipped pipelines and models in
#   /usr/local/share/gatewatch; /etc/gatewatch/pipeline.toml (kept if present);
#   a `gatewatch` system user; the unit, enabled and started.
# Then create the gateway's key:
#   sudo -u gatewatch gatewatch --pipeline /etc/gatewatch/pipeline.toml keys create --role gateway --name edge
set -euo pipefail
cd "$(dirname "$0")/.."
# The `dist` profile: the release build linked whole-program (fat LTO, one
# codegen unit) and stripped; see docs/PERFORMANCE.md for its size.
bin="${GATEWATCH_BIN:-${CARGO_TARGET_DIR:-target}/dist/gatewatch}"
if [ ! -x "$bin" ]; then
    cargo build --profile dist --locked --bin gatewatch
fi
install -m 0755 -s "$bin" /usr/local/bin/gatewatch
install -d -m 0755 /usr/local/share/gatewatch
cp -r pipelines models README.md /usr/local/share/gatewatch/
install -d -m 0755 /etc/gatewatch
if [ ! -e /etc/gatewatch/pipeline.toml ]; then
    install -m 0644 deploy/pipeline.toml /etc/gatewatch/pipeline.toml
fi
getent passwd gatewatch >/dev/null || useradd --system --home-dir /var/lib/gatewatch --shell /usr/sbin/nologin gatewatch
install -m 0644 deploy/systemd/gatewatch.service /etc/systemd/system/gatewatch.service
systemd-analyze verify /etc/systemd/system/gatewatch.service
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now gatewatch
    systemctl --no-pager status gatewatch || true
else
    echo "systemd is not running here: installed, not started" >&2
fi
