#!/usr/bin/env bash
# `kvgrid report` end to end on a fake-grid database: stdout, --out with plots linked relative to
# the report, README section rewrite (idempotent, rest untouched), usage and missing-db errors.
set -euo pipefail
# This test checks the pipeline, not timings: no waiting for a quiet machine when ctest runs
# tests side by side (the contention guard, docs/metrics.md).
export KVGRID_CONTENTION_WAIT_S=0
KVGRID=$1
MAKE_DB=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$MAKE_DB" "$dir/kvgrid.db"

# stdout (db from $KVGRID_DB)
KVGRID_DB="$dir/kvgrid.db" "$KVGRID" report fake-grid > "$dir/stdout.md"
grep -q '^## kvgrid results: fake-grid' "$dir/stdout.md" || fail "no title on stdout"
grep -q '^| `full` ' "$dir/stdout.md" || fail "no full row"
grep -q 'out of memory allocating 64 MiB' "$dir/stdout.md" || fail "failed run not listed"

# --out + --plots: links relative to the report file
mkdir -p "$dir/docs"
"$KVGRID" report fake-grid --db "$dir/kvgrid.db" --out "$dir/docs/report.md" --plots "$dir/docs/img"
[ -s "$dir/docs/img/ppl_vs_budget-wikitext-2-raw-v1-streaming.svg" ] || fail "plot not written"
grep -q '](img/ppl_vs_budget-wikitext-2-raw-v1-streaming.svg)' "$dir/docs/report.md" || fail "plot link"

# README section: only the marked part changes; a second run changes nothing
printf '# Title\n\nintro  \n<!-- kvgrid:results -->\nold\n<!-- /kvgrid:results -->\ntail\n' > "$dir/README.md"
"$KVGRID" report fake-grid --db "$dir/kvgrid.db" --readme "$dir/README.md" --section results \
  --plots "$dir/docs/img" --heading-level 3
head -3 "$dir/README.md" | cmp -s - <(printf '# Title\n\nintro  \n') || fail "README head changed"
tail -2 "$dir/README.md" | cmp -s - <(printf '<!-- /kvgrid:results -->\ntail\n') || fail "README tail changed"
grep -q '^### kvgrid results: fake-grid' "$dir/README.md" || fail "section not written"
grep -q '](docs/img/' "$dir/README.md" || fail "README plot links not relative to README"
cp "$dir/README.md" "$dir/README.first"
"$KVGRID" report fake-grid --db "$dir/kvgrid.db" --readme "$dir/README.md" --section results \
  --plots "$dir/docs/img" --heading-level 3
cmp -s "$dir/README.md" "$dir/README.first" || fail "README rewrite not idempotent"

# kvgrid results --db: the same database without a coordinator (as after `kvgrid run`)
"$KVGRID" results fake-grid --db "$dir/kvgrid.db" --format csv > "$dir/results.csv"
head -1 "$dir/results.csv" | grep -q '^run_key,status,' || fail "results csv header"
[ "$(grep -c ',done,' "$dir/results.csv")" -ge 10 ] || fail "results csv rows: $(wc -l < "$dir/results.csv")"
grep -q ',failed,' "$dir/results.csv" || fail "failed run missing from results"
"$KVGRID" results fake-grid --db "$dir/kvgrid.db" --format json --samples | tr -d ' \n' | grep -q '"ttft_ms":\[' \
  || fail "results json has no samples"

# errors
set +e
"$KVGRID" results no-such --db "$dir/kvgrid.db" > /dev/null 2> "$dir/err"
[ $? -eq 1 ] || fail "results for an unknown experiment should fail with 1"
grep -q 'no-such' "$dir/err" || fail "results error does not name the experiment: $(cat "$dir/err")"
"$KVGRID" report fake-grid --db "$dir/kvgrid.db" --readme "$dir/README.md" > /dev/null 2>&1
[ $? -eq 2 ] || fail "--readme without --section should be a usage error (2)"
"$KVGRID" report fake-grid --db "$dir/README.md.nope" > /dev/null 2> "$dir/err"
[ $? -eq 1 ] || fail "missing db should fail with 1"
"$KVGRID" report no-such --db "$dir/kvgrid.db" > /dev/null 2> "$dir/err"
[ $? -eq 1 ] || fail "unknown experiment should fail with 1"
grep -q 'no-such' "$dir/err" || fail "error does not name the experiment: $(cat "$dir/err")"
"$KVGRID" report fake-grid --db "$dir/kvgrid.db" --readme "$dir/docs/report.md" --section results > /dev/null 2> "$dir/err"
[ $? -eq 1 ] || fail "missing markers should fail with 1"
grep -q 'kvgrid:results' "$dir/err" || fail "marker error unclear: $(cat "$dir/err")"
echo "cli_report_test: ok"
