#!/usr/bin/env bash
# Installs cargo-afl and builds AFL++ from the sources it ships (stable
# toolchain; no LLVM plugins, no nightly) into a cache outside the clone
# (GATEWATCH_AFL_DIR, default ~/.cache/gatewatch-services/afl). Prints nothing
# when both are there. scripts/fuzz.sh uses them.
set -euo pipefail
version=0.17.1
dir="${GATEWATCH_AFL_DIR:-$HOME/.cache/gatewatch-services/afl}"
export XDG_DATA_HOME="$dir/data"
if [ ! -x "$dir/bin/cargo-afl" ] || [[ "$("$dir/bin/cargo-afl" afl --version 2>/dev/null)" != "cargo-afl $version "* ]]; then
    CARGO_TARGET_DIR="$dir/build" cargo install -q cargo-afl --version "$version" --root "$dir" --locked
    rm -rf "$dir/build"
fi
if [ -z "$(find "$XDG_DATA_HOME/afl.rs" -path '*/afl-llvm/afl-compiler-rt.o' 2>/dev/null)" ]; then
    PATH="$dir/bin:$PATH" cargo afl config --build --force >/dev/null 2>&1
fi
