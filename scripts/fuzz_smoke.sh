#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for FUZZ_SECONDS (default 60) from
# its committed seed corpus (issue 13). A crash (panic, abort, use of more than FUZZ_RSS_MB of
# memory, an input slower than FUZZ_TIMEOUT seconds) fails the script; libFuzzer writes the
# input to fuzz/artifacts/<target>/. Needs the nightly toolchain; installs cargo-fuzz when
# missing; skips (exit 0) with a message when nightly is absent.
# Usage: scripts/fuzz_smoke.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${FUZZ_SECONDS:-60}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
# Sanitizer: `none` (the default here) runs several times faster; memory errors can only
# come from unsafe code, and libFuzzer's -rss_limit_mb still catches huge allocations.
SANITIZER="${FUZZ_SANITIZER:-none}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz_smoke: SKIPPED - the nightly Rust toolchain is not installed (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz_smoke: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

# The corpus libFuzzer grows is kept out of the committed seeds.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    echo "fuzz_smoke: $t for ${SECONDS_EACH}s"
    mkdir -p "$work/$t"
    if ! cargo +nightly fuzz run --fuzz-dir fuzz -s "$SANITIZER" --debug-assertions "$t" \
        "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$RSS_MB" \
        -timeout="$TIMEOUT" -print_final_stats=1 >"$work/$t.log" 2>&1; then
        tail -n 60 "$work/$t.log"
        echo "fuzz_smoke: $t FAILED; the crashing input is under fuzz/artifacts/$t/"
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done' "$work/$t.log" || true
done
echo "fuzz_smoke: all targets ran without a crash"
