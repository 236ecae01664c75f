#!/bin/sh
# The side-by-side benchmark in one command (needs root: it runs the
# snapshotters; nothing is mounted):
#
#   bench/run.sh [wasmsnap bench flags...]      e.g. bench/run.sh --depth 64 --runs 7
#
# Builds wasmsnap (release) and the peer (containerd's own overlayfs and
# native snapshotters behind a tiny Go server, tests/peer, built offline from
# Debian's packages), then runs `wasmsnap bench --compare`: both servers on
# fresh roots under target/tmp/bench (the repository's disk), the same
# workload against each, runs interleaved, plus the floor loop there, and
# prints per snapshotter the table with the ratios. See docs/performance.md.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build --release -p wasmsnap
peer=$(tests/conformance/run.sh peer)
mkdir -p target/tmp/bench
exec target/release/wasmsnap bench --compare --peer "$peer" --dir target/tmp/bench "$@"
