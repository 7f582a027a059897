#!/usr/bin/env bash
# The real engine through the whole system: `kvgrid run` (embedded coordinator, a local worker
# with the LibTorch executor, SQLite) on the HF fixture model. The streaming PPL of `full` stored
# in the database must be exp(HF's loss) for the fixture's ids, and a compressing policy's run
# must store its KV bytes (smaller than full's) and its paired baseline; a second grid crosses
# eviction policies with KIVI's kv_dtype and checks both axes end to end. Nothing here is a stub:
# the integration tests in rpc_integration_test.cc swap the engine for a null executor.
set -euo pipefail
# This test checks the pipeline, not timings: no waiting for a quiet machine when ctest runs
# tests side by side (the contention guard, docs/metrics.md).
export KVGRID_CONTENTION_WAIT_S=0
KVGRID=$1
FIXTURE=$2   # tests/fixtures/models/tiny-neox-pythia-like
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# The fixture's input ids and HF's loss, read from expected.safetensors (header JSON + raw data).
python3 - "$FIXTURE/expected.safetensors" "$dir/ids.txt" "$dir/loss.txt" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
def tensor(name):
    t = header[name]
    a, b = t["data_offsets"]
    return t, raw[8 + n + a: 8 + n + b]
t, data = tensor("input_ids")
ids = list(struct.unpack("<%dq" % (len(data) // 8), data))
# More ids after the fixture's own (a fixed pseudo-random sequence below Pythia's vocabulary), so
# the generation prompt is long enough for a policy's cache to be visibly smaller.
x = 12345
for _ in range(300):
    x = (x * 1103515245 + 12345) % 2**31
    ids.append(x % 50000)
open(sys.argv[2], "w").write(" ".join(map(str, ids)) + "\n")
t, data = tensor("loss")
open(sys.argv[3], "w").write(repr(struct.unpack("<f", data)[0]))
PY
tokens=24  # the fixture's ids: HF's loss is over these

cat > "$dir/grid.yaml" <<YAML
name: engine-e2e
model: {id: "$FIXTURE", dtype: float32}
device: cpu
repeats: 2
warmup: 0
datasets:
  - {name: ids, path: "$dir/ids.txt"}
workloads:
  perplexity: {protocol: streaming, max_tokens: $tokens}
  generation: {prompt_tokens: 256, new_tokens: 4}
grid:
  policy:
    - {name: full}
    - {name: streaming_llm, sink_tokens: 2, window: 6}
    - {name: expected_attention, budget: 64, interval: 8}
    - {name: chunkkv, budget: 64, chunk_length: 8, inner: keydiff, interval: 8}
YAML
"$KVGRID" run "$dir/grid.yaml" --workers 1 --db "$dir/k.db" > "$dir/run.log" 2>&1 \
  || fail "kvgrid run failed: $(tail -5 "$dir/run.log")"
"$KVGRID" results engine-e2e --db "$dir/k.db" --format json > "$dir/results.json"

python3 - "$dir/results.json" "$(cat "$dir/loss.txt")" <<'PY'
import json, math, sys
runs = json.load(open(sys.argv[1]))
loss = float(sys.argv[2])
def run(policy, workload):
    for r in runs:
        if r["workload"] == workload and r["policy"].startswith(policy):
            assert r["status"] == "done", (policy, workload, r["status"], r["error"])
            return r["metrics"]
    raise SystemExit("FAIL: no %s %s run" % (policy, workload))
full_ppl = run("full", "perplexity")["ppl"]
if abs(full_ppl / math.exp(loss) - 1) > 1e-4:
    raise SystemExit("FAIL: stored full streaming PPL %r != exp(HF loss) %r" % (full_ppl, math.exp(loss)))
full = run("full", "generation")
sl = run("streaming_llm", "generation")
if not (0 < sl["kv_bytes_end"] < full["kv_bytes_end"]):
    raise SystemExit("FAIL: streaming_llm KV bytes %r not below full's %r" % (sl["kv_bytes_end"], full["kv_bytes_end"]))
for k in ("baseline_ttft_ms", "delta_ttft_pct", "delta_tpot_pct_ci_low", "delta_tpot_pct_ci_high"):
    if k not in sl:
        raise SystemExit("FAIL: the policy run stored no %s" % k)
# The kvpress scorers added later run for real through the pipeline too: PPL (their decoding
# variant, every 8 tokens) and a generation whose cache ends at most at the budget.
for policy in ("expected_attention", "chunkkv"):
    ppl = run(policy, "perplexity")["ppl"]
    if not (math.isfinite(ppl) and ppl > 1):
        raise SystemExit("FAIL: %s stored PPL %r" % (policy, ppl))
    g = run(policy, "generation")
    if not (0 < g["kv_bytes_end"] < full["kv_bytes_end"]):
        raise SystemExit("FAIL: %s KV bytes %r not below full's %r" % (policy, g["kv_bytes_end"], full["kv_bytes_end"]))
print("ok: PPL %.6f = exp(HF loss %.6f); KV end %d < %d bytes; paired baseline stored"
      % (full_ppl, loss, sl["kv_bytes_end"], full["kv_bytes_end"]))
PY

# KV quantisation as its own axis: every policy x every kv_dtype through `kvgrid run`, stored,
# reported. The fixture's heads have 16 channels, so groups of 8.
cat > "$dir/kivi.yaml" <<YAML
name: kivi-e2e
model: {id: "$FIXTURE", dtype: float32}
device: cpu
repeats: 2
warmup: 0
kv_dtype: [model, "int4:group=8,residual=16", "int2:group=8,residual=16"]
datasets:
  - {name: ids, path: "$dir/ids.txt"}
workloads:
  perplexity: {protocol: streaming, max_tokens: 96}
  generation: {prompt_tokens: 256, new_tokens: 4}
grid:
  policy:
    - {name: full}
    - {name: streaming_llm, sink_tokens: 4, window: 60}
YAML
"$KVGRID" run "$dir/kivi.yaml" --workers 1 --db "$dir/k.db" > "$dir/kivi.log" 2>&1 \
  || fail "kvgrid run (kv_dtype grid) failed: $(tail -5 "$dir/kivi.log")"
"$KVGRID" results kivi-e2e --db "$dir/k.db" --format json > "$dir/kivi.json"
"$KVGRID" report kivi-e2e --db "$dir/k.db" --out "$dir/kivi-report.md" > "$dir/report.log" 2>&1 \
  || fail "kvgrid report failed: $(tail -5 "$dir/report.log")"
grep -q "KV dtype" "$dir/kivi-report.md" || fail "the report has no KV dtype column"
grep -q "int2:group=8,residual=16" "$dir/kivi-report.md" || fail "the report lacks the int2 rows"
python3 - "$dir/kivi.json" <<'PY'
import json, math, sys
runs = json.load(open(sys.argv[1]))
assert len(runs) == 12, len(runs)
def metrics(policy, kv, workload):
    for r in runs:
        if (r["workload"] == workload and r["policy"].startswith(policy)
                and r["spec"].get("kv_dtype", "model") == kv):
            assert r["status"] == "done", (policy, kv, workload, r["status"], r["error"])
            return r["metrics"]
    raise SystemExit("FAIL: no %s %s %s run" % (policy, kv, workload))
for policy in ("full", "streaming_llm"):
    m, q4, q2 = (metrics(policy, kv, "perplexity") for kv in
                 ("model", "int4:group=8,residual=16", "int2:group=8,residual=16"))
    if not (q2["kv_bytes_peak"] < q4["kv_bytes_peak"] < m["kv_bytes_peak"]):
        raise SystemExit("FAIL: %s KV peak bytes do not fall with the bits: %r %r %r"
                         % (policy, m["kv_bytes_peak"], q4["kv_bytes_peak"], q2["kv_bytes_peak"]))
    if not (math.isfinite(q2["ppl"]) and q2["ppl"] != m["ppl"]):
        raise SystemExit("FAIL: %s int2 streaming PPL %r vs %r: not quantised?" % (policy, q2["ppl"], m["ppl"]))
    g = metrics(policy, "int4:group=8,residual=16", "generation")
    if not (0 < g["kv_bytes_end"] < metrics(policy, "model", "generation")["kv_bytes_end"]):
        raise SystemExit("FAIL: %s int4 generation KV end bytes not below the float cache's" % policy)
    for k in ("baseline_tpot_ms", "delta_tpot_pct", "delta_tpot_pct_ci_low"):
        if k not in g:  # full + int4 too: the float full cache timed beside it
            raise SystemExit("FAIL: %s int4 generation stored no %s" % (policy, k))
print("ok: kv_dtype x policy grid: 12 runs, KV bytes fall with the bits, paired baselines stored")
PY
