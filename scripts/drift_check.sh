#!/usr/bin/env bash
# Paired vs unpaired Δs while the machine is disturbed (docs/paired-baselines.md): runs
# experiments/drift-check.yaml twice through `kvgrid run`, each time with a busy loop on one core
# starting BUSY_AFTER seconds in and lasting BUSY_SECONDS, first with paired baselines (the
# default), then with `paired_baseline: false`; prints each report's summary table.
#   scripts/drift_check.sh [OUT_DIR]      (from the repository root, after building)
set -euo pipefail
KVGRID=${KVGRID:-build/kvgrid}
OUT=${1:-$(mktemp -d)}
BUSY_AFTER=${BUSY_AFTER:-6}
BUSY_SECONDS=${BUSY_SECONDS:-90}
mkdir -p "$OUT"
for paired in true false; do
  grid="$OUT/drift-check-$paired.yaml"
  sed "s/^name: drift-check/name: drift-check-$paired/" experiments/drift-check.yaml > "$grid"
  echo "paired_baseline: $paired" >> "$grid"
  rm -f "$OUT/$paired.db"*
  ( sleep "$BUSY_AFTER"; exec timeout "$BUSY_SECONDS" sh -c 'while :; do :; done' ) &
  busy=$!
  start=$(date +%s)
  "$KVGRID" run "$grid" --workers 1 --db "$OUT/$paired.db" > "$OUT/$paired.log" 2>&1
  echo "== paired_baseline: $paired ($(( $(date +%s) - start )) s; busy core from ${BUSY_AFTER} s for ${BUSY_SECONDS} s)"
  "$KVGRID" report "drift-check-$paired" --db "$OUT/$paired.db" > "$OUT/$paired.md"
  sed -n '/^### Summary/,/^_/p' "$OUT/$paired.md"
  wait "$busy" 2>/dev/null || true
done
echo "reports and databases in $OUT"
