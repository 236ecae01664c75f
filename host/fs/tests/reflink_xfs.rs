//! clone-or-copy on a reflink XFS made by the test on a loop device: a
//! 1 GiB parent is cloned, not copied, and the clone is copy-on-write.
//!
//! Without a loop device (or mkfs.xfs) this test cannot run; it then fails
//! saying why, or with WASMSNAP_ALLOW_SKIP=1 prints `SKIPPED: ...` (see
//! `support::cannot_run`).

mod support;

use support::mounts::LoopXfs;
use support::tree::{read_at, write_pattern};
use support::{cannot_run, have_root};
use wasmsnap_fs::SnapshotDirs;
use wasmsnap_fs::copy::copy_tree;
use wasmsnap_plan::{CopyMode, Step};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn clone_or_copy_of_1gib_on_xfs_shares_extents_and_is_copy_on_write() {
    let test = "clone_or_copy_of_1gib_on_xfs_shares_extents_and_is_copy_on_write";
    if !have_root(test) {
        return;
    }
    let xfs = match LoopXfs::new(3 * GIB) {
        Ok(xfs) => xfs,
        Err(reason) => return cannot_run(test, &reason),
    };
    let parent = xfs.path().join("parent-fs");
    std::fs::create_dir_all(parent.join("etc")).unwrap();
    std::fs::write(parent.join("etc/small"), b"small file").unwrap();
    let big = parent.join("big");
    write_pattern(&big, GIB);
    nix::unistd::sync();
    let before = xfs.used_bytes();

    let dirs = SnapshotDirs::open(&xfs.path().join("root")).unwrap();
    let steps = [Step::CopyParent { name: "fs".into(), mode: CopyMode::CloneOrCopy }];
    dirs.create(2, &steps, Some(&parent)).unwrap().keep();
    nix::unistd::sync();
    let growth = xfs.used_bytes().saturating_sub(before);
    eprintln!("cloning a 1 GiB parent grew used space by {} KiB", growth >> 10);
    assert!(growth < 64 * MIB, "clone grew used space by {growth} bytes");

    let clone = dirs.dir(2).join("fs/big");
    assert_eq!(std::fs::metadata(&clone).unwrap().len(), GIB);
    let middle = 512 * MIB;
    let original = read_at(&big, middle, MIB as usize);
    assert_eq!(read_at(&clone, middle, MIB as usize), original);

    // Write into the clone: only the clone changes.
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&clone).unwrap(),
        &vec![0xee; MIB as usize],
        middle,
    )
    .unwrap();
    nix::unistd::sync();
    assert_eq!(read_at(&clone, middle, MIB as usize), vec![0xee; MIB as usize]);
    assert_eq!(
        read_at(&big, middle, MIB as usize),
        original,
        "writing the clone changed the parent"
    );
    assert_eq!(read_at(&clone, 0, MIB as usize), read_at(&big, 0, MIB as usize));

    // The engine's own account: every file cloned, no byte copied.
    let stats = copy_tree(&parent, &xfs.path().join("direct"), CopyMode::CloneOrCopy).unwrap();
    assert_eq!((stats.files, stats.files_cloned, stats.bytes_copied), (2, 2, 0), "{stats:?}");
    assert_eq!(stats.bytes_cloned, GIB + 10);
}
