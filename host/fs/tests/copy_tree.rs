//! The copy engine on real trees (the temp dir's file system, ext4 here):
//! every file type and attribute survives, sparse files stay sparse, hard
//! links stay links, symlinks are never followed.

mod support;

use std::path::Path;

use support::tree::{Entries, SPARSE_SIZE, assert_same_tree, build_rich_tree};
use support::{have_root, lstat};
use wasmsnap_fs::FsError;
use wasmsnap_fs::copy::{CopyOptions, copy_tree, copy_tree_with};
use wasmsnap_plan::CopyMode;

#[test]
fn copy_keeps_every_file_type_and_attribute() {
    if !have_root("copy_keeps_every_file_type_and_attribute") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_rich_tree(&src);

    for mode in [CopyMode::Copy, CopyMode::CloneOrCopy] {
        for workers in [0, 1, 3] {
            let dst = tmp.path().join(format!("dst-{mode:?}-{workers}"));
            let before = Entries::of(&src);
            let stats = copy_tree_with(&src, &dst, &CopyOptions { mode, workers })
                .unwrap_or_else(|e| panic!("{mode:?} with {workers} workers: {e}"));
            assert_same_tree(&before, &src, &dst);

            // 300 + 12 regular files; 2 more names are hard links to "linked",
            // 1 to the fifo.
            assert_eq!(stats.files, 312, "{stats:?}");
            assert_eq!(stats.hard_links, 3, "{stats:?}");
            assert_eq!(stats.symlinks, 4, "{stats:?}");
            assert_eq!(stats.specials, 5, "{stats:?}");
            // root, sticky, ro_dir, opaque, d, many, and 40 levels under d
            assert_eq!(stats.dirs, 1 + 5 + 40, "{stats:?}");
            // The sparse file's holes were not written.
            assert!(stats.bytes_copied + stats.bytes_cloned < 8 << 20, "{stats:?}");
            assert_sparse_copy(&src.join("sparse"), &dst.join("sparse"));
        }
    }
}

fn assert_sparse_copy(src: &Path, dst: &Path) {
    let (a, b) = (lstat(src), lstat(dst));
    assert_eq!(b.st_size as u64, SPARSE_SIZE);
    let (allocated_src, allocated_dst) = (a.st_blocks * 512, b.st_blocks * 512);
    // Four 4 KiB blocks written: a few file system blocks at most, never
    // anything near 100 MiB.
    assert!(allocated_dst <= 1 << 20, "copy of the sparse file allocates {allocated_dst} bytes");
    assert!(
        allocated_dst <= allocated_src + (64 << 10),
        "copy allocates {allocated_dst} bytes, source {allocated_src}"
    );
}

#[test]
fn copy_into_an_existing_empty_dir_gives_it_the_source_attributes() {
    if !have_root("copy_into_an_existing_empty_dir_gives_it_the_source_attributes") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    support::lchown(&src, 123, 456);
    support::chmod(&src, 0o2711);
    support::set_xattr(&src, "trusted.overlay.opaque", b"y");
    support::set_times(&src, (1_000_000_000, 1), (1_100_000_000, 999_999_999));
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();

    let before = Entries::of(&src);
    copy_tree(&src, &dst, CopyMode::Copy).unwrap();
    assert_same_tree(&before, &src, &dst);
}

#[test]
fn refuses_symlinks_at_either_end() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();

    let err =
        copy_tree(&tmp.path().join("link"), &tmp.path().join("out"), CopyMode::Copy).unwrap_err();
    assert!(matches!(err, FsError::WrongType { found: "a symlink", .. }), "{err}");
    assert!(err.to_string().contains("link"), "{err}");
    assert!(!tmp.path().join("out").exists());

    let err = copy_tree(&real, &tmp.path().join("link"), CopyMode::Copy).unwrap_err();
    assert!(matches!(err, FsError::WrongType { found: "a symlink", .. }), "{err}");
}

#[test]
fn a_name_already_taken_in_the_destination_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(src.join("taken"), b"new").unwrap();
    std::fs::write(dst.join("taken"), b"old").unwrap();

    let err = copy_tree(&src, &dst, CopyMode::Copy).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&dst.join("taken").display().to_string()), "{message}");
    assert!(message.contains("EEXIST"), "{message}");
    // Never overwritten.
    assert_eq!(std::fs::read(dst.join("taken")).unwrap(), b"old");
}
