#!/usr/bin/env bash
# HL7 ingest over MLLP with store-before-reply (issue 4), release build, loopback only.
# Starts the real app in-process (rapport::launch_all with the MLLP listener, workers on)
# on a fresh SQLite database per scenario, one organisation and no HL7 interface, and sends
# ~1.9 KB SIU^S12 messages (a distinct MSH-10 and SCH-2 each), every connection one message
# at a time (send, wait for the ACK frame, send the next):
#   1. CONNECTIONS (8) connections as fast as ACKs come, for SECONDS;
#   2. one connection, the same;
#   3. paced: PACED_RATE (2000) messages/s over the same connections for SECONDS, ACK
#      latency from each message's due time (no coordinated omission);
# then scenarios 1 and 2 again with the app's workers off (ingest without the HL7 applier);
# and, in the same run, the baselines: a bare tokio MLLP echo server answering a fixed AA
# at once (the same three scenarios), and raw sqlx inserts of the same rows into
# hl7_messages with the store's pragmas (WAL, synchronous=FULL), 1, 8 and 512 rows per
# transaction. Then one message's parts timed alone (parse, map, ACK, hash, store commit,
# the receiver without TCP). Prints a table, the ratios (app/echo, app/raw) and the verdicts
# against the goals: >= 10,000 msg/s over 8 connections, >= 3,000 msg/s over one, ACK
# p99 <= 10 ms at 2,000 msg/s. Takes about 2.5 minutes with the defaults (plus the build).
#
#   bench/mllp.sh                      # 10 s per run
#   bench/mllp.sh 5                    # 5 s per run
#   bench/mllp.sh 10 --no-workers      # every app run with the workers (HL7 applier, …) off
#   RAPPORT_LOG=error bench/mllp.sh    # show the app's error logs (none installed otherwise)
#   bench/mllp.sh 10 --relaxed-diagnostic --app-only   # synchronous=NORMAL (not as shipped)
#
# Any arguments after the first are passed to the binary (see
# `cargo run --release -p rapport-bench-messaging --bin mllp -- --help`). Settings
# (environment): CONNECTIONS (8), PACED_RATE (2000).
# Results: printed; a section of target/bench/messaging-results.md; a JSON line appended to
# target/bench/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
shift || true
CONNECTIONS=${CONNECTIONS:-8}
PACED_RATE=${PACED_RATE:-2000}

echo "== building rapport-bench-messaging (release)"
cargo build --release -q -p rapport-bench-messaging --bin mllp

cargo run --release -q -p rapport-bench-messaging --bin mllp -- --seconds "$SECONDS_PER_RUN" --connections "$CONNECTIONS" \
    --paced-rate "$PACED_RATE" "$@"
echo "== results: target/bench/messaging-results.md"
