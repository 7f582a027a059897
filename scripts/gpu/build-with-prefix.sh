#!/usr/bin/env bash
# Builds kvgrid with CUDA on a GPU machine that has no package access: unpacks the Debian 12 .debs
# fetched by scripts/gpu/fetch-debs.sh (third_party_debs/*.deb) into a private prefix with
# `dpkg -x` (default .gpu-prefix/ at the repository root; never /), points CMake at them and at
# the LibTorch bundled with the installed PyTorch (or at $LIBTORCH, an unzipped official LibTorch),
# and configures + builds into build-gpu/ (Release, -DKVGRID_WITH_CUDA=ON).
#
# Needs on the GPU machine: a C++ toolchain, cmake >= 3.25, glibc >= 2.36 (the .debs are Debian
# 12's), dpkg (or ar + tar), the CUDA toolkit (nvcc) matching torch.version.cuda (LibTorch's CMake
# config looks for it), and PyTorch with CUDA unless $LIBTORCH is set.
#
# ABI caveat: a PyTorch wheel is built with -D_GLIBCXX_USE_CXX11_ABI=0 (the pre-C++11 std::string)
# in older releases and in some builds, =1 in newer ones (the CUDA wheels switched to the cxx11
# ABI around torch 2.7; check, do not assume). Debian's gRPC, protobuf, abseil and yaml-cpp are
# built with ABI 1. This script prints torch._C._GLIBCXX_USE_CXX11_ABI; when it is 0 it passes
# -DCMAKE_CXX_FLAGS=-D_GLIBCXX_USE_CXX11_ABI=0 so that kvgrid at least agrees with torch, but the
# link against the ABI-1 Debian libraries will then fail (undefined std::string symbols): use the
# official cxx11-ABI LibTorch zip instead (LIBTORCH=/path/to/libtorch).
set -euo pipefail

usage() {
  cat <<EOF
usage: scripts/gpu/build-with-prefix.sh [options] [-- extra cmake arguments]

  --prefix DIR     where the .debs are unpacked (default: <repo>/.gpu-prefix; never /)
  --debs DIR       the .debs (default: <repo>/third_party_debs, from scripts/gpu/fetch-debs.sh)
  --build-dir DIR  CMake build folder (default: <repo>/build-gpu)
  --jobs N         parallel build jobs (default: nproc)
  --unpack-only    unpack and fix up the prefix, write <prefix>/env.sh, do not run cmake

environment:
  LIBTORCH=DIR     an unzipped official LibTorch (cxx11 ABI, CUDA) instead of PyTorch's
  PYTHON=python3   the Python whose torch provides LibTorch (when LIBTORCH is unset)

Afterwards: source <prefix>/env.sh (LD_LIBRARY_PATH, PATH), then run build-gpu/kvgrid.
EOF
}

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PREFIX="$ROOT/.gpu-prefix"
DEBS="$ROOT/third_party_debs"
BUILD="$ROOT/build-gpu"
JOBS="$(nproc 2>/dev/null || echo 4)"
UNPACK_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --prefix) PREFIX="${2:?--prefix needs a folder}"; shift 2 ;;
    --debs) DEBS="${2:?--debs needs a folder}"; shift 2 ;;
    --build-dir) BUILD="${2:?--build-dir needs a folder}"; shift 2 ;;
    --jobs) JOBS="${2:?--jobs needs a number}"; shift 2 ;;
    --unpack-only) UNPACK_ONLY=1; shift ;;
    --) shift; break ;;
    *) echo "build-with-prefix: unknown argument $1 (cmake arguments go after --)" >&2; exit 2 ;;
  esac
done
die() { echo "build-with-prefix: error: $*" >&2; exit 1; }
warn() { echo "build-with-prefix: warning: $*" >&2; }

mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd -P)"
case "$PREFIX" in
  /|/usr|/usr/local|/opt|/lib|/lib64) die "refusing prefix $PREFIX (use a private folder)" ;;
  *[#\ ]*) die "prefix $PREFIX: no spaces or '#' in the path, please" ;;
esac

# --- 1. unpack every .deb (once; start over when the set of .debs changed) ---
shopt -s nullglob
debs=("$DEBS"/*.deb)
[ ${#debs[@]} -gt 0 ] ||
  die "no .debs in $DEBS (run scripts/gpu/fetch-debs.sh on a connected Debian 12)"
stamps="$PREFIX/.unpacked"
if [ -d "$stamps" ]; then
  for s in "$stamps"/*.deb; do
    if [ ! -e "$DEBS/$(basename "$s")" ]; then
      echo "build-with-prefix: $(basename "$s") is gone from $DEBS: emptying $PREFIX" >&2
      find "$PREFIX" -mindepth 1 -delete
      break
    fi
  done
elif [ -n "$(ls -A "$PREFIX")" ]; then
  die "$PREFIX is not empty and was not made by this script"
fi
mkdir -p "$stamps"
printf '*\n' > "$PREFIX/.gitignore"  # keeps the prefix out of git wherever it lies
unpack() {  # dpkg -x, or ar + tar where there is no dpkg
  if command -v dpkg >/dev/null; then dpkg -x "$1" "$PREFIX"; return; fi
  local member
  member="$(ar t "$1" | grep '^data\.tar')" || die "$1: no data.tar member"
  case "$member" in
    *.xz) ar p "$1" "$member" | tar -xJ -C "$PREFIX" ;;
    *.zst) ar p "$1" "$member" | tar --zstd -x -C "$PREFIX" ;;
    *.gz) ar p "$1" "$member" | tar -xz -C "$PREFIX" ;;
    *) ar p "$1" "$member" | tar -x -C "$PREFIX" ;;
  esac
}
n=0
for deb in "${debs[@]}"; do
  stamp="$stamps/$(basename "$deb")"
  [ -e "$stamp" ] && continue
  unpack "$deb"
  : > "$stamp"
  n=$((n + 1))
done
echo "build-with-prefix: $PREFIX: $n .debs unpacked now, ${#debs[@]} in all" >&2

# --- 2. fix-ups: absolute symlinks into the prefix, .pc files pointing at the prefix ---
while IFS= read -r -d '' link; do
  target="$(readlink "$link")"
  case "$target" in "$PREFIX"/*) continue ;; esac
  if [ -e "$PREFIX$target" ]; then ln -sfn "$PREFIX$target" "$link"
  elif [ -e "$PREFIX/usr$target" ]; then ln -sfn "$PREFIX/usr$target" "$link"
  fi
done < <(find "$PREFIX" -type l -lname '/*' -print0)
for pc in "$PREFIX"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$PREFIX"/usr/lib/pkgconfig/*.pc \
          "$PREFIX"/usr/share/pkgconfig/*.pc; do
  grep -qF "$PREFIX/usr" "$pc" && continue  # already rewritten
  sed -i -E "s#(^[A-Za-z_]+=|-I|-L)/usr(/|\$)#\1$PREFIX/usr\2#g" "$pc"
done

LIBDIRS=""
for d in "$PREFIX/usr/lib/x86_64-linux-gnu" "$PREFIX/lib/x86_64-linux-gnu" "$PREFIX/usr/lib"; do
  [ -d "$d" ] && LIBDIRS="${LIBDIRS:+$LIBDIRS:}$d"
done
export LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PCDIRS="$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig:$PREFIX/usr/share/pkgconfig"
export PKG_CONFIG_PATH="$PCDIRS${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PATH="$PREFIX/usr/bin:$PATH"
cat > "$PREFIX/env.sh" <<EOF
# source this before running kvgrid built against $PREFIX
export LD_LIBRARY_PATH="$LIBDIRS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="$PREFIX/usr/bin:\$PATH"
EOF
for tool in protoc grpc_cpp_plugin; do
  [ -x "$PREFIX/usr/bin/$tool" ] || die "$tool missing from $PREFIX/usr/bin (incomplete .debs?)"
done
echo "build-with-prefix: protoc $(protoc --version) from $(command -v protoc)" >&2
echo "build-with-prefix: wrote $PREFIX/env.sh" >&2
[ "$UNPACK_ONLY" = 1 ] && exit 0

# --- 3. LibTorch: PyTorch's bundled one, or $LIBTORCH ---
command -v cmake >/dev/null || die "cmake not found (pip install cmake gives one)"
if [ -n "${LIBTORCH:-}" ]; then
  TORCH_PREFIX="$(cd "$LIBTORCH" && pwd)"
  cfg="$TORCH_PREFIX/share/cmake/Torch/TorchConfig.cmake"
  [ -f "$cfg" ] || die "LIBTORCH=$LIBTORCH has no share/cmake/Torch/TorchConfig.cmake"
  ABI="$(grep -o '_GLIBCXX_USE_CXX11_ABI=[01]' "$cfg" | head -n1 | cut -d= -f2)"
  version="$(cat "$TORCH_PREFIX/build-version" 2>/dev/null || echo '?')"
  echo "build-with-prefix: LibTorch $TORCH_PREFIX (build-version $version)" >&2
else
  PY="${PYTHON:-python3}"
  TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')" ||
    die "$PY cannot import torch; install PyTorch with CUDA or set LIBTORCH"
  ABI="$("$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
  echo "build-with-prefix: $("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA",
    torch.version.cuda, "cuda available:", torch.cuda.is_available())')" >&2
  echo "build-with-prefix: LibTorch CMake config in $TORCH_PREFIX" >&2
fi
echo "build-with-prefix: torch._C._GLIBCXX_USE_CXX11_ABI = ${ABI:-unknown}" >&2
ABI_FLAGS=()
if [ "${ABI:-1}" = 0 ]; then
  ABI_FLAGS=(-DCMAKE_CXX_FLAGS=-D_GLIBCXX_USE_CXX11_ABI=0)
  warn "this LibTorch uses the pre-C++11 ABI (0) but Debian's gRPC/protobuf/abseil/yaml-cpp" \
       "use ABI 1: expect undefined std::string symbols at link time. Use the official" \
       "cxx11-ABI LibTorch zip instead: LIBTORCH=/path/to/libtorch $0"
fi
command -v nvcc >/dev/null || [ -n "${CUDACXX:-}" ] || [ -n "${CUDA_HOME:-}" ] ||
  warn "nvcc not on PATH and CUDA_HOME unset: LibTorch's CMake config may not find CUDA"

# --- 4. configure + build ---
LINK_DIRS="${LIBDIRS//:/;}"
set -x
cmake -S "$ROOT" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  -DKVGRID_WITH_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX/usr;$PREFIX/usr/lib/x86_64-linux-gnu/cmake" \
  -DCMAKE_LIBRARY_PATH="$LINK_DIRS" \
  -DProtobuf_PROTOC_EXECUTABLE="$PREFIX/usr/bin/protoc" \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$LIBDIRS" \
  -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath-link,$LIBDIRS" \
  "${ABI_FLAGS[@]}" "$@"
cmake --build "$BUILD" -j "$JOBS"
{ set +x; } 2>/dev/null
echo "build-with-prefix: built $BUILD/kvgrid; before running it: source $PREFIX/env.sh" >&2
