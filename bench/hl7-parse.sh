#!/usr/bin/env bash
# HL7 v2 parse benchmark on the 3.5 KB SIU^S12 sample (LF turned into CR):
# crates/hl7/benches/parse.rs (our parse, parse + 20 fields, a bare memchr split, the
# hl7-parser crate), then python-hl7's hl7.parse on the same bytes, and the ratios.
# Target: >= 300,000 parses/s on one core.
#
#   bench/hl7-parse.sh
#   HL7_BENCH_SECS=1 HL7_BENCH_RUNS=7 bench/hl7-parse.sh
#
# Settings (environment): RAPPORT_CONFORMANCE_DIR (../shared/testdata), HL7_BENCH_SECS
# (seconds per run, 0.6), HL7_BENCH_RUNS (5), RAPPORT_PYTHON (a python with `hl7`
# installed; else python3, and when that lacks `hl7` a venv in target/bench-venv gets
# hl7==0.4.5 from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

export RAPPORT_CONFORMANCE_DIR="${RAPPORT_CONFORMANCE_DIR:-$(cd .. && pwd)/shared/testdata}"
SAMPLE="$RAPPORT_CONFORMANCE_DIR/hl7/msfhirconverter__SIU-S12-01.hl7"
if [ ! -r "$SAMPLE" ]; then
    echo "hl7-parse: $SAMPLE is missing (set RAPPORT_CONFORMANCE_DIR); nothing to measure" >&2
    exit 1
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "== cargo bench -p rapport-hl7 --bench parse"
cargo bench -q -p rapport-hl7 --bench parse 2>&1 | tee "$out"

echo "== python-hl7"
PY="${RAPPORT_PYTHON:-python3}"
if ! "$PY" -c 'import hl7' 2>/dev/null; then
    venv=target/bench-venv
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" -c 'import hl7' 2>/dev/null; then
        "$venv/bin/pip" install -q hl7==0.4.5
    fi
    PY="$venv/bin/python"
fi
"$PY" bench/hl7-parse.py "$SAMPLE" "${HL7_BENCH_SECS:-0.6}" "${HL7_BENCH_RUNS:-5}" | tee -a "$out"

value() { grep '^RESULT' "$out" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1; }
ours=$(value parse_per_s)
memchr=$(value memchr_per_s)
crate=$(value hl7_parser_per_s)
python=$(value python_hl7_per_s)
echo "== summary"
awk -v o="$ours" -v m="$memchr" -v c="$crate" -v p="$python" 'BEGIN {
    printf "ours %d parses/s; memchr floor %d; hl7-parser %d; python-hl7 %d\n", o, m, c, p
    printf "ours/memchr %.2f   ours/hl7-parser %.1fx   ours/python-hl7 %.0fx\n", o / m, o / c, o / p
    printf "target 300,000 parses/s: %s\n", (o >= 300000 ? "met" : "NOT met")
}'
