#!/usr/bin/env bash
# Runs the two rapport-hl7 fuzz targets (crates/hl7/fuzz: `parse` and `mllp`) for N
# seconds each, seeded with crates/hl7/fuzz/seeds. Needs a nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`); without them it says so and exits 0.
#
#   bench/hl7-fuzz.sh          # 60 s per target
#   bench/hl7-fuzz.sh 600      # 10 min per target
#
# Crashes land in crates/hl7/fuzz/artifacts/<target>/; the growing corpus in
# crates/hl7/fuzz/corpus/<target>/ (both ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../crates/hl7"

SECONDS_PER_TARGET=${1:-60}
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "hl7-fuzz: skipped, no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "hl7-fuzz: skipped, cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi

for target in parse mllp; do
    echo "== fuzz $target for ${SECONDS_PER_TARGET}s"
    mkdir -p "fuzz/corpus/$target"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" fuzz/seeds -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -print_final_stats=1
done
echo "== hl7-fuzz: no crash"
