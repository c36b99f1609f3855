#!/usr/bin/env bash
# Start-to-ready time and idle memory of `rapport serve` (release build) on the
# 1,000,000-patient databases that bench/store.sh leaves behind:
#   SQLite:     target/bench/store-1m.db
#   PostgreSQL: database rapport_bench_store_1m on RAPPORT_BENCH_POSTGRES_URL's server
#
# For each backend and each of RUNS runs: starts `rapport serve` on free ports, polls
# GET /readyz every ~10 ms with curl and reports the time from process start to the
# first 200; waits IDLE_SECS; reports VmRSS (and the peak, VmHWM) from /proc/PID/status;
# sends SIGTERM and checks that the process exits 0.
#
#   bench/serve.sh                 # both backends (PostgreSQL skipped if its database is missing)
#   bench/serve.sh sqlite          # one
#
# Settings (environment): LABEL (1m: which store-<LABEL> database), BENCH_DIR (target/bench),
# RUNS (3), IDLE_SECS (5), RAPPORT_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

LABEL=${LABEL:-1m}
BENCH_DIR=${BENCH_DIR:-$root/target/bench}
RUNS=${RUNS:-3}
IDLE_SECS=${IDLE_SECS:-5}
PG_SERVER=${RAPPORT_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
READY_GOAL_MS=1000
RSS_GOAL_MB=50
if [ "$#" -gt 0 ]; then backends=("$@"); else backends=(sqlite postgres); fi

echo "== building rapport (release)"
cargo build --release -p rapport
bin=$root/target/release/rapport

# A TCP port nobody listens on (nothing stops another process from taking it before us,
# but rapport would then fail to bind and the script would say so).
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if [ -z "$(ss -Htln "sport = :$port")" ]; then
            echo "$port"
            return
        fi
    done
}

now_ns() { date +%s%N; }
# Running, and not a zombie waiting to be reaped.
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# One start; sets READY_MS, RSS_KB and HWM_KB, or fails with the server's log.
measure() {
    local url=$1 log=$2 http metrics mllp start ready code rc
    http=$(free_port)
    metrics=$(free_port)
    mllp=$(free_port)
    start=$(now_ns)
    # The working directory is empty, so no stray rapport.toml is read; exec keeps the PID.
    (cd "$work" && RAPPORT_DATABASE_URL=$url RAPPORT_HTTP_ADDR=127.0.0.1:$http \
        RAPPORT_METRICS_ADDR=127.0.0.1:$metrics RAPPORT_MLLP_ADDR=127.0.0.1:$mllp \
        exec "$bin" serve) >"$log" 2>&1 &
    pid=$!
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$http/readyz" || true)
        if [ "$code" = 200 ]; then
            ready=$(now_ns)
            break
        fi
        if ! alive "$pid"; then
            echo "rapport serve exited before it was ready; its log:" >&2
            cat "$log" >&2
            return 1
        fi
        if [ $(( ($(now_ns) - start) / 1000000 )) -gt 30000 ]; then
            echo "not ready after 30 s; its log:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.01
    done
    sleep "$IDLE_SECS"
    RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    pid=
    if [ "$rc" -ne 0 ]; then
        echo "rapport serve exited $rc after SIGTERM (expected 0); its log:" >&2
        cat "$log" >&2
        return 1
    fi
    READY_MS=$(( (ready - start) / 1000000 ))
}

verdict() { if awk "BEGIN { exit !($1 <= $2) }"; then echo PASS; else echo FAIL; fi; }
# kB (KiB, as /proc reports) to MB (10^6 bytes) and MiB, one decimal.
mb() { awk "BEGIN { printf \"%.1f\", $1 * 1024 / 1000000 }"; }
mib() { awk "BEGIN { printf \"%.1f\", $1 / 1024 }"; }

echo "== machine: $(nproc) CPUs, $(free -h | awk '/^Mem:/ {print $2}') memory, load $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
for backend in "${backends[@]}"; do
    case $backend in
        sqlite)
            db=$BENCH_DIR/store-$LABEL.db
            if [ ! -f "$db" ]; then
                echo "== sqlite: $db is missing; run bench/store.sh sqlite first" >&2
                status=1
                continue
            fi
            url=sqlite://$db
            what="$db ($(du -m "$db" | cut -f1) MB)"
            ;;
        postgres)
            name=rapport_bench_store_$LABEL
            url=${PG_SERVER%%\?*}
            url=${url%/*}/$name
            if command -v psql >/dev/null &&
                [ "$(psql "$PG_SERVER" -Atc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]; then
                echo "== postgres: database $name is missing; run bench/store.sh postgres first (skipped)"
                continue
            fi
            what="database $name"
            ;;
        *)
            echo "unknown backend $backend (sqlite or postgres)" >&2
            exit 2
            ;;
    esac
    echo "== $backend: rapport serve on $what; $RUNS runs, RSS read after $IDLE_SECS s idle"
    worst_ready=0
    worst_rss=0
    for run in $(seq 1 "$RUNS"); do
        measure "$url" "$work/serve-$backend-$run.log"
        echo "   run $run: start to ready $READY_MS ms; idle VmRSS $RSS_KB kB = $(mb "$RSS_KB") MB ($(mib "$RSS_KB") MiB), peak VmHWM $(mb "$HWM_KB") MB; SIGTERM: exit 0"
        if [ "$READY_MS" -gt "$worst_ready" ]; then worst_ready=$READY_MS; fi
        if [ "$RSS_KB" -gt "$worst_rss" ]; then worst_rss=$RSS_KB; fi
    done
    echo "   worst of $RUNS: start to ready $worst_ready ms (goal <= $READY_GOAL_MS ms: $(verdict "$worst_ready" "$READY_GOAL_MS")); idle RSS $(mb "$worst_rss") MB (goal <= $RSS_GOAL_MB MB: $(verdict "$(mb "$worst_rss")" "$RSS_GOAL_MB"))"
done
exit "$status"
