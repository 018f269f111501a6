#!/usr/bin/env bash
# The analyst console's third-party assets, from the npm registry at the
# versions ui/package-lock.json pins (integrity-checked by npm ci), copied
# into ui/vendor/, which the binary embeds. A build never needs npm; this
# script is how the committed files were made and how CI checks that they
# are exactly what the lock file names:
#
#   scripts/ui-assets.sh          # refresh ui/vendor/ after changing ui/package.json
#   scripts/ui-assets.sh --check  # exit 1 if ui/vendor/ differs from the registry's files
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/ui/package.json" "$root/ui/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
mkdir -p "$work/vendor"
cp "$work/node_modules/uplot/dist/uPlot.iife.min.js" "$work/node_modules/uplot/dist/uPlot.min.css" \
    "$work/node_modules/uplot/LICENSE" "$work/vendor/"
mv "$work/vendor/LICENSE" "$work/vendor/uPlot.LICENSE"
if [ "${1:-}" = "--check" ]; then
    diff -r "$work/vendor" "$root/ui/vendor" && echo "ui/vendor matches ui/package-lock.json"
else
    rm -rf "$root/ui/vendor"
    cp -r "$work/vendor" "$root/ui/vendor"
    ls -l "$root/ui/vendor"
fi
