#!/usr/bin/env bash
# The test command: on a fresh Debian 12 machine, installs what kvgrid needs (apt-get), builds it
# (Release, build/) and runs every test with ctest. Usage: scripts/test.sh [extra ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" "$@"
# The libFuzzer targets (grid YAML, safetensors header, state-dict unpickler), built with clang, 20 s each.
scripts/fuzz.sh
