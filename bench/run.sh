#!/bin/sh
# The side-by-side benchmark in one command (needs root: it runs the
# snapshotters and strace; nothing is mounted):
#
#   bench/run.sh [wasmsnap bench flags...]      e.g. bench/run.sh --depth 64 --runs 7
#   bench/run.sh --dir /mnt/xfs ...             roots and floor there instead of target/tmp/bench
#   BENCH_CLIENT=go bench/run.sh [flags...]     the same, driven by containerd's Go client
#   WASMSNAP_BENCH_BIN=target/debug/wasmsnap bench/run.sh ...   that binary, no release build
#
# Builds wasmsnap (release; skipped when WASMSNAP_BENCH_BIN names a binary)
# and the peer (containerd's own overlayfs and native snapshotters behind a
# tiny Go server, tests/peer, built offline from Debian's packages), then
# runs `wasmsnap bench --compare`: both servers on fresh roots under
# target/tmp/bench (the repository's disk) or --dir, the same workload
# against each, runs interleaved, plus the floor loop there, and prints per
# snapshotter the table with the ratios; then, untimed, each server's
# flushes per prepare+commit and per remove, counted with strace
# (--no-flush-count skips it). bench/filesystems.sh runs it on four file
# systems in one go. See docs/performance.md.
#
# BENCH_CLIENT picks who makes the calls: `rust` (default) is wasmsnap's
# built-in tonic client; `go` also builds tests/goclient and passes it as
# --go-client, so every call goes through containerd's own proxy snapshotter
# client, as containerd reaches a proxy_plugins snapshotter.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [ -n "${WASMSNAP_BENCH_BIN:-}" ]; then
	wasmsnap=$WASMSNAP_BENCH_BIN
else
	cargo build --release -p wasmsnap
	wasmsnap=${CARGO_TARGET_DIR:-target}/release/wasmsnap
fi
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
peer=$(tests/conformance/run.sh peer)
# The default --dir only when the caller gives none (clap takes it once).
for arg in "$@"; do
	case $arg in
	--dir | --dir=*) exec "$wasmsnap" bench --compare --peer "$peer" "$@" ;;
	esac
done
mkdir -p target/tmp/bench
exec "$wasmsnap" bench --compare --peer "$peer" --dir target/tmp/bench "$@"
