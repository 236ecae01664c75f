//! The bounds of the walks of container-written trees: a tree nested deeper
//! than a walk keeps open, a mount inside the tree, a fifo and a device.

mod support;

use std::path::Path;

use support::mounts::Tmpfs;
use wasmsnap_fs::copy::copy_tree;
use wasmsnap_fs::{FsError, SnapshotDirs, usage};
use wasmsnap_plan::CopyMode;

/// Directories nested `depth` deep under `root`, made by fd (the path
/// would soon be too long for the path calls).
fn nest(root: &Path, depth: usize) {
    use std::os::fd::AsRawFd;
    let mut dir = std::fs::File::open(root).unwrap();
    for _ in 0..depth {
        let name = c"d";
        assert_eq!(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) }, 0);
        let fd = unsafe {
            libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY)
        };
        assert!(fd >= 0);
        dir = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    }
}

#[test]
fn a_tree_nested_past_the_walks_depth_is_measured_refused_by_copy_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(tmp.path()).unwrap();
    let tree = dirs.dir(7).join("fs");
    std::fs::create_dir_all(&tree).unwrap();
    nest(&tree, 1000);

    // Usage still answers: what lies deeper than the walk opens is left out.
    let u = usage(&tree).unwrap();
    assert!(u.inodes > 200 && u.inodes <= 1001, "{u:?}");

    // A copy would be incomplete: it fails, naming the directory.
    let err = copy_tree(&tree, &tmp.path().join("copy"), CopyMode::Copy).unwrap_err();
    assert!(matches!(err, FsError::Unwalkable { reason: "nested too deep", .. }), "{err}");

    // Remove gets all of it, moving the deep part up as it goes.
    dirs.remove(7).unwrap();
    assert!(!dirs.dir(7).exists());
    assert_eq!(std::fs::read_dir(tmp.path().join("snapshots")).unwrap().count(), 0);
}

#[test]
fn a_mount_inside_the_tree_is_never_entered() {
    if !support::have_root("a_mount_inside_the_tree_is_never_entered") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("m")).unwrap();
    std::fs::write(tree.join("file"), vec![1u8; 8192]).unwrap();
    let before = usage(&tree).unwrap();
    let mounted = match Tmpfs::mount("16m") {
        Ok(t) => t,
        Err(reason) => {
            return support::cannot_run("a_mount_inside_the_tree_is_never_entered", &reason);
        }
    };
    let big = mounted.path().join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(4 << 20).unwrap();
    std::fs::write(&big, vec![7u8; 4 << 20]).unwrap();
    nix::mount::mount(
        Some(mounted.path()),
        &tree.join("m"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let unmount = scopeguard(tree.join("m"));

    // Usage leaves the mount out (its root too: it is another inode).
    let during = usage(&tree).unwrap();
    assert_eq!(during.inodes, before.inodes - 1, "{during:?} vs {before:?}");
    assert!(during.size < before.size + (1 << 20), "{during:?} counted the mount");

    // A copy refuses it rather than copying another file system.
    let err = copy_tree(&tree, &tmp.path().join("copy"), CopyMode::Copy).unwrap_err();
    assert!(matches!(err, FsError::Unwalkable { reason: "on another device", .. }), "{err}");
    drop(unmount);
}

/// Unmounts `path` (lazily) when dropped.
fn scopeguard(path: std::path::PathBuf) -> impl Drop {
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    Unmount(path)
}

#[test]
fn fifos_and_devices_are_copied_by_mknod_and_never_opened() {
    if !support::have_root("fifos_and_devices_are_copied_by_mknod_and_never_opened") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let canary = support::race::Canary::new(&tmp.path().join("canary"));
    let fifo = support::c(&src.join("fifo"));
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let dev = support::c(&src.join("dev"));
    assert_eq!(unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) }, 0);
    canary.watch(&src.join("fifo"));
    canary.watch(&src.join("dev"));

    // A fifo with no writer: opening it for reading would block (or, with
    // O_NONBLOCK, be seen); the copy must finish and not open it.
    let dst = tmp.path().join("dst");
    let stats = support::race::within(std::time::Duration::from_secs(20), "copy", {
        let (src, dst) = (src.clone(), dst.clone());
        move || copy_tree(&src, &dst, CopyMode::Copy).unwrap()
    });
    assert_eq!(stats.specials, 2);
    let fifo_copy = std::fs::symlink_metadata(dst.join("fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo_copy.file_type()));
    let dev_copy = std::fs::symlink_metadata(dst.join("dev")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::rdev(&dev_copy), libc::makedev(1, 3));
    assert!(usage(&src).unwrap().inodes == 3);
    canary.assert_untouched("copy and usage of a fifo and a device");
}
