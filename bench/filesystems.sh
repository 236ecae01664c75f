#!/usr/bin/env bash
# The side-by-side benchmark on four file systems in one go (needs root: it
# makes loop images and mounts them):
#
#   bench/filesystems.sh [wasmsnap bench flags...]    e.g. bench/filesystems.sh --runs 3 --depth 100 --snapshotter overlay
#   BENCH_FS="ext4-journal xfs" bench/filesystems.sh ...    only those
#
# File systems, in this order (BENCH_FS picks a subset, same names):
#   disk          the repository's own disk (target/tmp/bench), whatever it is
#   ext4-journal  a journaled ext4 on a 4 GiB sparse loop image under target/tmp/bench-fs
#   xfs           XFS on such an image
#   tmpfs         a tmpfs (memory: a flush does nothing)
# For each it prints a heading naming the file system, its mount options and
# whether it journals metadata, then runs `bench/run.sh --dir MOUNTPOINT
# [flags...]` (so WASMSNAP_BENCH_BIN works here too). Each image is unmounted,
# its loop device detached and the image deleted after its run, and on exit
# whatever is left, also when a run fails or on ^C. A failed run does not
# stop the others; the exit status says whether any failed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
work=$repo/target/tmp/bench-fs
filesystems=${BENCH_FS:-disk ext4-journal xfs tmpfs}

# What is mounted for the run in progress, released by teardown.
mounted="" loop="" image=""

teardown() {
	if [ -n "$mounted" ]; then
		# A server still stopping can hold the mount for a moment.
		for _ in 1 2 3 4 5; do
			umount "$mounted" 2>/dev/null && break
			sleep 1
		done
		if mountpoint -q "$mounted"; then
			echo "filesystems.sh: $mounted busy, unmounting lazily" >&2
			umount -l "$mounted"
		fi
		rmdir "$mounted"
		mounted=""
	fi
	if [ -n "$loop" ]; then
		losetup -d "$loop"
		loop=""
	fi
	if [ -n "$image" ]; then
		rm -f "$image"
		image=""
	fi
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One line about the file system holding $1: type, mount options, journal.
describe() {
	local fstype options source journal dev
	read -r fstype options source < <(findmnt -no FSTYPE,OPTIONS,SOURCE -T "$1")
	case $fstype in
	ext4)
		dev=$(basename "$(readlink -f "$source")")
		if [ -r "/sys/fs/ext4/$dev/journal_task" ]; then
			journal=$(cat "/sys/fs/ext4/$dev/journal_task")
			if [ "$journal" = "<none>" ]; then
				journal="no (/sys/fs/ext4/$dev/journal_task: <none>)"
			else
				journal="yes (/sys/fs/ext4/$dev/journal_task: $journal)"
			fi
		elif dumpe2fs -h "$source" 2>/dev/null | grep '^Filesystem features:' | grep -qw has_journal; then
			journal="yes (dumpe2fs: has_journal)"
		else
			journal="no (dumpe2fs: no has_journal)"
		fi
		;;
	xfs) journal="yes (XFS always logs its metadata)" ;;
	tmpfs) journal="none (memory only)" ;;
	*) journal="unknown" ;;
	esac
	echo "file system: $fstype on $source ($options); journal: $journal"
}

# A 4 GiB sparse image made by "$@" (a mkfs command, the image last),
# attached to a loop device and mounted; sets $mounted.
mount_image() {
	local name=$1
	shift
	image=$work/$name.img
	rm -f "$image"
	truncate -s 4G "$image"
	"$@" "$image"
	loop=$(losetup --find --show "$image")
	mounted=$work/$name.mnt
	mkdir -p "$mounted"
	mount "$loop" "$mounted"
}

for fs in $filesystems; do
	case $fs in
	disk | ext4-journal | xfs | tmpfs) ;;
	*)
		echo "filesystems.sh: unknown file system '$fs' in BENCH_FS (known: disk ext4-journal xfs tmpfs)" >&2
		exit 2
		;;
	esac
done
mkdir -p "$work"
failed=()
for fs in $filesystems; do
	case $fs in
	disk)
		title="the repository's disk"
		dir=$repo/target/tmp/bench
		mkdir -p "$dir"
		;;
	ext4-journal)
		title="journaled ext4 (4 GiB loop image)"
		# Inode tables and journal written now, not by ext4lazyinit during the runs.
		mount_image ext4-journal mkfs.ext4 -q -F -O has_journal -E lazy_itable_init=0,lazy_journal_init=0
		dir=$mounted
		;;
	xfs)
		title="XFS (4 GiB loop image)"
		mount_image xfs mkfs.xfs -q -f
		dir=$mounted
		;;
	tmpfs)
		title="tmpfs"
		mounted=$work/tmpfs.mnt
		mkdir -p "$mounted"
		mount -t tmpfs -o size=4g,mode=0755 wasmsnap-bench "$mounted"
		dir=$mounted
		;;
	esac
	echo
	echo "==== $title: $dir"
	describe "$dir"
	if ! bench/run.sh --dir "$dir" "$@"; then
		echo "filesystems.sh: the run on $fs failed" >&2
		failed+=("$fs")
	fi
	teardown
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "filesystems.sh: failed on: ${failed[*]}" >&2
	exit 1
fi
