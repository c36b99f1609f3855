#!/usr/bin/env bash
# Inbound webhook benchmark, release build, loopback only. Starts the real app in-process
# (rapport::launch_with_listeners, workers on) on a fresh SQLite database with a Twilio
# channel whose Auth Token is known; builds and signs every request (a distinct inbound SMS
# each) before the clock starts; then, from a load generator on its own runtime:
#   - closed loop: CONCURRENCY connections, up to REQUESTS requests or MAX_SECONDS;
#   - open loop at OPEN_RATE requests/s for OPEN_SECONDS, latency from each request's
#     scheduled send time (no coordinated omission); and, when the app's closed-loop rate
#     is below OPEN_RATE, once more at half that rate;
# and the same against a bare axum server answering 200 (the baseline, and the ratio).
# Afterwards every request not answered 2xx is re-sent, and the stored MessageSids are
# checked: each webhook stored exactly once (the script fails otherwise).
# Goals: >= 10,000 webhooks/s signature-checked and committed before the 200; p99 <= 20 ms
# at 5,000/s.
#
#   bench/webhooks.sh
#   WEBHOOK_ARGS=--no-workers bench/webhooks.sh        # without the dispatcher and router
#   WEBHOOK_ARGS=--relaxed-diagnostic bench/webhooks.sh # SQLite synchronous=NORMAL (not as shipped)
#   WEBHOOK_ARGS="--backend postgres" bench/webhooks.sh
#
# Settings (environment): REQUESTS (100000), CONCURRENCY (64), MAX_SECONDS (30),
# OPEN_RATE (5000), OPEN_SECONDS (10), WEBHOOK_ARGS (more flags; see --help).
# Results: printed; a section of target/bench/messaging-results.md; a JSON line appended to
# target/bench/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-100000}
CONCURRENCY=${CONCURRENCY:-64}
MAX_SECONDS=${MAX_SECONDS:-30}
OPEN_RATE=${OPEN_RATE:-5000}
OPEN_SECONDS=${OPEN_SECONDS:-10}
read -r -a extra <<<"${WEBHOOK_ARGS:-}"

echo "== building rapport-bench-messaging (release)"
cargo build --release -q -p rapport-bench-messaging --bins

cargo run --release -q -p rapport-bench-messaging --bin webhooks -- \
    --requests "$REQUESTS" --concurrency "$CONCURRENCY" --max-seconds "$MAX_SECONDS" \
    --open-rate "$OPEN_RATE" --open-seconds "$OPEN_SECONDS" "${extra[@]}"
echo "== results: target/bench/messaging-results.md"
