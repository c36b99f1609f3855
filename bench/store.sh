#!/usr/bin/env bash
# The store benchmark, in release mode: for each backend, 1,000,000 generated patients
# inserted through the store and, into a second fresh database, the same rows through
# plain batched INSERTs (the baseline); the ratio; then searches by phone and by name
# prefix on the store's database, which stays in place for bench/serve.sh.
#
#   bench/store.sh                   # both backends
#   bench/store.sh sqlite            # one
#   PATIENTS=100000 bench/store.sh   # smaller
#
# Settings (environment): PATIENTS (1000000), BATCH (5000), SEARCHES (2000),
# RAPPORT_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/test: the server on
# which the databases rapport_bench_store_* and rapport_bench_baseline_* are created),
# STORE_BENCH_ARGS (more flags, e.g. "--analyze"; see --help).
# Results: printed, and one JSON line per backend appended to target/bench/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

PATIENTS=${PATIENTS:-1000000}
BATCH=${BATCH:-5000}
SEARCHES=${SEARCHES:-2000}
read -r -a extra <<<"${STORE_BENCH_ARGS:-}"
if [ "$#" -gt 0 ]; then backends=("$@"); else backends=(sqlite postgres); fi

echo "== building store-bench (release)"
cargo build --release -p rapport-bench --bin store-bench

echo "== machine: $(nproc) CPUs, $(free -h | awk '/^Mem:/ {print $2}') memory, load $(cut -d' ' -f1-3 /proc/loadavg)"
for backend in "${backends[@]}"; do
    echo "== $backend: $PATIENTS patients, batches of $BATCH, $SEARCHES searches of each kind"
    cargo run --release -q -p rapport-bench --bin store-bench -- \
        --backend "$backend" --patients "$PATIENTS" --batch "$BATCH" --searches "$SEARCHES" \
        "${extra[@]}"
done
