#!/usr/bin/env bash
# Checks find-libclang.sh against fake machines: the detection that decides
# whether install-upstream.sh installs libclang-dev must say "missing" on a
# fresh Debian machine (only libclang-cpp.so.14, plus the runtime's suffixed
# libclang.so.1) and "present" once an unversioned libclang is there.
set -euo pipefail
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
fake=$(mktemp -d "${TMPDIR:-/tmp}/find-libclang.XXXXXX")
trap 'rm -rf "$fake"' EXIT
failures=0
passes=0

expect() { # expect present|missing WHAT
    local want=$1 what=$2 got
    if FIND_LIBCLANG_ROOT="$fake" bash "$here/find-libclang.sh" >/dev/null; then got=present; else got=missing; fi
    if [ "$got" = "$want" ]; then
        passes=$((passes + 1))
    else
        echo "find-libclang: $what: expected $want, got $got" >&2
        failures=$((failures + 1))
    fi
}

multiarch="$fake/usr/lib/x86_64-linux-gnu"
mkdir -p "$multiarch" "$fake/usr/lib/llvm-14/lib"
expect missing "an empty machine"

touch "$multiarch/libclang-cpp.so.14"
ln -s libclang-cpp.so.14 "$multiarch/libclang-cpp.so"
expect missing "a fresh Debian machine (libclang-cpp only)"

touch "$multiarch/libclang-14.so.1" "$fake/usr/lib/llvm-14/lib/libclang.so.1"
expect missing "the runtime package alone (suffixed names clang-sys's build ignores)"

ln -s /nonexistent/libclang-14.so.1 "$fake/usr/lib/llvm-14/lib/libclang.so"
expect missing "a dangling libclang.so"
rm "$fake/usr/lib/llvm-14/lib/libclang.so"

ln -s libclang.so.1 "$fake/usr/lib/llvm-14/lib/libclang.so"
expect present "libclang-14-dev (llvm-14/lib/libclang.so)"
rm "$fake/usr/lib/llvm-14/lib/libclang.so"

ln -s libclang-14.so.1 "$multiarch/libclang-14.so"
expect present "a versioned libclang-14.so in the multiarch directory"

echo "find-libclang: $passes passed, $failures failed"
[ "$failures" = 0 ]
