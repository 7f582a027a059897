#!/usr/bin/env bash
# Downloads (does not install) the Debian 12 .debs that kvgrid needs besides LibTorch, for a GPU
# machine that has a C++ toolchain, cmake, Python and PyTorch but not these libraries and has
# no package access. Run it on a connected Debian 12 (bookworm, amd64) machine after
# `apt-get update`; copy the repository including third_party_debs/ to the GPU machine, then run
# scripts/gpu/build-with-prefix.sh there (it unpacks the .debs into a prefix, never into /).
#
# The list: the roots below (what scripts/setup-debian.sh installs, minus LibTorch/BLAS, the
# toolchain, Python and the sqlite3 shell) and their Depends/PreDepends, resolved recursively with
#   apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks
#                     --no-replaces --no-enhances
# minus virtual packages, Essential packages and the C library / compiler runtime (EXCLUDE
# below): those must come from the GPU machine itself (a second libc or libstdc++ on
# LD_LIBRARY_PATH breaks programs).
# Idempotent: a .deb already present with the archive's SHA-256 is not fetched again; .debs in
# the folder that are no longer on the list are deleted; MANIFEST and SHA256SUMS are rewritten.
set -euo pipefail

usage() {
  cat <<EOF
usage: scripts/gpu/fetch-debs.sh [--list] [--dir DIR]

  --list     print the resolved package list and exit (downloads nothing)
  --dir DIR  where the .debs go (default: third_party_debs/ at the repository root; git-ignored)

environment:
  EXTRA_PKGS="cmake ..."  more root packages to fetch with their dependencies
EOF
}

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="$ROOT/third_party_debs"
LIST_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --list) LIST_ONLY=1; shift ;;
    --dir) DIR="${2:?--dir needs a folder}"; shift 2 ;;
    *) echo "fetch-debs: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

ROOTS=(
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libyaml-cpp-dev
  libsqlite3-dev
  libcurl4-openssl-dev libssl-dev libzip-dev
  libpcre2-dev libutf8proc-dev
  nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev
  libexpat1-dev
  pkg-config
)
# shellcheck disable=SC2206  # EXTRA_PKGS is a space-separated list on purpose
ROOTS+=(${EXTRA_PKGS:-})
# Provided by the GPU machine's own system and toolchain; never unpacked into the prefix.
EXCLUDE=(
  libc6 libc6-dev libc-dev-bin libc-bin linux-libc-dev libcrypt1 libcrypt-dev
  libnsl2 libnsl-dev libtirpc3 libtirpc-dev libtirpc-common rpcsvc-proto
  libgcc-s1 libstdc++6 gcc-12-base libstdc++-12-dev libgcc-12-dev
)

if ! command -v apt-cache >/dev/null || ! command -v apt-get >/dev/null; then
  echo "fetch-debs: needs apt-get and apt-cache (run it on Debian 12)" >&2
  exit 1
fi
if ! grep -q '^12' /etc/debian_version 2>/dev/null; then
  echo "fetch-debs: warning: this is not Debian 12; the .debs must match the GPU machine's" \
       "build recipe (scripts/setup-debian.sh targets Debian 12)" >&2
fi
if [ "$(dpkg --print-architecture)" != amd64 ]; then
  echo "fetch-debs: warning: architecture $(dpkg --print-architecture), not amd64" >&2
fi

# Resolve the closure; "<virtual>" lines and indented "Depends:" lines are dropped.
mapfile -t ALL < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
                     --no-breaks --no-replaces --no-enhances "${ROOTS[@]}" |
                   grep -v -e '^ ' -e '^<' | sed 's/:any$//' | sort -u)
if [ ${#ALL[@]} = 0 ]; then
  echo "fetch-debs: apt-cache resolved nothing (run apt-get update?)" >&2
  exit 1
fi
mapfile -t ESSENTIAL < <(apt-cache show --no-all-versions "${ALL[@]}" |
                         awk '/^Package:/ {p = $2} /^Essential: yes/ {print p}')
EXCLUDE+=("${ESSENTIAL[@]}")
PKGS=()
for p in "${ALL[@]}"; do
  skip=0
  for x in "${EXCLUDE[@]}"; do [ "$p" = "$x" ] && skip=1 && break; done
  [ $skip = 1 ] || PKGS+=("$p")
done

if [ $LIST_ONLY = 1 ]; then
  printf '%s\n' "${PKGS[@]}"
  echo "fetch-debs: ${#PKGS[@]} packages (${#ALL[@]} resolved, minus the excluded base ones)" >&2
  exit 0
fi

mkdir -p "$DIR"
# One line per package: 'URI' FILENAME SIZE SHA256:HEX (the file name apt-get download writes).
mapfile -t URIS < <(apt-get download --print-uris "${PKGS[@]}")
[ ${#URIS[@]} = ${#PKGS[@]} ] ||
  { echo "fetch-debs: apt-get gave ${#URIS[@]} URIs for ${#PKGS[@]} packages" >&2; exit 1; }
want=() missing=() sums=()
for line in "${URIS[@]}"; do
  read -r _uri file _size hash <<< "$line"
  sha="${hash#SHA256:}"
  want+=("$file")
  sums+=("$sha  $file")
  if [ -f "$DIR/$file" ] && [ "$(sha256sum "$DIR/$file" | cut -d' ' -f1)" = "$sha" ]; then
    continue
  fi
  missing+=("${file%%_*}")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "fetch-debs: downloading ${#missing[@]} of ${#want[@]} packages into $DIR" >&2
  (cd "$DIR" && apt-get download "${missing[@]}")
else
  echo "fetch-debs: all ${#want[@]} packages already in $DIR" >&2
fi

# Drop .debs that are not on the list any more (older versions would be unpacked too).
for f in "$DIR"/*.deb; do
  [ -e "$f" ] || continue
  base="$(basename "$f")"
  keep=0
  for w in "${want[@]}"; do [ "$w" = "$base" ] && keep=1 && break; done
  [ $keep = 1 ] || { echo "fetch-debs: removing stale $base" >&2; rm -f "$f"; }
done

printf '%s\n' "${sums[@]}" > "$DIR/SHA256SUMS"
printf '%s\n' "${want[@]}" > "$DIR/MANIFEST"
(cd "$DIR" && sha256sum --quiet -c SHA256SUMS) ||
  { echo "fetch-debs: checksum mismatch (see above)" >&2; exit 1; }
echo "fetch-debs: ${#want[@]} .debs in $DIR ($(du -sh "$DIR" | cut -f1)); checksums verified" >&2
