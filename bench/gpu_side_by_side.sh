#!/usr/bin/env bash
# kvgrid vs Hugging Face transformers on one CUDA GPU, in the same run, same prompt ids.
#
# For each prompt length P (default 512 2048) it runs, one after the other on the same device:
#   $KVGRID bench --model DIR --ids IDS --prompt-tokens P --new-tokens 128 --repeats 5 --warmup 2 \
#          --dtype float16 --device cuda --json
#   python3 bench/hf_baseline.py  (the same arguments)
# then prints a markdown table (median TTFT, TPOT, decode throughput, peak allocated memory) and
# the TPOT ratio HF/kvgrid. Both engines read the same token ids (default: the first P of the
# 4,477 wikitext-2 test ids in tests/fixtures/tokenizer/wikitext-20k.ids), so tokenisation plays
# no part. Metric definitions: shared docs/metrics.md. Each engine's raw JSON is kept in OUTDIR.
set -euo pipefail

usage() {
  cat <<EOF
usage: bench/gpu_side_by_side.sh [--ids FILE] MODEL_DIR

  MODEL_DIR   Hub-layout checkpoint directory (config.json, model.safetensors, tokenizer.json)
  --ids FILE  whitespace-separated prompt token ids, at least max(PROMPTS) of them
              (default: tests/fixtures/tokenizer/wikitext-20k.ids, GPT-NeoX/Pythia ids)

environment (defaults):
  KVGRID=<repo>/build/kvgrid  PROMPTS="512 2048"  NEW_TOKENS=128  REPEATS=5  WARMUP=2
  DTYPE=float16  DEVICE=cuda  PYTHON=python3  OUTDIR=(a new temporary directory)
EOF
}

CMDLINE="$0 $*"
IDS=""
MODEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --ids) IDS="${2:?--ids needs a file}"; shift 2 ;;
    -*) echo "gpu_side_by_side: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$MODEL" ] || { usage >&2; exit 2; }; MODEL="$1"; shift ;;
  esac
done
[ -n "$MODEL" ] || { usage >&2; exit 2; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KVGRID="${KVGRID:-$ROOT/build/kvgrid}"
PROMPTS="${PROMPTS:-512 2048}"
NEW_TOKENS="${NEW_TOKENS:-128}"
REPEATS="${REPEATS:-5}"
WARMUP="${WARMUP:-2}"
DTYPE="${DTYPE:-float16}"
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python3}"
OUTDIR="${OUTDIR:-$(mktemp -d -t kvgrid-side-by-side.XXXXXX)}"
mkdir -p "$OUTDIR"

if [ -z "$IDS" ]; then
  for f in "$ROOT"/tests/fixtures/tokenizer/wikitext-20k.ids \
           "$ROOT"/../shared/fixtures/tokenizer/wikitext-20k.ids; do
    if [ -f "$f" ]; then IDS="$f"; break; fi
  done
fi
if [ -z "$IDS" ] || [ ! -f "$IDS" ]; then
  echo "gpu_side_by_side: no prompt ids file '$IDS'; pass --ids FILE" >&2
  exit 1
fi
if [ ! -x "$KVGRID" ]; then
  echo "gpu_side_by_side: $KVGRID is not an executable (set KVGRID=)" >&2
  exit 1
fi
[ -f "$MODEL/config.json" ] || { echo "gpu_side_by_side: $MODEL has no config.json" >&2; exit 1; }

echo "# kvgrid vs transformers, $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
echo
echo "command: $CMDLINE"
echo "settings: KVGRID=$KVGRID PROMPTS=\"$PROMPTS\" NEW_TOKENS=$NEW_TOKENS REPEATS=$REPEATS" \
     "WARMUP=$WARMUP DTYPE=$DTYPE DEVICE=$DEVICE ids=$IDS"
echo "kvgrid commit: $(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 |
         paste -sd ';')" || true
  echo "gpu (name, driver): $gpu"
else
  echo "gpu: nvidia-smi not found"
fi
echo "raw JSON: $OUTDIR"
echo

read -r -a PROMPT_LIST <<< "$PROMPTS"
for P in "${PROMPT_LIST[@]}"; do
  args=(--model "$MODEL" --ids "$IDS" --prompt-tokens "$P" --new-tokens "$NEW_TOKENS"
        --repeats "$REPEATS" --warmup "$WARMUP" --dtype "$DTYPE" --device "$DEVICE")
  echo "running: $KVGRID bench ${args[*]} --json" >&2
  "$KVGRID" bench "${args[@]}" --json > "$OUTDIR/kvgrid-$P.json"
  echo "running: $PYTHON $ROOT/bench/hf_baseline.py ${args[*]}" >&2
  "$PYTHON" "$ROOT/bench/hf_baseline.py" "${args[@]}" > "$OUTDIR/hf-$P.json"
done

"$PYTHON" - "$OUTDIR" "${PROMPT_LIST[@]}" <<'EOF'
import json, os, sys

outdir, prompts = sys.argv[1], sys.argv[2:]
def load(name):
    with open(os.path.join(outdir, name)) as f:
        return json.load(f)

print("| engine | prompt | TTFT ms | TPOT ms | throughput tok/s | peak memory MiB |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
ratios = []
for p in prompts:
    runs = {"kvgrid": load(f"kvgrid-{p}.json"), "hf-transformers": load(f"hf-{p}.json")}
    for engine, r in runs.items():
        print(f"| {engine} | {p} | {r['ttft_ms']:.2f} | {r['tpot_ms']:.3f} | "
              f"{r['throughput_tok_s']:.1f} | {r['peak_memory_bytes'] / 2**20:.1f} |")
    k, h = runs["kvgrid"]["tpot_ms"], runs["hf-transformers"]["tpot_ms"]
    ratios.append(f"P={p}: {h / k:.2f}" if k > 0 else f"P={p}: n/a")
print()
print("TPOT ratio HF/kvgrid (>1: kvgrid faster per token): " + ", ".join(ratios))
for p in prompts:
    for name in (f"kvgrid-{p}.json", f"hf-{p}.json"):
        e = load(name).get("environment", {})
        print(f"- {name}: device {e.get('device')} ({e.get('device_name')}), "
              f"dtype {e.get('dtype')}, memory: {e.get('memory_metric')}, "
              f"repeats {load(name).get('repeats')}")
EOF
