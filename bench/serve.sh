#!/usr/bin/env bash
# Start-to-ready time and idle memory of `rapport serve` (release build) on the
# 1,000,000-patient databases that bench/store.sh leaves behind:
#   SQLite:     target/bench/store-1m.db
#   PostgreSQL: database rapport_bench_store_1m on RAPPORT_BENCH_POSTGRES_URL's server
#
# For each backend and each of RUNS runs: starts `rapport serve` on free ports, polls
# GET /readyz every ~10 ms with curl and reports the time from process start to the
# first 200; waits IDLE_SECS; reports VmRSS (and the peak, VmHWM) from /proc/PID/status;
# then (unless BURST=0) sends a burst of name searches through the API from 8 concurrent
# clients, waits IDLE_SECS again and reports VmRSS once more (memory idle after use);
# sends SIGTERM and checks that the process exits 0. The burst needs an API token: one
# viewer token named serve-bench is created per backend (`rapport token create`).
#
#   bench/serve.sh                 # both backends (PostgreSQL skipped if its database is missing)
#   bench/serve.sh sqlite          # one
#
# Settings (environment): LABEL (1m: which store-<LABEL> database), BENCH_DIR (target/bench),
# RUNS (3), IDLE_SECS (5), BURST (1; 0 skips the burst), BURST_CLIENTS (8), BURSTS (1: how
# many bursts per start; the figure reported is after the last, each one is printed),
# RAPPORT_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

LABEL=${LABEL:-1m}
BENCH_DIR=${BENCH_DIR:-$root/target/bench}
RUNS=${RUNS:-3}
IDLE_SECS=${IDLE_SECS:-5}
BURST=${BURST:-1}
BURST_CLIENTS=${BURST_CLIENTS:-8}
BURSTS=${BURSTS:-1}
PG_SERVER=${RAPPORT_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
# Three-letter prefixes of the generated names (store-bench's lists), searched 3 times each.
PREFIXES="smi joh wil bro jon mil dav wil and tay tho moo jac mar lee whi har cla lew rob
wal you all kin wri sco gre bak ada nel hil cam mit car phi eva tur par ngu che pat kim oka
kow yam coh mur gar rod her lop gon per san ram tor flo riv gom dia rey mor cru ort gut cha
rui men var cas jim rom med agu vas fer guz mun sal sot del pen rio alv con val gue est nun
dom jam rob mic eli jes sar chr ash ste kev ann jos jua ros car ana jor car mig sof ale luc
jav isa fer ele ric pau and val die cam hec xim rau dan osc fra gab ant ver man adr ped raf"
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
    # The burst comes from one token: lift its rate limit (the default would answer 429).
    (cd "$work" && RAPPORT_DATABASE_URL=$url RAPPORT_HTTP_ADDR=127.0.0.1:$http \
        RAPPORT_METRICS_ADDR=127.0.0.1:$metrics RAPPORT_MLLP_ADDR=127.0.0.1:$mllp \
        RAPPORT_RATE_LIMIT_PER_MINUTE=1000000 RAPPORT_RATE_LIMIT_BURST=1000000 \
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
    AFTER_KB=
    if [ "$BURST" != 0 ]; then
      local codes b
      for b in $(seq 1 "$BURSTS"); do
        # shellcheck disable=SC2086 # one prefix per word
        codes=$(printf '%s\n' $PREFIXES $PREFIXES $PREFIXES |
            xargs -P "$BURST_CLIENTS" -I{} curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 \
                -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$http/api/v1/patients?name={}&limit=200" |
            sort | uniq -c | tr -s ' ' | sed 's/^ //' | tr '\n' ' ')
        BURST_REQUESTS=$(( $(echo $PREFIXES | wc -w) * 3 ))
        case $codes in
            "$BURST_REQUESTS 200 ") ;;
            *)
                echo "the burst's answers were not all 200: $codes" >&2
                cat "$log" >&2
                return 1
                ;;
        esac
        sleep "$IDLE_SECS"
        AFTER_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
        if [ "$BURSTS" -gt 1 ]; then
            echo "   after burst $b: idle VmRSS $(mb "$AFTER_KB") MB (load $(cut -d' ' -f1-3 /proc/loadavg))"
        fi
      done
    fi
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
    if [ "$BURST" != 0 ]; then
        TOKEN=$(cd "$work" && RAPPORT_DATABASE_URL=$url "$bin" token create --org bench --name serve-bench --role viewer)
    fi
    worst_ready=0
    worst_rss=0
    worst_after=0
    for run in $(seq 1 "$RUNS"); do
        measure "$url" "$work/serve-$backend-$run.log"
        after=
        if [ -n "$AFTER_KB" ]; then
            after="; after $BURST_REQUESTS searches from $BURST_CLIENTS clients, idle VmRSS $(mb "$AFTER_KB") MB"
            if [ "$AFTER_KB" -gt "$worst_after" ]; then worst_after=$AFTER_KB; fi
        fi
        echo "   run $run: start to ready $READY_MS ms; idle VmRSS $RSS_KB kB = $(mb "$RSS_KB") MB ($(mib "$RSS_KB") MiB), peak VmHWM $(mb "$HWM_KB") MB$after; SIGTERM: exit 0"
        if [ "$READY_MS" -gt "$worst_ready" ]; then worst_ready=$READY_MS; fi
        if [ "$RSS_KB" -gt "$worst_rss" ]; then worst_rss=$RSS_KB; fi
    done
    echo "   worst of $RUNS: start to ready $worst_ready ms (goal <= $READY_GOAL_MS ms: $(verdict "$worst_ready" "$READY_GOAL_MS")); idle RSS $(mb "$worst_rss") MB (goal <= $RSS_GOAL_MB MB: $(verdict "$(mb "$worst_rss")" "$RSS_GOAL_MB"))"
    if [ "$worst_after" -gt 0 ]; then
        echo "   worst of $RUNS: idle RSS after the burst $(mb "$worst_after") MB (goal <= $RSS_GOAL_MB MB: $(verdict "$(mb "$worst_after")" "$RSS_GOAL_MB"))"
    fi
done
exit "$status"
