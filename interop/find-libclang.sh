#!/usr/bin/env bash
# Prints the path of a libclang that RocksDB's build (bindgen, through the
# clang-sys crate) can link, and exits 1 when there is none.
#
# clang-sys's build script does not ask the dynamic loader: it globs for the
# unversioned names `libclang.so` and `libclang-<version>.so` in LIBCLANG_PATH,
# in `llvm-config --libdir` and in the usual library directories. A suffixed
# `libclang.so.1`, which the runtime package ships, is not accepted there, and
# `libclang-cpp.so.14` (the C++ API, installed by default on Debian with gcc's
# neighbours) is not libclang at all. Matching `ldconfig -p | grep libclang`
# therefore said "present" on a fresh machine whose build then failed with
# "couldn't find any valid shared libraries matching: ['libclang.so',
# 'libclang-*.so']".
#
# FIND_LIBCLANG_ROOT (default: /) prefixes every system directory, so a test
# can build a fake machine in a temporary directory; with it set, the
# environment's LIBCLANG_PATH and llvm-config are ignored.
set -euo pipefail
shopt -s nullglob

root=${FIND_LIBCLANG_ROOT:-}
dirs=()
if [ -z "$root" ]; then
    if [ -n "${LIBCLANG_PATH:-}" ]; then dirs+=("$LIBCLANG_PATH"); fi
    if command -v llvm-config >/dev/null 2>&1; then
        dirs+=("$(llvm-config --libdir 2>/dev/null || true)")
    fi
fi
for pattern in \
    "$root/usr/local/lib" "$root/usr/lib" "$root/usr/lib64" \
    "$root/usr/lib/"*-linux-gnu "$root/usr/lib64/"*-linux-gnu \
    "$root/usr/lib/llvm"*/lib "$root/usr/local/llvm"*/lib \
    "$root/usr/local/lib/llvm"*/lib; do
    dirs+=("$pattern")
done

for dir in "${dirs[@]}"; do
    [ -n "$dir" ] && [ -d "$dir" ] || continue
    for candidate in "$dir"/libclang.so "$dir"/libclang-*.so; do
        name=${candidate##*/}
        # libclang-14.so, libclang-14.0.6.so: a version, not libclang-cpp.so.
        if [ "$name" != libclang.so ]; then
            version=${name#libclang-}
            version=${version%.so}
            [[ "$version" =~ ^[0-9][0-9.]*$ ]] || continue
        fi
        # A dangling symlink (the -dev package without its runtime) is no use.
        [ -e "$candidate" ] || continue
        echo "$candidate"
        exit 0
    done
done
exit 1
