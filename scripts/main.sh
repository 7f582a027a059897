#!/usr/bin/env bash
# The main job: on a fresh Debian 12 machine, installs what kvgrid needs, builds it and runs an
# experiment grid on this machine (embedded coordinator + one local worker), printing the report.
#   scripts/main.sh                                  # experiments/quick.yaml, the real Pythia-70M
#   scripts/main.sh experiments/offline-demo.yaml   # no network needed
# Results go to ./kvgrid.db (query with `build/kvgrid query`, report with `build/kvgrid report`).
set -euo pipefail
cd "$(dirname "$0")/.."
grid=${1:-experiments/quick.yaml}
shift || true
scripts/setup-debian.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target kvgrid
exec build/kvgrid run "$grid" --workers 1 "$@"
