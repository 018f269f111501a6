#!/usr/bin/env bash
# Fuzzes every target of fuzz/main.rs with AFL++ for a budget each:
#   bash scripts/fuzz.sh [BUDGET] [TARGET ...]
# BUDGET is seconds per target (default 60) or executions per target with an
# M suffix (10M: ten million); the default is every target. Corpora and findings go to
# $GATEWATCH_FUZZ_OUT/TARGET (default $CARGO_TARGET_DIR/fuzz-out); an existing
# corpus is resumed. Prints executions, paths and findings per target and
# fails if any target crashed or hung. docs/RELIABILITY.md has the full runs.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60}"
shift || true
case "$budget" in
*M) limit=(-E "$((${budget%M} * 1000000))") ;;
*) limit=(-V "$budget") ;;
esac
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(json nginx auto envoy kong pipeline api stream)
bash scripts/services/afl.sh
dir="${GATEWATCH_AFL_DIR:-$HOME/.cache/gatewatch-services/afl}"
export XDG_DATA_HOME="$dir/data"
export PATH="$dir/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatewatch-target}"
export CARGO_INCREMENTAL=0
GATEWATCH_AFL_RT="$(find "$XDG_DATA_HOME/afl.rs" -path '*/afl-llvm/afl-compiler-rt.o' | head -n 1)"
export GATEWATCH_AFL_RT
afl_fuzz="$(find "$XDG_DATA_HOME/afl.rs" -type f -path '*/afl/bin/afl-fuzz' | head -n 1)"
RUSTC_WRAPPER="$PWD/scripts/fuzz/rustc-wrapper" cargo build --release --features fuzz --bin gatewatch-fuzz
bin="$CARGO_TARGET_DIR/release/gatewatch-fuzz"
out="${GATEWATCH_FUZZ_OUT:-$CARGO_TARGET_DIR/fuzz-out}"
mkdir -p "$out"
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
failed=0
printf '%-9s %12s %10s %8s %8s %8s\n' target executions per_sec corpus crashes hangs
for t in "${targets[@]}"; do
    input=(-i "fuzz/seeds/$t")
    [ -d "$out/$t/default/queue" ] && input=(-i -)
    timeout=1000
    [ "$t" = pipeline ] && timeout=5000
    "$afl_fuzz" "${input[@]}" -o "$out/$t" "${limit[@]}" -t "$timeout" -- "$bin" "$t" >"$out/$t.log" 2>&1 || {
        echo "afl-fuzz failed on $t; see $out/$t.log" >&2
        tail -n 20 "$out/$t.log" >&2
        failed=1
        continue
    }
    stat() { sed -n "s/^$1 *: *//p" "$out/$t/default/fuzzer_stats"; }
    printf '%-9s %12s %10s %8s %8s %8s\n' "$t" "$(stat execs_done)" "$(stat execs_per_sec)" \
        "$(stat corpus_count)" "$(stat saved_crashes)" "$(stat saved_hangs)"
    if [ "$(stat saved_crashes)" != 0 ] || [ "$(stat saved_hangs)" != 0 ]; then
        echo "  findings: $out/$t/default/crashes, $out/$t/default/hangs (replay: $bin $t < FILE)" >&2
        failed=1
    fi
done
exit $failed
