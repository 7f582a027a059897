#!/usr/bin/env bash
# llama.cpp's numbers for the same shape, by llama.cpp's own benchmark (llama-bench), so a README
# comparison row comes from a committed command. Needs a llama-bench binary and a GGUF of
# Pythia-70M (llama.cpp's convert_hf_to_gguf.py on EleutherAI/pythia-70m-deduped, or on the
# random model of `kvgrid init-random-model --preset pythia-70m`); neither ships with kvgrid.
#   bench/llama_bench.sh LLAMA_BENCH MODEL.gguf [THREADS]
# Prints llama-bench's markdown: pp512 / pp2048 (prompt tokens/s; TTFT ≈ 1000 · P / (t/s) ms) and
# tg128 (generated tokens/s from an empty cache; TPOT ≈ 1000 / (t/s) ms), 5 repetitions each,
# plus the command and the machine. Compare only with kvgrid numbers measured in the same session.
set -euo pipefail
BIN=${1:?usage: bench/llama_bench.sh LLAMA_BENCH MODEL.gguf [THREADS]}
GGUF=${2:?usage: bench/llama_bench.sh LLAMA_BENCH MODEL.gguf [THREADS]}
THREADS=${3:-$(nproc)}
[ -x "$BIN" ] || { echo "llama_bench.sh: $BIN is not an executable llama-bench" >&2; exit 2; }
[ -r "$GGUF" ] || { echo "llama_bench.sh: cannot read $GGUF" >&2; exit 2; }
echo "command: $BIN -m $GGUF -p 512,2048 -n 128 -t $THREADS -r 5 -o md"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores; $(date -u +%FT%TZ)"
"$BIN" -m "$GGUF" -p 512,2048 -n 128 -t "$THREADS" -r 5 -o md
