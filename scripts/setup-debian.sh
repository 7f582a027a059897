#!/usr/bin/env bash
# Installs every Debian 12 package kvgrid needs to build, test and run (CPU build).
# Idempotent; run as root (or with sudo available).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake pkg-config git
  libtorch-dev libopenblas0-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libsqlite3-dev sqlite3
  libabsl-dev libyaml-cpp-dev
  libcurl4-openssl-dev libssl-dev libzip-dev
  libpcre2-dev libutf8proc-dev
  nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev
  python3 clang libclang-rt-14-dev
  libexpat1-dev
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# OpenBLAS with OpenMP shares torch's thread pool; make it the BLAS alternative.
lib=$(ls /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 2>/dev/null || true)
if [ -n "$lib" ]; then
  $SUDO update-alternatives --set libblas.so.3-x86_64-linux-gnu "$lib" >/dev/null 2>&1 || true
  lap=/usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so.3
  [ -f "$lap" ] && { $SUDO update-alternatives --set liblapack.so.3-x86_64-linux-gnu "$lap" >/dev/null 2>&1 || true; }
fi
