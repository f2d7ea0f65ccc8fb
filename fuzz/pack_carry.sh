#!/usr/bin/env bash
# Packs the built fuzz targets (symbols stripped: the tree that travels to the device machine is size-limited;
# findings are re-run here with symbols) and every shared library they load, glibc and its loader included, into
# <dest>/fuzzers.tar.xz (bin/, lib/), for a machine without the -dev packages. Run there as
#   lib/ld-linux-x86-64.so.2 --library-path lib bin/fuzz_<name> ...
# Usage: fuzz/pack_carry.sh <bin dir> <dest>
set -euo pipefail
BIN=${1:?usage: fuzz/pack_carry.sh <bin dir> <dest>}
DEST=${2:?}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib" "$DEST"
for b in "$BIN"/fuzz_*; do
  strip --strip-all -o "$STAGE/bin/$(basename "$b")" "$b"
  ldd "$b" | awk '/=> \// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' | while read -r lib; do
    cp -L -n "$lib" "$STAGE/lib/" 2>/dev/null || true
  done
done
tar cf - -C "$STAGE" bin lib | xz -9 -T2 >"$DEST/fuzzers.tar.xz"
ls -la "$DEST"
