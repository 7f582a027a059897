#!/usr/bin/env bash
# The results database failing under a running grid, as a user meets it (no root needed: an
# LD_PRELOAD shim, enospc_preload.c, makes writes to the database fail with ENOSPC while a trigger
# file exists). Each check has a bounded wait and fails the test instead of hanging:
#   A. disk full in the middle of `kvgrid run`: the progress line says so, runs finished meanwhile
#      are recorded once space returns (one lease each: nothing recomputed), no result lost or
#      duplicated, metrics as a fault-free grid's;
#   B. the disk stays full: `kvgrid run --store-timeout` hands back and exits non-zero with the
#      reason; the next `kvgrid run` (space back) finishes, spooled results delivered once;
#   C. SIGTERM while the database gets I/O errors (EIO) ends `kvgrid run` within seconds;
#   D. a database with damaged pages: refused with its path and the way out before anything is
#      reported; `kvgrid db check|recover|backup` (the damaged file is never modified).
set -euo pipefail
# This test checks the pipeline, not timings: no waiting for a quiet machine when ctest runs
# tests side by side (the contention guard, docs/metrics.md).
export KVGRID_CONTENTION_WAIT_S=0
KVGRID=$1
SHIM=$2
dir=$(mktemp -d)
bg=""
cleanup() { [[ -n $bg ]] && kill -9 "$bg" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$dir"/*.log; do echo "--- $f" >&2; grep -v "store error" "$f" | tail -30 >&2; done; exit 1; }
export KVGRID_BLAS_CORETYPE=keep KVGRID_CACHE=$dir/cache

runs=16
cat > "$dir/grid.yaml" <<YAML
name: faults
model: {id: "random:pythia-70m"}
device: cpu
datasets:
  - {name: wikitext-2-raw-v1, split: test, samples: $runs}
workloads:
  noop: {ms: 1000}
grid:
  policy:
    - {name: full}
YAML

done_count() {  # runs done in $1 (read-only, no shim), or 0
  "$KVGRID" query "SELECT COUNT(*) FROM runs WHERE status = 'done'" --db "$1" --format csv 2>/dev/null | tail -1 || echo 0
}
wait_for() {  # wait_for SECONDS CONDITION...
  local limit=$1; shift
  for ((i = 0; i < limit * 10; i++)); do "$@" && return 0; sleep 0.1; done
  return 1
}
at_least_done() { [[ $(done_count "$1") -ge $2 ]]; }
running_after() {  # $2 runs done and one running (so a result is due during the fault)
  local running
  running=$("$KVGRID" query "SELECT COUNT(*) FROM runs WHERE status = 'running'" --db "$1" --format csv 2>/dev/null | tail -1 || echo 0)
  [[ $(done_count "$1") -ge $2 && $running -ge 1 ]]
}
exited() { ! kill -0 "$1" 2>/dev/null; }
# Every run done exactly once: one accepted record each, one lease each (nothing recomputed).
check_complete() {
  local db=$1 leases_per_run=$2
  [[ $(done_count "$db") -eq $runs ]] || fail "$db: $(done_count "$db")/$runs runs done"
  local records
  records=$("$KVGRID" query "SELECT COUNT(*) FROM result_records" --db "$db" --format csv | tail -1)
  [[ $records -eq $runs ]] || fail "$db: $records result records for $runs runs"
  if [[ $leases_per_run == one ]]; then
    local extra
    extra=$("$KVGRID" query "SELECT COUNT(*) FROM leases GROUP BY run_id HAVING COUNT(*) > 1" --db "$db" --format csv | tail -n +2 | wc -l)
    [[ $extra -eq 0 ]] || fail "$db: $extra run(s) leased more than once (recomputed)"
  fi
  local metrics
  metrics=$("$KVGRID" query "SELECT DISTINCT value FROM run_metrics WHERE metric = 'noop_ms'" --db "$db" --format csv | tail -n +2)
  [[ $metrics == 1000 ]] || fail "$db: noop_ms values '$metrics', expected only 1000"
  "$KVGRID" db check "$db" > /dev/null || fail "$db fails its integrity check"
}

# --- A: the disk fills mid-grid and space comes back ---------------------------------------
db=$dir/a.db
LD_PRELOAD=$SHIM KVGRID_FAULT_DB=$db KVGRID_FAULT_TRIGGER=$dir/full \
  "$KVGRID" run "$dir/grid.yaml" --executor noop --workers 2 --db "$db" -v > "$dir/a.out" 2> "$dir/a.log" &
bg=$!
wait_for 60 running_after "$db" 2 || fail "A: no run finished"
touch "$dir/full"
wait_for 30 grep -q "disk full" "$dir/a.log" || fail "A: the progress line never said 'disk full'"
sleep 3  # runs finish while the disk is full; their results must wait, not be dropped
rm "$dir/full"
wait_for 90 exited "$bg" || fail "A: kvgrid run did not finish after space returned"
wait "$bg" || fail "A: kvgrid run exited non-zero after the fault cleared"
bg=""
grep -q "store NOT accepting writes" "$dir/a.log" || fail "A: no store warning on the progress line"
check_complete "$db" one
grep -q "after [0-9]* tries" "$dir/a.log" || fail "A: no result was retried through the fault"
echo "A ok: $(grep -c 'result accepted' "$dir/a.log") results accepted, $(grep -c 'after [0-9]* tries' "$dir/a.log") after retries; $(grep -m1 -o 'disk full[^)]*)' "$dir/a.log")"

# --- B: the disk stays full past --store-timeout; the next run finishes ------------------------
db=$dir/b.db
LD_PRELOAD=$SHIM KVGRID_FAULT_DB=$db KVGRID_FAULT_TRIGGER=$dir/full \
  "$KVGRID" run "$dir/grid.yaml" --executor noop --workers 2 --db "$db" --store-timeout 3 -v > "$dir/b.out" 2> "$dir/b.log" &
bg=$!
wait_for 60 at_least_done "$db" 2 || fail "B: no run finished"
touch "$dir/full"
start=$SECONDS
wait_for 40 exited "$bg" || fail "B: kvgrid run did not give up within --store-timeout + 35 s"
rc=0; wait "$bg" || rc=$?; bg=""
[[ $rc -ne 0 ]] || fail "B: kvgrid run exited 0 although the database never recovered"
grep -q "has not accepted writes for" "$dir/b.log" || fail "B: the exit does not say why"
echo "B ok: gave up after $((SECONDS - start)) s with rc $rc: $(grep -m1 -o 'has not accepted writes for [0-9]* s' "$dir/b.log")"
rm "$dir/full"
spooled=$(find "$db.spool" -name '*.result' 2>/dev/null | wc -l)
"$KVGRID" run "$dir/grid.yaml" --executor noop --workers 2 --db "$db" -v > "$dir/b2.out" 2> "$dir/b2.log" \
  || fail "B: the rerun after space returned failed"
check_complete "$db" any
[[ $(find "$db.spool" -name '*.result' | wc -l) -eq 0 ]] || fail "B: results left in the spool after the rerun"
if [[ $spooled -gt 0 ]]; then
  [[ $(grep -c "offering the spooled result" "$dir/b2.log") -ge $spooled ]] || fail "B: spooled results were not offered"
fi
echo "B ok: $spooled result(s) finished during the fault were spooled and delivered by the rerun"
echo "B ok: rerun finished: $(grep -m1 "kvgrid run: faults" "$dir/b2.log")"

# --- C: SIGTERM while the database gets I/O errors ---------------------------------------------
db=$dir/c.db
LD_PRELOAD=$SHIM KVGRID_FAULT_DB=$db KVGRID_FAULT_TRIGGER=$dir/full KVGRID_FAULT_ERRNO=EIO \
  "$KVGRID" run "$dir/grid.yaml" --executor noop --workers 2 --db "$db" > "$dir/c.out" 2> "$dir/c.log" &
bg=$!
wait_for 60 at_least_done "$db" 1 || fail "C: no run finished"
touch "$dir/full"
wait_for 30 grep -q "I/O error" "$dir/c.log" || fail "C: the progress line never said 'I/O error'"
kill -TERM "$bg"
start=$SECONDS
wait_for 15 exited "$bg" || fail "C: one SIGTERM did not end kvgrid run within 15 s while the disk was full"
rc=0; wait "$bg" || rc=$?; bg=""
echo "C ok: SIGTERM ended kvgrid run in $((SECONDS - start)) s (rc $rc)"
rm "$dir/full"

# --- D: damaged pages ----------------------------------------------------------------------
good=$dir/a.db
"$KVGRID" db backup "$good" --out "$dir/backup.db" > /dev/null || fail "D: backup failed"
"$KVGRID" db check "$dir/backup.db" > /dev/null || fail "D: the backup fails its check"
[[ $(done_count "$dir/backup.db") -eq $runs ]] || fail "D: the backup lacks runs"
if "$KVGRID" db backup "$good" --out "$dir/backup.db" 2> "$dir/d.log"; then fail "D: backup overwrote a file"; fi
cp "$good" "$dir/bad.db"
pages=$(( $(stat -c %s "$dir/bad.db") / 4096 ))
python3 - "$dir/bad.db" "$pages" <<'PY'
import sys
path, pages = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:  # scramble the last page (a leaf of the last table written)
    p = pages - 1
    f.seek(p * 4096 + 8)
    f.write(bytes((i * 37 + p) % 256 for i in range(2000)))
PY
sum_before=$(sha256sum "$dir/bad.db" | cut -d' ' -f1)
for cmd in "report faults --db $dir/bad.db" "results faults --db $dir/bad.db --format json" \
           "run $dir/grid.yaml --executor noop --db $dir/bad.db"; do
  if $KVGRID $cmd > "$dir/d.out" 2> "$dir/d.log"; then fail "D: 'kvgrid $cmd' used a corrupt database"; fi
  grep -q "$dir/bad.db is corrupt" "$dir/d.log" || fail "D: 'kvgrid $cmd' did not name the corrupt file: $(cat "$dir/d.log")"
  grep -q "kvgrid db recover" "$dir/d.log" || fail "D: 'kvgrid $cmd' did not say how to recover"
  grep -q "runs (" "$dir/d.log" && fail "D: 'kvgrid $cmd' got as far as submitting"
done
if "$KVGRID" db check "$dir/bad.db" > /dev/null 2>&1; then fail "D: db check passed a damaged file"; fi
"$KVGRID" db recover "$dir/bad.db" --out "$dir/recovered.db" > "$dir/d.out" 2> "$dir/d.log" \
  || fail "D: recover failed: $(cat "$dir/d.log")"
"$KVGRID" db check "$dir/recovered.db" > /dev/null || fail "D: the recovered file fails its check"
[[ $(sha256sum "$dir/bad.db" | cut -d' ' -f1) == "$sum_before" ]] || fail "D: the damaged file was modified"
recovered=$("$KVGRID" query "SELECT COUNT(*) FROM runs" --db "$dir/recovered.db" --format csv | tail -1)
[[ $recovered -gt 0 ]] || fail "D: nothing was recovered from one damaged page"
echo "D ok: $(head -1 "$dir/d.out" | sed "s|$dir/||g")"
echo PASS
