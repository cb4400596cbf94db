#!/usr/bin/env bash
# The interop test: tsoracle-file's migrate against real three-node
# `tsoracle serve openraft` and `serve paxos` clusters on loopback, and
# back, and upstream's `export file` and `serve file` on a directory ours
# served. Run from .ci/run.
#
# Builds (or finds in its cache) the upstream binary, builds our
# `tsoracle-file` (feature migrate) and `embedded-server`, then runs the
# harness in interop/src/main.rs, bounded by a timeout. The work directory
# (state directories, every process's log, figures.json) is removed on
# success (kept with TSORACLE_INTEROP_KEEP=1) and kept, with its path
# printed, on failure.
set -euo pipefail
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
repo=$(dirname -- "$here")
cd "$repo"   # so cargo finds .cargo/config.toml (PROTOC)

started=$(date +%s)
upstream=$("$here/install-upstream.sh")
echo "interop: upstream $("$upstream" --version) at $upstream"

cargo build --features migrate --bin tsoracle-file --example embedded-server
# The harness shares the repository's target directory: same Cargo.lock,
# so the gRPC crates are not compiled twice.
(cd "$here" && cargo fmt -- --check && cargo build --target-dir "$repo/target")

work=$(mktemp -d "${TMPDIR:-/tmp}/tsoracle-interop.XXXXXX")
status=0
timeout --signal=KILL "${TSORACLE_INTEROP_TIMEOUT:-600}" \
    "$repo/target/debug/tsoracle-file-interop" \
    --upstream "$upstream" \
    --server "$repo/target/debug/examples/embedded-server" \
    --cli "$repo/target/debug/tsoracle-file" \
    --work "$work" || status=$?
if [ "$status" = 0 ]; then
    if [ -z "${TSORACLE_INTEROP_KEEP:-}" ]; then
        rm -rf "$work"
        echo "interop: passed; $(( $(date +%s) - started )) s including builds"
    else
        echo "interop: passed; $(( $(date +%s) - started )) s including builds; work directory $work"
    fi
else
    echo "interop: FAILED (exit $status); logs kept in $work" >&2
fi
exit "$status"
