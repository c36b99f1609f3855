#!/usr/bin/env bash
# CSV import in constant memory: `rapport import patients FILE` on a fresh SQLite
# database for files of N rows (default 100000 and 1000000), reporting wall time, rows/s
# and peak RSS (GNU time). Memory that does not grow with the row count is the point;
# rows/s is reported for the record.
#
#   bench/import.sh                 # 100,000 and 1,000,000 rows
#   bench/import.sh 20000 200000    # other sizes
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(100000 1000000)
cargo build --release -q -p rapport
BIN="$PWD/target/release/rapport"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TIME=/usr/bin/time
if ! "$TIME" -v true >/dev/null 2>&1; then
  echo "bench/import.sh needs GNU time (/usr/bin/time; Debian package 'time')" >&2
  exit 1
fi

printf '%-10s %10s %10s %12s %12s\n' rows seconds rows/s "peak RSS MB" "file MB"
for n in "${SIZES[@]}"; do
  csv="$WORK/patients-$n.csv"
  # Fiction-range numbers (555-01xx), varied names and dates; every 1,000th row has a
  # bad date and every 997th a bad phone, so warnings are exercised too.
  awk -v n="$n" 'BEGIN {
    print "MRN,Last Name,First Name,DOB,Cell Phone,Email,City";
    split("Garcia Smith Nguyen Okafor Johnson Rossi Kowalski Haddad Lee Brown", fam, " ");
    split("Ana John Minh Ada Maria Luca Ewa Omar Ji Sam", giv, " ");
    for (i = 1; i <= n; i++) {
      dob = sprintf("19%02d-%02d-%02d", 30 + i % 70, 1 + i % 12, 1 + i % 28);
      if (i % 1000 == 0) dob = "1990-13-45";
      phone = sprintf("(201) 555-01%02d", i % 100);
      if (i % 997 == 0) phone = "555-555-5555";
      printf "M%08d,%s,%s,%s,%s,p%d@example.org,Springfield\n", i, fam[1 + i % 10], giv[1 + (i * 7) % 10], dob, phone, i;
    }
  }' > "$csv"
  db="sqlite://$WORK/import-$n.db"
  export RAPPORT_DATABASE_URL="$db" RAPPORT_SECRET_KEY_FILE="$WORK/key-$n"
  "$BIN" org create --slug bench --name "Bench Clinic" >/dev/null 2>&1
  start=$(date +%s.%N)
  "$TIME" -v -o "$WORK/time-$n" "$BIN" import patients "$csv" --org bench --authority BENCH --quiet >"$WORK/report-$n.json" 2>"$WORK/err-$n" || {
    status=$?
    # Exit 2 means some rows failed (the bad ones above are warnings, not failures).
    [ "$status" -eq 2 ] || { cat "$WORK/err-$n" >&2; exit "$status"; }
  }
  end=$(date +%s.%N)
  secs=$(echo "$end - $start" | bc -l)
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time-$n")
  size=$(stat -c %s "$csv")
  printf '%-10s %10.1f %10.0f %12.1f %12.1f\n' "$n" "$secs" "$(echo "$n / $secs" | bc -l)" "$(echo "$rss_kb / 1024" | bc -l)" "$(echo "$size / 1048576" | bc -l)"
  grep -E '"(rows|created|updated|unchanged|failed|warning_count)"' "$WORK/report-$n.json" | tr -d ' \n'; echo
done
