//! SnapshotDirs on real directories: create from layouts, remove, cleanup,
//! ids on disk, usage.

mod support;

use std::collections::HashSet;
use std::path::Path;

use support::{have_root, lstat, names};
use wasmsnap_fs::{FsError, SnapshotDirs, usage, usage_within};
use wasmsnap_plan::{CopyMode, Step};

fn mkdir(name: &str, mode: u32) -> Step {
    Step::Mkdir { name: name.into(), mode }
}

fn perms(path: &Path) -> u32 {
    lstat(path).st_mode & 0o7777
}

/// The overlay layout of an active: `fs` 0755 owned like the parent, `work` 0711.
fn overlay_active() -> Vec<Step> {
    vec![mkdir("fs", 0o755), mkdir("work", 0o711), Step::ChownLikeParent { name: "fs".into() }]
}

#[test]
fn create_makes_exact_modes_whatever_the_umask() {
    // A restrictive umask would turn 0755 into 0700 if mkdir's mode were trusted.
    unsafe { libc::umask(0o077) };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    assert_eq!(perms(&tmp.path().join("snapshots")), 0o700);

    let steps = vec![
        mkdir("fs", 0o755),
        mkdir("work", 0o711),
        mkdir("shared", 0o2775),
        mkdir("tmp", 0o1777),
    ];
    let new = dirs.create(1, &steps, None).unwrap();
    assert_eq!(new.path(), dirs.dir(1));
    assert_eq!(dirs.dir(1), tmp.path().join("snapshots/1"));
    new.keep();

    let dir = dirs.dir(1);
    assert_eq!(perms(&dir), 0o700);
    assert_eq!(perms(&dir.join("fs")), 0o755);
    assert_eq!(perms(&dir.join("work")), 0o711);
    assert_eq!(perms(&dir.join("shared")), 0o2775);
    assert_eq!(perms(&dir.join("tmp")), 0o1777);
    assert_eq!(names(&tmp.path().join("snapshots")), ["1"]);
}

#[test]
fn chown_like_parent_takes_the_parents_owner() {
    if !have_root("chown_like_parent_takes_the_parents_owner") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let parent = tmp.path().join("parent-fs");
    std::fs::create_dir(&parent).unwrap();
    support::lchown(&parent, 1234, 5678);

    dirs.create(1, &overlay_active(), Some(&parent)).unwrap().keep();
    let fs = lstat(&dirs.dir(1).join("fs"));
    assert_eq!((fs.st_uid, fs.st_gid), (1234, 5678));
    // Only the named entry.
    let work = lstat(&dirs.dir(1).join("work"));
    assert_eq!((work.st_uid, work.st_gid), (0, 0));

    // Without a parent it is a no-op, as in containerd's overlay snapshotter.
    dirs.create(2, &overlay_active(), None).unwrap().keep();
    let fs = lstat(&dirs.dir(2).join("fs"));
    assert_eq!((fs.st_uid, fs.st_gid), (0, 0));
}

#[test]
fn copy_parent_fills_the_new_dir_with_the_parents_tree() {
    if !have_root("copy_parent_fills_the_new_dir_with_the_parents_tree") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let parent = tmp.path().join("parent-fs");
    std::fs::create_dir_all(parent.join("etc")).unwrap();
    std::fs::write(parent.join("etc/hostname"), b"box\n").unwrap();
    support::lchown(&parent, 7, 8);
    support::chmod(&parent, 0o750);

    for (id, mode) in [(1, CopyMode::Copy), (2, CopyMode::CloneOrCopy)] {
        let steps = vec![Step::CopyParent { name: "fs".into(), mode }];
        dirs.create(id, &steps, Some(&parent)).unwrap().keep();
        let fs = dirs.dir(id).join("fs");
        assert_eq!(std::fs::read(fs.join("etc/hostname")).unwrap(), b"box\n");
        let st = lstat(&fs);
        assert_eq!((st.st_uid, st.st_gid, st.st_mode & 0o7777), (7, 8, 0o750));
    }
}

#[test]
fn a_dropped_new_dir_is_removed_and_a_kept_one_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let new = dirs.create(3, &[mkdir("fs", 0o755)], None).unwrap();
    assert!(new.path().join("fs").is_dir());
    drop(new); // the record was not committed
    assert!(names(&tmp.path().join("snapshots")).is_empty());

    dirs.create(3, &[mkdir("fs", 0o755)], None).unwrap().keep();
    assert_eq!(names(&tmp.path().join("snapshots")), ["3"]);
}

