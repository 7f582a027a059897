#!/usr/bin/env bash
# A grid whose `model` is a list — random Pythia-70M and Pythia-160M shapes — runs through
# `kvgrid run` (one run per model × policy), stores each run under its model, and the report
# groups by model, naming it in each table's title.
set -euo pipefail
# This test checks the pipeline, not timings: no waiting for a quiet machine when ctest runs
# tests side by side (the contention guard, docs/metrics.md).
export KVGRID_CONTENTION_WAIT_S=0
KVGRID=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export KVGRID_CACHE=$dir/cache KVGRID_BLAS_CORETYPE=keep

python3 -c "print(' '.join(str((i * 7919) % 50000) for i in range(48)))" > "$dir/ids.txt"
cat > "$dir/grid.yaml" <<YAML
name: sweep-e2e
model: ["random:pythia-70m", {id: "random:pythia-160m", dtype: float16}]
device: cpu
threads: 1
datasets:
  - {name: ids, path: "$dir/ids.txt"}
workloads:
  perplexity: {protocol: streaming, max_tokens: 48}
grid:
  policy:
    - {name: full}
    - {name: window, window: 16}
YAML
"$KVGRID" run "$dir/grid.yaml" --workers 1 --db "$dir/k.db" > "$dir/run.log" 2>&1 \
  || fail "kvgrid run failed: $(tail -5 "$dir/run.log")"
"$KVGRID" results sweep-e2e --db "$dir/k.db" --format json > "$dir/results.json"
python3 - "$dir/results.json" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
got = {}
for r in runs:
    assert r["status"] == "done", (r["model"] if "model" in r else r, r["status"], r.get("error"))
    model = r["spec"]["model"]["id"] if "spec" in r else r["model"]
    got[(model, r["policy"].split(":")[0])] = r["metrics"]["ppl"]
want = {(m, p) for m in ("random:pythia-70m", "random:pythia-160m") for p in ("full", "window")}
if set(got) != want:
    raise SystemExit("FAIL: runs %s, expected %s" % (sorted(got), sorted(want)))
if got[("random:pythia-70m", "full")] == got[("random:pythia-160m", "full")]:
    raise SystemExit("FAIL: both models gave the same PPL")
print("ok:", {f"{m} {p}": round(v, 1) for (m, p), v in sorted(got.items())})
PY
"$KVGRID" report sweep-e2e --db "$dir/k.db" --out "$dir/report.md" > /dev/null
for m in random:pythia-70m random:pythia-160m; do
  grep -q "^#.*$m" "$dir/report.md" || fail "the report has no table titled with $m"
done
[[ -d $KVGRID_CACHE/models/random-pythia-160m-seed0 ]] || fail "no random pythia-160m checkpoint was made"
echo PASS
