#!/usr/bin/env bash
# What tests/console_browser.rs needs: Debian's chromium, and playwright-core
# (from the npm registry, at the version tests/browser/package-lock.json
# pins; it drives that chromium, no browser is downloaded) installed outside
# the clone (GATEWATCH_PLAYWRIGHT_DIR, default
# ~/.cache/gatewatch-services/playwright) so later runs reuse it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir="${GATEWATCH_PLAYWRIGHT_DIR:-$HOME/.cache/gatewatch-services/playwright}"
command -v chromium >/dev/null || bash "$(dirname "$0")/apt.sh" chromium
command -v node >/dev/null || bash "$(dirname "$0")/apt.sh" nodejs npm
if cmp -s "$root/tests/browser/package-lock.json" "$dir/package-lock.json" && [ -d "$dir/node_modules/playwright-core" ]; then
    exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
cp "$root/tests/browser/package.json" "$root/tests/browser/package-lock.json" "$dir/"
(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
echo "playwright-core $(node -p "require('$dir/node_modules/playwright-core/package.json').version") in $dir"
