#!/usr/bin/env bash
# Prints the path of the upstream `tsoracle` binary (crate tsoracle, version
# below, with the drivers and tools the interop test runs: `serve openraft`,
# `serve paxos`, `serve file` and `export file`), building it first when the
# cache lacks it.
#
# The cache lives outside the clone, under a name that carries the exact
# version and features (comma-separated as dashes):
#   ${TSORACLE_UPSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tsoracle-upstream}/tsoracle-<version>-<features>/bin/tsoracle
# so every clone and CI run on a machine shares one build (52 minutes cold
# for 2.4.0 with these features on 2 cores shared with other builds,
# instant afterwards). A fresh machine needs only the Rust
# toolchain: libclang (for RocksDB's bindgen) and a C++ compiler are
# installed with apt when missing, and protoc comes from this repository's
# tools/protoc. The upstream binary is only ever run as an external peer by
# the interop test; nothing of it is linked into the library.
set -euo pipefail

VERSION=${TSORACLE_UPSTREAM_VERSION:-2.4.0}
FEATURES=file,openraft,paxos,stopped-state-export
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
repo=$(dirname -- "$here")
cache=${TSORACLE_UPSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tsoracle-upstream}
root="$cache/tsoracle-$VERSION-${FEATURES//,/-}"
bin="$root/bin/tsoracle"

is_good() {
    [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "tsoracle $VERSION" ]
}

if is_good; then
    echo "$bin"
    exit 0
fi

mkdir -p "$cache"
# One build at a time per cache, even from concurrent CI jobs.
exec 9>"$cache/install-$VERSION.lock"
flock 9
if is_good; then
    echo "$bin"
    exit 0
fi

# Detect libclang the way clang-sys's build looks for it (find-libclang.sh),
# not by `ldconfig -p | grep libclang`, which libclang-cpp satisfies.
if ! libclang=$(bash "$here/find-libclang.sh") || ! command -v c++ >/dev/null; then
    echo "install-upstream: installing libclang-dev and clang (RocksDB's build needs them)" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev clang >&2
    libclang=$(bash "$here/find-libclang.sh") || {
        echo "install-upstream: no libclang.so clang-sys can use after installing libclang-dev" >&2
        exit 1
    }
fi
echo "install-upstream: libclang at $libclang" >&2

echo "install-upstream: building tsoracle $VERSION into $root (most of an hour on 2 cores)" >&2
started=$(date +%s)
LIBCLANG_PATH=$(dirname -- "$libclang") PROTOC="$repo/tools/protoc" cargo install tsoracle --version "=$VERSION" --locked \
    --no-default-features --features "$FEATURES" --root "$root" >&2
echo "install-upstream: built in $(( $(date +%s) - started )) s" >&2
is_good || { echo "install-upstream: $bin is not tsoracle $VERSION after the build" >&2; exit 1; }
echo "$bin"
