#!/usr/bin/env bash
# Messaging benchmarks, release build, loopback only:
#
# 1. dispatch: MESSAGES queued staff messages (to distinct numbers, written before the clock
#    starts) dispatched by the engine's run_dispatcher() (the loop `rapport serve` runs;
#    DISPATCH_ARGS='--driver steps' calls dispatch_step() in a loop instead) over HTTP to the
#    in-process Twilio simulator with pacing off, for each CONCURRENCYxBATCH setting; on
#    PostgreSQL it also counts committed transactions per message; baseline in the same run:
#    the same CreateMessage POSTs straight to a fresh simulator with reqwest at the same
#    concurrency, no database. Goal: >= 3,000 msgs/s. On SQLite, one more run with
#    synchronous=NORMAL shows what the per-commit fsyncs cost (a diagnostic, not as shipped).
# 2. pacing: one channel at each of RATES segments/s (and two at once), ~PACING_SECONDS of
#    sending each; achieved steady-state rate per sender against configured (goal +-1%),
#    the initial one-second burst of R messages excluded.
#
#   bench/messaging.sh                  # SQLite and PostgreSQL (skipped if unreachable)
#   bench/messaging.sh sqlite           # one backend
#   MESSAGES=5000 bench/messaging.sh    # smaller
#
# Settings (environment): MESSAGES (20000), SETTINGS (32x100,64x500,128x1000),
# MAX_SECONDS (45: a dispatch run still unfinished then is stopped and its rate so far
# reported), RATES (10,50), PACING_SECONDS (10), DISPATCH_ARGS / PACING_ARGS (more flags;
# see --help), RAPPORT_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/test: the
# server on which a fresh database is created for each run, and dropped after).
# Results: printed; sections of target/bench/messaging-results.md; JSON lines appended to
# target/bench/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-20000}
SETTINGS=${SETTINGS:-32x100,64x500,128x1000}
MAX_SECONDS=${MAX_SECONDS:-45}
RATES=${RATES:-10,50}
PACING_SECONDS=${PACING_SECONDS:-10}
read -r -a dispatch_extra <<<"${DISPATCH_ARGS:-}"
read -r -a pacing_extra <<<"${PACING_ARGS:-}"
if [ "$#" -gt 0 ]; then backends=("$@"); else backends=(sqlite postgres); fi

echo "== building rapport-bench-messaging (release)"
cargo build --release -q -p rapport-bench-messaging --bin dispatch --bin pacing

run() { cargo run --release -q -p rapport-bench-messaging --bin "$@"; }

for backend in "${backends[@]}"; do
    case $backend in
        sqlite) diagnostic=(--relaxed-diagnostic) ;;
        postgres) diagnostic=(--skip-if-unavailable) ;;
        *)
            echo "unknown backend $backend (sqlite or postgres)" >&2
            exit 2
            ;;
    esac
    run dispatch -- --backend "$backend" --messages "$MESSAGES" --settings "$SETTINGS" \
        --max-seconds "$MAX_SECONDS" "${diagnostic[@]}" "${dispatch_extra[@]}"
done
run pacing -- --rates "$RATES" --seconds "$PACING_SECONDS" "${pacing_extra[@]}"
echo "== results: target/bench/messaging-results.md"
