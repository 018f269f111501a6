#!/usr/bin/env bash
# Dependency audit (docs/SECURITY.md): cargo-deny, built once from crates.io
# into a cache outside the clone, checks every dependency's license, source
# and version requirements against deny.toml. Security advisories need the
# RustSec database, fetched from GitHub: checked when it can be fetched, and
# said plainly when it cannot (these CI machines reach only the registries).
set -euo pipefail
cd "$(dirname "$0")/.."
root="${GATEWATCH_SERVICES:-$HOME/.cache/gatewatch-services}/cargo-deny"
deny="$root/bin/cargo-deny"
if [ ! -x "$deny" ]; then
    cargo install cargo-deny --version 0.20.2 --locked --root "$root"
fi
"$deny" check bans licenses sources
if timeout 120 "$deny" fetch db >/dev/null 2>&1; then
    "$deny" check advisories
else
    echo "audit: the RustSec advisory database cannot be fetched from here; advisories NOT checked" >&2
fi
