#!/usr/bin/env bash
# Timing under a disturbed machine (docs/paired-baselines.md): runs experiments/drift-check.yaml
# through `kvgrid run` three times, each time with a busy loop on one core starting BUSY_AFTER
# seconds in and lasting BUSY_SECONDS:
#   guarded   paired baselines + the contention guard (kvgrid's defaults)
#   paired    paired baselines, guard off (KVGRID_CONTENTION_WAIT_S=0)
#   unpaired  `paired_baseline: false`, guard off: Δs between separately timed runs
# and prints each report's summary table.
#   scripts/drift_check.sh [OUT_DIR] [VARIANT...]   (from the repository root, after building)
# REPEATS=N overrides the grid's 6 repeats.
set -euo pipefail
KVGRID=${KVGRID:-build/kvgrid}
OUT=${1:-$(mktemp -d)}
shift || true
VARIANTS=${*:-guarded paired unpaired}
BUSY_AFTER=${BUSY_AFTER:-6}
BUSY_SECONDS=${BUSY_SECONDS:-90}
mkdir -p "$OUT"
for variant in $VARIANTS; do
  case $variant in
    guarded) paired=true; guard= ;;
    paired) paired=true; guard=0 ;;
    unpaired) paired=false; guard=0 ;;
    *) echo "unknown variant '$variant' (guarded|paired|unpaired)" >&2; exit 2 ;;
  esac
  grid="$OUT/drift-check-$variant.yaml"
  sed -e "s/^name: drift-check/name: drift-check-$variant/" \
      -e "s/^repeats: .*/repeats: ${REPEATS:-6}/" experiments/drift-check.yaml > "$grid"
  echo "paired_baseline: $paired" >> "$grid"
  rm -f "$OUT/$variant.db"*
  ( sleep "$BUSY_AFTER"; exec timeout "$BUSY_SECONDS" sh -c 'while :; do :; done' ) &
  busy=$!
  start=$(date +%s)
  KVGRID_CONTENTION_WAIT_S=${guard:-${KVGRID_CONTENTION_WAIT_S:-}} \
    "$KVGRID" run "$grid" --workers 1 --db "$OUT/$variant.db" > "$OUT/$variant.log" 2>&1
  echo "== $variant: paired_baseline $paired, contention guard ${guard:-on} ($(( $(date +%s) - start )) s; busy core from ${BUSY_AFTER} s for ${BUSY_SECONDS} s)"
  "$KVGRID" report "drift-check-$variant" --db "$OUT/$variant.db" > "$OUT/$variant.md"
  sed -n '/^### Summary/,/^_/p' "$OUT/$variant.md"
  wait "$busy" 2>/dev/null || true
done
echo "reports and databases in $OUT"
