#!/bin/sh
# Builds and runs the Go side of the conformance tests by hand, offline, in
# GOPATH mode from Debian's packages (what `cargo test -p wasmsnap --test
# conformance` does for you):
#
#   apt-get install golang-go golang-github-containerd-containerd-dev
#
#   tests/conformance/run.sh peer
#       builds containerd's overlay+native proxy server to target/tmp/go/bin/peer
#   tests/conformance/run.sh goclient
#       builds the benchmark's Go client (tests/goclient: the workload through
#       containerd's proxy snapshotter client) to target/tmp/go/bin/goclient
#   tests/conformance/run.sh suite BIN [SNAPSHOTTER] [go test flags...]
#       runs containerd's SnapshotterSuite against `BIN serve` (default
#       snapshotter overlay), e.g.
#         tests/conformance/run.sh suite target/debug/wasmsnap overlay -count=3
#         tests/conformance/run.sh suite target/tmp/go/bin/peer native -v
#
# Needs root: the suite mounts every snapshot. Everything built lands under
# target/tmp/go (GOPATH staging and GOCACHE; GO_STAGING=DIR puts it elsewhere,
# as the Rust tests do); nothing is fetched from the network. A build prints
# the binary's path on stdout.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
gocode=${GOCODE:-/usr/share/gocode}
staging=${GO_STAGING:-$repo/target/tmp/go}

if ! command -v go >/dev/null; then
	echo "go not found: apt-get install golang-go" >&2
	exit 1
fi
if [ ! -d "$gocode/src/github.com/containerd/containerd/snapshots/testsuite" ]; then
	echo "containerd sources not found under $gocode: apt-get install golang-github-containerd-containerd-dev" >&2
	exit 1
fi

# The packages are symlinked into the staging GOPATH, so edits in tests/ are
# picked up without copying.
mkdir -p "$staging/src/wasmsnap" "$staging/bin"
ln -sfn "$repo/tests/conformance" "$staging/src/wasmsnap/conformance"
ln -sfn "$repo/tests/peer" "$staging/src/wasmsnap/peer"
ln -sfn "$repo/tests/goclient" "$staging/src/wasmsnap/goclient"

export GO111MODULE=off GOFLAGS= GOPROXY=off GOPATH="$staging:$gocode" GOCACHE="$staging/cache"

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
peer)
	go build -o "$staging/bin/peer" wasmsnap/peer
	echo "$staging/bin/peer"
	;;
goclient)
	go build -o "$staging/bin/goclient" wasmsnap/goclient
	echo "$staging/bin/goclient"
	;;
suite)
	[ $# -ge 1 ] || { echo "usage: $0 suite BIN [SNAPSHOTTER] [go test flags...]" >&2; exit 2; }
	WASMSNAP_BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
	shift
	WASMSNAP_SNAPSHOTTER=overlay
	case ${1:-} in
	"" | -*) ;;
	*) WASMSNAP_SNAPSHOTTER=$1; shift ;;
	esac
	export WASMSNAP_BIN WASMSNAP_SNAPSHOTTER
	go test -count=1 -timeout 30m "$@" wasmsnap/conformance
	;;
*)
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
