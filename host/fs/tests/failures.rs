//! A copy that fails mid-way (ENOSPC, EACCES): create fails with an error
//! naming the path and the errno, and leaves neither `new-*` nor `<id>`.

mod support;

use std::path::Path;

use support::mounts::Tmpfs;
use support::{cannot_run, have_root, names};
use wasmsnap_fs::SnapshotDirs;
use wasmsnap_plan::{CopyMode, Step};

fn copy_parent(mode: CopyMode) -> Vec<Step> {
    vec![
        Step::Mkdir { name: "work".into(), mode: 0o711 },
        Step::CopyParent { name: "fs".into(), mode },
    ]
}

/// 16 files of 256 KiB: 4 MiB of data.
fn four_mib_tree(root: &Path) {
    std::fs::create_dir_all(root.join("dir")).unwrap();
    for i in 0..16 {
        std::fs::write(root.join("dir").join(format!("file{i:02}")), vec![i as u8 + 1; 256 << 10])
            .unwrap();
    }
}

#[test]
fn enospc_mid_copy_leaves_nothing_and_names_the_file() {
    if !have_root("enospc_mid_copy_leaves_nothing_and_names_the_file") {
        return;
    }
    let tmpfs = match Tmpfs::mount("1m") {
        Ok(t) => t,
        Err(reason) => {
            return cannot_run("enospc_mid_copy_leaves_nothing_and_names_the_file", &reason);
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("parent-fs");
    four_mib_tree(&parent);

    let dirs = SnapshotDirs::open(&tmpfs.path().join("root")).unwrap();
    for mode in [CopyMode::Copy, CopyMode::CloneOrCopy] {
        let err = dirs
            .create(9, &copy_parent(mode), Some(&parent))
            .err()
            .expect("4 MiB cannot fit in 1 MiB");
        let message = err.to_string();
        eprintln!("{mode:?}: {message}");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{message}");
        assert!(message.contains("ENOSPC: No space left on device"), "{message}");
        assert!(message.contains("layout step 1 (copy-parent \"fs\""), "{message}");
        // Names the file being copied, on both sides.
        assert!(message.contains(&format!("{}/dir/file", parent.display())), "{message}");
        assert!(message.contains("/fs/dir/file"), "{message}");
        assert!(
            names(&tmpfs.path().join("root/snapshots")).is_empty(),
            "left behind after {message}"
        );
    }
    // Space is back: nothing of the failed copies is still held.
    let st = nix::sys::statvfs::statvfs(tmpfs.path()).unwrap();
    assert!(st.blocks_free() * st.fragment_size() > 900 << 10, "tmpfs still full");
}

#[test]
fn eacces_mid_copy_leaves_nothing_and_names_the_file() {
    if !have_root("eacces_mid_copy_leaves_nothing_and_names_the_file") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("parent-fs");
    four_mib_tree(&parent);
    let secret = parent.join("dir/zz-secret");
    std::fs::write(&secret, b"not for you").unwrap();
    support::chmod(&secret, 0o000);
    let root = tmp.path().join("root");
    let dirs = SnapshotDirs::open(&root).unwrap();

    // Root reads anything; give this thread (and the copy workers it starts,
    // which inherit its credentials) up the capabilities that bypass file
    // permissions, so the 0000 file is unreadable as for anyone else.
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            drop_dac_capabilities();
            dirs.create(9, &copy_parent(CopyMode::Copy), Some(&parent)).err()
        })
        .join()
        .unwrap()
    });
    let err = result.expect("the 0000 file cannot be read");
    let message = err.to_string();
    eprintln!("{message}");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{message}");
    assert!(message.contains(&format!("open {}: EACCES", secret.display())), "{message}");
    assert!(names(&root.join("snapshots")).is_empty(), "left behind after {message}");
}

/// Clears CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the calling
/// thread's effective set (capabilities are per thread on Linux).
fn drop_dac_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_DAC_OVERRIDE: u32 = 1;
    const CAP_DAC_READ_SEARCH: u32 = 2;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(r, 0, "capget: {}", std::io::Error::last_os_error());
    data[0].effective &= !((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH));
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}
