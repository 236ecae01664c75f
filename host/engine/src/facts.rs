//! Probe the facts a policy's `init` receives: what this kernel and the
//! snapshotter's root can do. Each probe answers `false` when it cannot
//! tell, so a policy falls back to the plain choice.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmsnap_plan::HostFacts;

/// Probe the host, and the filesystem of `root` (which should exist).
pub fn probe_facts(root: &Path) -> HostFacts {
    HostFacts {
        overlay: overlay_available(),
        userxattr: in_user_namespace(),
        index_param: Path::new("/sys/module/overlay/parameters/index").exists(),
        reflink: reflink_works(root),
        page_size: page_size(),
    }
}

/// `overlay` is listed in /proc/filesystems (the module is loaded or built
/// in). A module not yet loaded is missed; containerd checks the same way.
fn overlay_available() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|list| list.lines().any(|line| line.split_whitespace().last() == Some("overlay")))
        .unwrap_or(false)
}

/// Outside a user namespace, uid 0 maps the whole range: `0 0 4294967295`.
/// Inside one, overlay needs `userxattr` (as containerd's NeedsUserXAttr).
fn in_user_namespace() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

/// Clone one small file into another under `root` with FICLONE.
fn reflink_works(root: &Path) -> bool {
    static PROBE: AtomicU64 = AtomicU64::new(0);
    let n = PROBE.fetch_add(1, Ordering::Relaxed);
    let stem = format!(".reflink-probe-{}-{n}", std::process::id());
    let src_path = root.join(format!("{stem}-src"));
    let dst_path = root.join(format!("{stem}-dst"));
    let cloned = (|| -> std::io::Result<bool> {
        let mut src = OpenOptions::new().write(true).read(true).create_new(true).open(&src_path)?;
        src.write_all(&[0x5a; 4096])?;
        src.sync_all()?;
        let dst = File::create_new(&dst_path)?;
        // SAFETY: FICLONE takes the source fd as its argument; both fds are
        // open for the duration of the call.
        let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
        Ok(rc == 0)
    })()
    .unwrap_or(false);
    let _ = fs::remove_file(&src_path);
    let _ = fs::remove_file(&dst_path);
    cloned
}

fn page_size() -> u32 {
    // SAFETY: sysconf reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u32 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_a_real_root() {
        let root = tempfile::tempdir().unwrap();
        let facts = probe_facts(root.path());
        assert!(facts.page_size >= 4096 && facts.page_size.is_power_of_two(), "{facts:?}");
        // The probe leaves nothing behind.
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        // On a root that does not exist, reflink is simply false.
        assert!(!reflink_works(&root.path().join("missing")));
    }
}
