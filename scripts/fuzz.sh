#!/usr/bin/env bash
# Builds the libFuzzer targets (grid YAML parser, safetensors header parser, state-dict unpickler) with Debian's clang
# in build-fuzz/ and runs each for a short while from its corpus in the repository (CI: 20 s each).
#   scripts/fuzz.sh            # after scripts/setup-debian.sh
# Longer runs: build-fuzz/tests/grid/grid_fuzz tests/grid/corpus -max_total_time=600
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
      -DCMAKE_CXX_COMPILER=clang++ -DKVGRID_BUILD_FUZZERS=ON > build-fuzz.log 2>&1 ||
  { cat build-fuzz.log; exit 1; }
cmake --build build-fuzz -j"$(nproc)" --target grid_fuzz safetensors_fuzz state_dict_pickle_fuzz
ctest --test-dir build-fuzz --output-on-failure -L fuzz