#[test]
fn failing_steps_leave_nothing_behind_and_name_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let snapshots = tmp.path().join("snapshots");

    // copy-parent without a parent
    let err = dirs
        .create(
            1,
            &[mkdir("work", 0o711), Step::CopyParent { name: "fs".into(), mode: CopyMode::Copy }],
            None,
        )
        .err()
        .expect("no parent to copy");
    assert!(
        matches!(&err, FsError::Step { id: 1, index: 1, error, .. } if matches!(**error, FsError::NoParent { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("copy-parent \"fs\""), "{err}");

    // a name that is not one component
    let err = dirs.create(2, &[mkdir("../escape", 0o755)], None).err().expect("bad name");
    assert!(err.to_string().contains("../escape"), "{err}");
    assert!(!tmp.path().join("escape").exists());

    // the same name twice: mkdir fails with EEXIST naming the path
    let err = dirs.create(3, &[mkdir("fs", 0o755), mkdir("fs", 0o755)], None).err().expect("twice");
    let message = err.to_string();
    assert!(message.contains("layout step 1 (mkdir \"fs\" 0755)"), "{message}");
    assert!(message.contains("/fs: EEXIST"), "{message}");

    // a mode with file-type bits
    let err = dirs.create(4, &[mkdir("fs", 0o40755)], None).err().expect("bad mode");
    assert!(err.to_string().contains("0o40755"), "{err}");

    assert!(names(&snapshots).is_empty(), "left behind: {:?}", names(&snapshots));
}

#[test]
fn a_leftover_dir_with_a_fresh_id_is_replaced() {
    // A crash after the rename but before the record committed leaves
    // snapshots/<id>; the metastore then hands out the same id again.
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let stale = dirs.dir(5);
    std::fs::create_dir_all(stale.join("fs/old")).unwrap();

    dirs.create(5, &[mkdir("fs", 0o755)], None).unwrap().keep();
    assert!(dirs.dir(5).join("fs").is_dir());
    assert!(!dirs.dir(5).join("fs/old").exists());
    assert_eq!(names(&tmp.path().join("snapshots")), ["5"]);
}

#[test]
fn a_second_create_of_an_id_in_flight_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let first = dirs.create(6, &[], None).unwrap();
    let err = dirs.create(6, &[], None).err().expect("busy");
    assert!(matches!(err, FsError::Busy { .. }), "{err}");
    first.keep();
    assert_eq!(names(&tmp.path().join("snapshots")), ["6"]);
}

#[test]
fn remove_takes_the_dir_away_and_tolerates_a_missing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    dirs.create(1, &overlay_active(), None).unwrap().keep();
    std::fs::write(dirs.dir(1).join("fs/file"), b"data").unwrap();
    std::fs::create_dir_all(dirs.dir(1).join("fs/a/b/c")).unwrap();
    std::os::unix::fs::symlink("/", dirs.dir(1).join("fs/root-link")).unwrap();

    dirs.remove(1).unwrap();
    assert!(names(&tmp.path().join("snapshots")).is_empty());
    dirs.remove(1).unwrap();
    dirs.remove(42).unwrap();
    // The symlink to / was removed, not followed.
    assert!(Path::new("/etc").is_dir());
}

#[test]
fn cleanup_removes_everything_not_kept_and_not_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let snapshots = tmp.path().join("snapshots");
    for id in [1, 2, 3] {
        dirs.create(id, &overlay_active(), None).unwrap().keep();
    }
    // Leftovers of crashes and failed deletes.
    std::fs::create_dir_all(snapshots.join("4/fs/deep")).unwrap();
    std::fs::create_dir_all(snapshots.join("new-0123456789abcdef/fs")).unwrap();
    std::fs::create_dir_all(snapshots.join("rm-9-fedcba9876543210/fs")).unwrap();
    std::fs::create_dir_all(snapshots.join("007")).unwrap();
    std::fs::write(snapshots.join("stray-file"), b"x").unwrap();
    // In flight: its record is not committed yet, so it is in no keep set.
    let in_flight = dirs.create(8, &overlay_active(), None).unwrap();

    assert_eq!(dirs.ids_on_disk().unwrap(), HashSet::from([1, 2, 3, 4, 8]));

    let report = dirs.cleanup(&HashSet::from([1, 2])).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let mut removed: Vec<String> = report
        .removed
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        ["007", "3", "4", "new-0123456789abcdef", "rm-9-fedcba9876543210", "stray-file"]
    );
    assert_eq!(names(&snapshots), ["1", "2", "8"]);

    in_flight.keep();
    assert_eq!(names(&snapshots), ["1", "2", "8"]);
}

