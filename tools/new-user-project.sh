#!/usr/bin/env bash
# A new user's project, made the way a user starting today makes one:
# `cargo new`, then today's tsoracle-server and tsoracle-client from crates.io
# (no lockfile of ours, so cargo resolves the newest releases) beside this
# crate by path. It must resolve, build, and serve: the program in
# tools/new-user-project/main.rs runs the real server on a FileDriver and the
# real client against it, twice on one directory.
#
# TSORACLE_NEW_USER_SERVER / _CLIENT override the requirements (default:
# the releases current when this was written, or newer).
set -euo pipefail
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
repo=$(dirname -- "$here")
work=$(mktemp -d "${TMPDIR:-/tmp}/tsoracle-new-user.XXXXXX")
trap 'rm -rf "$work"' EXIT

server=${TSORACLE_NEW_USER_SERVER:-3.3.1}
client=${TSORACLE_NEW_USER_CLIENT:-1.3.5}
cd "$work"
cargo new --quiet --vcs none app
cp "$here/new-user-project/main.rs" app/src/main.rs
# The toolchain a user has: ours, as rust-toolchain.toml names it.
cp "$repo/rust-toolchain.toml" app/
cd app
cargo add --quiet "tsoracle-server@$server" "tsoracle-client@$client" "tsoracle-consensus"
cargo add --quiet tsoracle-driver-file --path "$repo"
cargo add --quiet tokio --features macros,rt-multi-thread,net,sync
echo "new-user-project: resolved:"
cargo tree --depth 1 -e normal | grep -E 'tsoracle-(server|client|consensus|core|driver-file) ' | sed 's/^/  /'
# The repository's target directory: deps already built there are reused.
PROTOC="$repo/tools/protoc" cargo run --quiet --target-dir "$repo/target" -- "$work/state"
