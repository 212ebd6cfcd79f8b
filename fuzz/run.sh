#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 60; CI uses 60, a deeper
# run is e.g. `fuzz/run.sh 3600`). Needs cargo-fuzz (`cargo install
# cargo-fuzz`); cargo fuzz uses unstable compiler flags, enabled here on the
# stable toolchain with RUSTC_BOOTSTRAP=1. Crashes land in
# fuzz/artifacts/<target>/ — turn each into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1
for target in reference manifest config archive; do
  mkdir -p "fuzz/corpus/$target"
  echo "== fuzzing $target for ${seconds}s"
  cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|panicked|thread)" || true
  if ls "fuzz/artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz target $target found a crash: fuzz/artifacts/$target" >&2
    exit 1
  fi
done