#[test]
fn usage_counts_blocks_once_per_inode_like_du() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a"), vec![1u8; 100_000]).unwrap();
    std::fs::write(root.join("sub/b"), vec![2u8; 5_000]).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::hard_link(root.join("a"), root.join("sub/a-again")).unwrap();
    // A symlink to something big outside the tree: counted as the link only.
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, vec![3u8; 1 << 20]).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("sub/to-outside")).unwrap();
    // Sparse: 10 MiB long, one block written.
    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(10 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"x", 5 << 20).unwrap();
    drop(sparse);

    let u = usage(&root).unwrap();
    // Root, sub, a (=a-again), sub/b, empty, to-outside, sparse.
    assert_eq!(u.inodes, 7);
    let expected: i64 = ["", "sub", "a", "sub/b", "empty", "sub/to-outside", "sparse"]
        .iter()
        .map(|rel| lstat(&root.join(rel)).st_blocks * 512)
        .sum();
    assert_eq!(u.size, expected);
    assert!(u.size < 1 << 20, "sparse file or symlink target counted: {}", u.size);

    // GNU du agrees (it also counts each inode once, in st_blocks).
    let du = support::run("du", &["-s", "-B1", root.to_str().unwrap()]);
    let du_bytes: i64 = du.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(u.size, du_bytes, "du says {du}");
    let du_inodes = support::run("du", &["-s", "--inodes", root.to_str().unwrap()]);
    assert_eq!(u.inodes, du_inodes.split_whitespace().next().unwrap().parse::<i64>().unwrap());

    // A single file, and a missing path.
    assert_eq!(usage(&root.join("sub/b")).unwrap().inodes, 1);
    let err = usage(&root.join("missing")).unwrap_err();
    assert!(err.to_string().contains("missing: ENOENT"), "{err}");
}

#[test]
fn usage_within_measures_a_small_tree_and_gives_up_on_a_bigger_one() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    for name in ["a", "sub/b", "sub/c"] {
        std::fs::write(root.join(name), vec![1u8; 10_000]).unwrap();
    }
    // Four entries below the root: sub, a, sub/b, sub/c.
    let whole = usage(&root).unwrap();
    assert_eq!(whole.inodes, 5);
    assert_eq!(usage_within(&root, 4).unwrap(), Some(whole), "exactly at the budget");
    assert_eq!(usage_within(&root, 3).unwrap(), None, "one entry over the budget");
    assert_eq!(usage_within(&root, 0).unwrap(), None);
    // An empty directory or a single file costs nothing of the budget.
    std::fs::create_dir(root.join("empty")).unwrap();
    assert_eq!(usage_within(&root.join("empty"), 0).unwrap().map(|u| u.inodes), Some(1));
    assert_eq!(usage_within(&root.join("a"), 0).unwrap().map(|u| u.inodes), Some(1));
}

/// What a power loss can take of an empty tree (it is not flushed before
/// its record) is made again: the whole tree, or just the entries missing,
/// with the layout's modes and owners; what exists is left alone.
#[test]
fn rebuild_makes_again_what_is_missing_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let parent = tmp.path().join("parent-fs");
    std::fs::create_dir(&parent).unwrap();
    let steps = overlay_active();

    // Nothing missing: nothing made.
    dirs.create(1, &steps, Some(&parent)).unwrap().keep();
    std::fs::write(dirs.dir(1).join("fs/kept"), "container data").unwrap();
    assert!(dirs.rebuild(1, &steps, Some(&parent), None).unwrap().is_empty());

    // One entry gone: only it is made, the other keeps its contents.
    std::fs::remove_dir(dirs.dir(1).join("work")).unwrap();
    let made = dirs.rebuild(1, &steps, Some(&parent), None).unwrap();
    assert_eq!(made, [dirs.dir(1).join("work")]);
    assert_eq!(perms(&dirs.dir(1).join("work")), 0o711);
    assert_eq!(std::fs::read_to_string(dirs.dir(1).join("fs/kept")).unwrap(), "container data");

    // The whole tree gone: made as `create` makes it.
    std::fs::remove_dir_all(dirs.dir(1)).unwrap();
    let made = dirs.rebuild(1, &steps, Some(&parent), None).unwrap();
    assert_eq!(made, [dirs.dir(1)]);
    assert_eq!(names(&dirs.dir(1)), ["fs", "work"]);
    assert_eq!(perms(&dirs.dir(1)), 0o700);
    assert_eq!(perms(&dirs.dir(1).join("fs")), 0o755);
    assert_eq!(names(&tmp.path().join("snapshots")), ["1"], "no temp dir left");
}

/// A tree holding a copy of its parent was flushed before its record: if
/// it is gone, that is not a power loss's doing, and it is not made again.
#[test]
fn rebuild_refuses_a_layout_that_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let parent = tmp.path().join("parent-fs");
    std::fs::create_dir(&parent).unwrap();
    let steps = vec![Step::CopyParent { name: "fs".into(), mode: CopyMode::Copy }];
    let err = dirs.rebuild(2, &steps, Some(&parent), None).unwrap_err();
    assert!(matches!(err, FsError::NotRebuildable { .. }), "{err:?}");
    assert!(err.to_string().contains("copies the parent"), "{err}");
    assert!(names(&tmp.path().join("snapshots")).is_empty());
}
