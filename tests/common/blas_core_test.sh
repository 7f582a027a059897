#!/usr/bin/env bash
# kvgrid measures the machine as it is: forced onto OpenBLAS's generic "Prescott" kernels (what
# Debian's OpenBLAS 0.3.21 picks by itself on Intel family 6 model 207), kvgrid restarts itself
# on the kernels the CPU can run and records both cores in the result; KVGRID_BLAS_CORETYPE=keep
# keeps the choice. On a CPU without AVX2 there is nothing to correct, and the test says so.
set -euo pipefail
# This test checks the pipeline, not timings: no waiting for a quiet machine when ctest runs
# tests side by side (the contention guard, docs/metrics.md).
export KVGRID_CONTENTION_WAIT_S=0
KVGRID=$1
MODEL=$2
TEXT=$3
fail() { echo "FAIL: $*" >&2; exit 1; }
bench() {
  "$KVGRID" bench --model "$MODEL" --text "$TEXT" --prompt-tokens 16 --new-tokens 2 \
    --repeats 1 --warmup 0 --json 2>"$err"
}
err=$(mktemp)
trap 'rm -f "$err"' EXIT
env_of() { python3 -c 'import json,sys; e=json.load(sys.stdin)["environment"]; print(e.get(sys.argv[1], ""))' "$1"; }

out=$(bench)
core=$(env_of blas_core <<<"$out")
[ -n "$core" ] || fail "no blas_core in the result's environment"
[ -n "$(env_of blas <<<"$out")" ] || fail "no blas config in the environment"

if ! grep -qw avx2 /proc/cpuinfo; then
  echo "no AVX2 on this CPU: the generic core is right here; nothing to correct"
  exit 0
fi
out=$(OPENBLAS_CORETYPE=Prescott bench)
fixed=$(env_of blas_core <<<"$out")
[ "$fixed" != "Prescott" ] || fail "kvgrid kept the generic Prescott core on an AVX2 CPU"
[ "$(env_of blas_core_corrected_from <<<"$out")" = "Prescott" ] || fail "correction not recorded"
grep -q "restarting with OPENBLAS_CORETYPE=" "$err" || fail "the restart was not logged"

out=$(OPENBLAS_CORETYPE=Prescott KVGRID_BLAS_CORETYPE=keep bench)
[ "$(env_of blas_core <<<"$out")" = "Prescott" ] || fail "KVGRID_BLAS_CORETYPE=keep was not honoured"
[ -z "$(env_of blas_core_corrected_from <<<"$out")" ] || fail "keep recorded a correction"
echo "ok: default $core, Prescott corrected to $fixed, keep honoured"
