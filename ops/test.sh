#!/usr/bin/env bash
# The one gate: formatting, lints, and every test (unit, storage, in-process cluster,
# and black-box tests against real processes). README's test command and .ci/run call it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One target directory, kept between runs (and between clones on one machine), so
# RocksDB's C++ is compiled once.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ganymede/target}
mkdir -p "$CARGO_TARGET_DIR"
# A runaway target directory would fill the disk: start over above 40 GB.
if (( $(du -s --block-size=1G "$CARGO_TARGET_DIR" | cut -f1) > 40 )); then
  echo "ops/test.sh: $CARGO_TARGET_DIR is over 40 GB, cleaning it" >&2
  rm -rf "$CARGO_TARGET_DIR"
fi

bash ops/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== fuzz: every tests/fuzz target for a bounded time (ops/fuzz.sh 600 is the long profile)"
rustfmt --edition 2024 --check tests/fuzz/fuzz_targets/*.rs
bash ops/fuzz.sh "${GANYMEDE_FUZZ_SECS:-15}"
echo "== build the binary the black-box tests run"
cargo build --locked --bin ganymede --bin ganymede-test-singleuser
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  # Two test processes at a time: each cluster test runs three replicas, and the
  # machine has two cores.
  cargo nextest run --workspace --locked --no-fail-fast --test-threads 2 "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@" -- --test-threads 2
fi
echo "== schemathesis: JupyterHub 6.1.1's OpenAPI spec against one hub (no 5xx, documented deviations)"
GANYMEDE_BIN=$CARGO_TARGET_DIR/debug/ganymede SX_BUDGET=${SX_BUDGET:-150} bash ops/schemathesis/run.sh
