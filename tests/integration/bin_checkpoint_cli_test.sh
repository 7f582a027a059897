#!/usr/bin/env bash
# `kvgrid score` on a folder holding only pytorch_model.bin (how Pythia's step revisions ship
# weights) gives Hugging Face's loss for the fixture's ids, as the safetensors folder does; a
# pytorch_model.bin whose pickle calls os.system is refused with an error naming the file and the
# global, and its payload never runs.
set -euo pipefail
KVGRID=$1
FIXTURES=$2   # tests/fixtures
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export KVGRID_BLAS_CORETYPE=keep  # no restart notice to filter

python3 - "$FIXTURES/models/tiny-neox-sequential/expected.json" "$dir" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
open(sys.argv[2] + "/ids.txt", "w").write(" ".join(map(str, d["input_ids"])))
open(sys.argv[2] + "/loss.txt", "w").write(repr(d["loss"]))
PY
hf_loss=$(cat "$dir/loss.txt")
for model in tiny-neox-sequential-bin tiny-neox-sequential; do
  out=$("$KVGRID" score --model "$FIXTURES/models/$model" --ids "$dir/ids.txt" --dtype float32 --threads 1 --json)
  python3 - "$out" "$hf_loss" "$model" <<'PY' || fail "$model: loss differs from Hugging Face's"
import json, sys
got = json.loads(sys.argv[1])
loss = got["nll_mean"]
want = float(sys.argv[2])
print(f"{sys.argv[3]}: loss {loss:.7f}, HF {want:.7f}")
sys.exit(0 if abs(loss - want) < 1e-4 else 1)
PY
done

marker=/tmp/kvgrid-pickle-payload-ran
rm -f "$marker"
mkdir "$dir/evil"
cp "$FIXTURES/models/tiny-neox-sequential-bin/config.json" "$dir/evil/"
cp "$FIXTURES/checkpoints/os_system.bin" "$dir/evil/pytorch_model.bin"
if "$KVGRID" score --model "$dir/evil" --ids "$dir/ids.txt" --json > "$dir/out" 2> "$dir/err"; then
  fail "a pytorch_model.bin calling os.system was loaded"
fi
grep -q "evil/pytorch_model.bin" "$dir/err" || fail "the error does not name the file: $(cat "$dir/err")"
grep -q "posix.system" "$dir/err" || fail "the error does not name the global: $(cat "$dir/err")"
[[ ! -e $marker ]] || fail "the pickle's payload ran ($marker exists)"
echo "refused: $(tail -1 "$dir/err")"
echo PASS
