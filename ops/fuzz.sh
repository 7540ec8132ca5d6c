#!/usr/bin/env bash
# Fuzzing (issue 7): runs every cargo-fuzz target in tests/fuzz for a bounded time and
# prints how many inputs each one executed.
#
#   ops/fuzz.sh [seconds-per-target] [target...]
#
#   ops/fuzz.sh 15      the gate's profile (ops/test.sh): six targets, under 2 minutes
#                       warm; the first run builds for ~10 minutes on 2 cores (and
#                       installs cargo-fuzz, ~2 more, where it never was)
#   ops/fuzz.sh         20 s per target (the default)
#   ops/fuzz.sh 600     the long profile: 10 minutes per target, an hour in all
#
# - cargo-fuzz (pinned) is installed once into $GANYMEDE_TOOLS (default
#   $CARGO_TARGET_DIR/../tools) with `cargo install --root`, so CI machines reuse it; the
#   nightly toolchain it needs is installed if missing.
# - The targets build with nightly into $CARGO_TARGET_DIR/fuzz, `--sanitizer none`: the
#   workspace denies unsafe code, so AddressSanitizer would only watch our dependencies,
#   and it costs a build of its own (12 minutes here) and three quarters of the
#   executions (cookie_token, 20 s: 247k with ASan, 1,017k without); the targets
#   assert logic, not memory safety. Debug assertions and overflow checks stay on
#   (cargo-fuzz's default), so an overflow is a crash.
# - Each target runs on a temporary copy of its committed corpus (tests/fuzz/corpus/
#   <target>): what a run discovers never dirties the tree. To keep new inputs on
#   purpose, set GANYMEDE_FUZZ_MERGE=1: they are minimized into the committed corpus
#   (`-merge=1`), to be reviewed and committed.
# - A crash (a panic, a failed property, a hang past 10 s, running out of memory) stops
#   the script with exit 1 and prints the input's path, kept under
#   $CARGO_TARGET_DIR/fuzz-artifacts/<target>/, and the command that replays it.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ganymede/target}
export PATH=$HOME/.cargo/bin:$PATH
TOOLS=${GANYMEDE_TOOLS:-$CARGO_TARGET_DIR/../tools}
CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET=${1:-20}
shift || true
FUZZ_DIR=$ROOT/tests/fuzz
BUILD_DIR=$CARGO_TARGET_DIR/fuzz
ARTIFACTS=$CARGO_TARGET_DIR/fuzz-artifacts

if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET < 1)); then
    echo "usage: ops/fuzz.sh [seconds-per-target] [target...]" >&2
    exit 2
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "--- installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if [[ "$("$TOOLS/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "--- installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$TOOLS"
fi
export PATH=$TOOLS/bin:$PATH

if (($# > 0)); then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo +nightly fuzz list --fuzz-dir "$FUZZ_DIR")
fi
TRIPLE=$(rustc +nightly -vV | sed -n 's/^host: //p')

echo "--- building the fuzz targets (nightly, no sanitizer)"
# `cargo fuzz build` takes one target or all of them.
if (($# > 0)); then
    for target in "${TARGETS[@]}"; do
        cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer none --target "$TRIPLE" \
            --target-dir "$BUILD_DIR" "$target"
    done
else
    cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer none --target "$TRIPLE" \
        --target-dir "$BUILD_DIR"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ganymede-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SUMMARY=()
for target in "${TARGETS[@]}"; do
    binary=$BUILD_DIR/$TRIPLE/release/$target
    corpus=$WORK/corpus/$target
    mkdir -p "$corpus" "$ARTIFACTS/$target"
    if [[ -d $FUZZ_DIR/corpus/$target ]]; then
        cp -R "$FUZZ_DIR/corpus/$target/." "$corpus/"
    fi
    dict=()
    if [[ -f $FUZZ_DIR/$target.dict ]]; then
        dict=(-dict="$FUZZ_DIR/$target.dict")
    fi
    log=$WORK/$target.log
    echo "--- fuzzing $target for ${SECONDS_PER_TARGET}s"
    status=0
    # libFuzzer stops itself after max_total_time; the outer timeout only guards
    # against a run that cannot stop (it also ends an input after 10 s: a hang).
    timeout --kill-after=10 $((SECONDS_PER_TARGET + 60)) \
        "$binary" "$corpus" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$target/" "${dict[@]}" \
        >"$log" 2>&1 || status=$?
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if ((status != 0)); then
        tail -n 40 "$log" >&2
        crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        echo "fuzz: $target FAILED (exit $status) after ${executions:-?} executions" >&2
        if [[ -n $crash ]]; then
            echo "fuzz: the input: $crash" >&2
            echo "fuzz: replay: $binary $crash" >&2
        fi
        exit 1
    fi
    if [[ ${GANYMEDE_FUZZ_MERGE:-0} == 1 ]]; then
        mkdir -p "$FUZZ_DIR/corpus/$target"
        "$binary" -merge=1 "$FUZZ_DIR/corpus/$target" "$corpus" >>"$log" 2>&1
    fi
    SUMMARY+=("$target=${executions:-?}")
done
echo "fuzz: executions in ${SECONDS_PER_TARGET}s per target: ${SUMMARY[*]}"
