#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (the wasm target; Debian's containerd, runc, Go and containerd's Go sources
# for the conformance suite; xfsprogs for the reflink tests; prometheus for the
# metrics tests; strace for the benchmark's flush count), checks the format and the lints, then runs every test of the
# workspace, then the whole-system tests again with their roots on a tmpfs.
# Needs root (mounts, containerd).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2

packages=(containerd runc golang-go golang-github-containerd-containerd-dev xfsprogs busybox-static prometheus strace)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Format and lints first: they fail in seconds, the tests take long.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

cargo test --workspace "$@"

# The whole-system tests again with every daemon's root on a tmpfs, where a
# flush costs nothing and Prepare, View and Commit run on the reactor thread
# (docs/performance.md, change 15): the same behaviour through other paths.
# Only for the whole suite (no arguments).
if [ $# -eq 0 ]; then
    roots=$(mktemp -d)
    mount -t tmpfs -o size=8g,mode=0700 wasmsnap-test-roots "$roots"
    trap 'umount -l "$roots"; rmdir "$roots"' EXIT
    TMPDIR=$roots cargo test -p wasmsnap --test all
fi
