#!/bin/sh
# The side-by-side benchmark in one command (needs root: it runs the
# snapshotters; nothing is mounted):
#
#   bench/run.sh [wasmsnap bench flags...]      e.g. bench/run.sh --depth 64 --runs 7
#   BENCH_CLIENT=go bench/run.sh [flags...]     the same, driven by containerd's Go client
#
# Builds wasmsnap (release) and the peer (containerd's own overlayfs and
# native snapshotters behind a tiny Go server, tests/peer, built offline from
# Debian's packages), then runs `wasmsnap bench --compare`: both servers on
# fresh roots under target/tmp/bench (the repository's disk), the same
# workload against each, runs interleaved, plus the floor loop there, and
# prints per snapshotter the table with the ratios. See docs/performance.md.
#
# BENCH_CLIENT picks who makes the calls: `rust` (default) is wasmsnap's
# built-in tonic client; `go` also builds tests/goclient and passes it as
# --go-client, so every call goes through containerd's own proxy snapshotter
# client, as containerd reaches a proxy_plugins snapshotter.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
set -- --compare --dir target/tmp/bench "$@"
case ${BENCH_CLIENT:-rust} in
rust) ;;
go)
	# Assigned first, so that a failed build stops the script (set -e).
	goclient=$(tests/conformance/run.sh goclient)
	set -- --go-client "$goclient" "$@"
	;;
*)
	echo "BENCH_CLIENT=${BENCH_CLIENT}: expected rust or go" >&2
	exit 2
	;;
esac
cargo build --release -p wasmsnap
peer=$(tests/conformance/run.sh peer)
mkdir -p target/tmp/bench
exec target/release/wasmsnap bench --peer "$peer" "$@"
