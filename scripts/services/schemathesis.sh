#!/usr/bin/env bash
# Installs schemathesis (PyPI) for tests/schemathesis.rs into a virtualenv
# outside the clone (GATEWATCH_SCHEMATHESIS_DIR, default
# ~/.cache/gatewatch-services/schemathesis). The version is pinned so a new
# release cannot change what CI checks without a commit here.
set -euo pipefail
version=4.32.5
dir="${GATEWATCH_SCHEMATHESIS_DIR:-$HOME/.cache/gatewatch-services/schemathesis}"
installed="$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)"
if [ -x "$dir/bin/schemathesis" ] && [ "$installed" = "$version" ]; then
    exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    bash "$(dirname "$0")/apt.sh" python3-venv
fi
rm -rf "$dir"
python3 -m venv "$dir"
"$dir/bin/pip" install -q --disable-pip-version-check "schemathesis==$version"
"$dir/bin/schemathesis" --version
