//! `orders_metadata` tells a journaled ext4 (per-directory fsyncs skipped)
//! from one made without a journal (each new directory fsynced), on real
//! loop-mounted file systems.

use std::path::Path;
use std::process::Command;

use wasmsnap_fs::SnapshotDirs;

/// Formats a 64 MiB image with `mkfs_args`, loop-mounts it, runs `f` on the
/// mount point, unmounts. `Err` if this machine cannot (no mkfs, no loop).
fn with_ext4(mkfs_args: &[&str], f: impl FnOnce(&Path)) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = dir.path().join("ext4.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
    std::fs::File::create(&image).and_then(|f| f.set_len(64 << 20)).map_err(|e| e.to_string())?;
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .args(mkfs_args)
        .arg(&image)
        .status()
        .map_err(|e| format!("mkfs.ext4: {e}"))?;
    if !mkfs.success() {
        return Err(format!("mkfs.ext4 failed: {mkfs}"));
    }
    let mount = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mnt)
        .status()
        .map_err(|e| format!("mount: {e}"))?;
    if !mount.success() {
        return Err(format!("mount -o loop failed: {mount}"));
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mnt)));
    let _ = Command::new("umount").arg(&mnt).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    Ok(())
}

#[test]
fn a_journaled_ext4_orders_metadata_one_without_a_journal_does_not() {
    with_ext4(&[], |mnt| {
        assert!(SnapshotDirs::open(mnt).unwrap().orders_metadata(), "journaled ext4")
    })
    .unwrap();
    with_ext4(&["-O", "^has_journal"], |mnt| {
        let dirs = SnapshotDirs::open(mnt).unwrap();
        assert!(!dirs.orders_metadata(), "ext4 without a journal");
        // Creating still works there (each directory fsynced).
        let steps = [wasmsnap_plan::Step::Mkdir { name: "fs".into(), mode: 0o755 }];
        dirs.create(1, &steps, None).unwrap().keep();
        assert!(mnt.join("snapshots/1/fs").is_dir());
    })
    .unwrap();
}
