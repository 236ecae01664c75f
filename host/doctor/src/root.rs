//! The root's filesystem: its type, its journal, free space and inodes.

use std::path::{Path, PathBuf};

use crate::Report;

const XFS: i64 = 0x5846_5342;
const EXT4: i64 = 0xEF53;
const BTRFS: i64 = 0x9123_683E;
const TMPFS: i64 = 0x0102_1994;
const OVERLAYFS: i64 = 0x794C_7630;
const NFS: i64 = 0x6969;
const ZFS: i64 = 0x2FC1_2FC1;

/// Below these fractions free (blocks or inodes), doctor warns / fails.
const WARN_FREE: f64 = 0.10;
const FAIL_FREE: f64 = 0.02;

pub fn check(root: &Path, report: &mut Report) {
    let at = existing_ancestor(root);
    if at != root {
        report.warn(
            "root.exists",
            format!(
                "{} does not exist yet; checking the filesystem of {}",
                root.display(),
                at.display()
            ),
            "fine before the first start: `wasmsnap serve` creates it",
        );
    } else {
        report.ok("root.exists", format!("{} exists", root.display()));
    }
    let stat = match nix_statfs(&at) {
        Ok(s) => s,
        Err(e) => {
            report.fail(
                "root.filesystem",
                format!("statfs {}: {e}", at.display()),
                "run doctor as root, with --root naming the daemon's root",
            );
            return;
        }
    };
    let mount = mount_of(&at);
    let fstype =
        mount.as_ref().map(|m| m.fstype.clone()).unwrap_or_else(|| format!("{:#x}", stat.f_type));
    check_type(stat.f_type as i64, &fstype, report);
    check_journal(stat.f_type as i64, mount.as_ref(), report);
    check_space(&at, report);
}

/// `path`, or its nearest ancestor that exists.
pub fn existing_ancestor(path: &Path) -> PathBuf {
    let mut at = path.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p.to_path_buf(),
            None => return PathBuf::from("/"),
        }
    }
    at
}

fn check_type(f_type: i64, name: &str, report: &mut Report) {
    match f_type {
        XFS | EXT4 | BTRFS => report.ok("root.filesystem", name.to_string()),
        OVERLAYFS => report.fail(
            "root.filesystem",
            "overlay: an overlay upper dir cannot live on overlayfs",
            "put the root (--root, `root` in the config) on a real filesystem: a host path, not the container's own",
        ),
        NFS => report.fail(
            "root.filesystem",
            "nfs: no overlay upper dirs, no durable renames",
            "put the root on a local filesystem (xfs or ext4)",
        ),
        TMPFS => report.warn(
            "root.filesystem",
            "tmpfs: every snapshot is lost at reboot, and it takes memory",
            "fine for tests; put a node's root on xfs (reflinks) or ext4",
        ),
        ZFS => report.warn(
            "root.filesystem",
            "zfs: overlay upper dirs need OpenZFS 2.2+",
            "check `zfs version`, or put the root on xfs or ext4",
        ),
        _ => report.warn(
            "root.filesystem",
            format!("{name}: not a filesystem wasmsnap is tested on"),
            "xfs (with reflink) or ext4 are the tested ones",
        ),
    }
}

fn check_journal(f_type: i64, mount: Option<&Mount>, report: &mut Report) {
    match f_type {
        XFS => report.ok("root.journal", "xfs always journals its metadata"),
        BTRFS => report.ok("root.journal", "btrfs is copy-on-write: renames are atomic"),
        TMPFS => report.ok("root.journal", "tmpfs: nothing survives a crash, nothing to journal"),
        EXT4 => {
            let Some(dev) = mount.and_then(|m| m.device_name()) else {
                report.warn(
                    "root.journal",
                    "cannot tell the root's block device, so not whether ext4 journals",
                    "check with `tune2fs -l DEVICE | grep has_journal`",
                );
                return;
            };
            // jbd2 keeps /proc/fs/jbd2/<dev>-<journal inode> while a journal runs.
            let journaled = std::fs::read_dir("/proc/fs/jbd2")
                .map(|d| {
                    d.flatten().any(|e| {
                        e.file_name().to_string_lossy().rsplit_once('-').map(|(d, _)| d == dev)
                            == Some(true)
                    })
                })
                .unwrap_or(false);
            if journaled {
                report.ok("root.journal", format!("ext4 on {dev} has a journal"));
            } else {
                report.warn(
                    "root.journal",
                    format!("ext4 on {dev} runs without a journal: a crash can leave directories and the metastore disagreeing in ways fsck must mend"),
                    "tune2fs -O has_journal on the device (unmounted), or use xfs",
                );
            }
        }
        _ => report.warn(
            "root.journal",
            "cannot tell whether this filesystem journals its metadata",
            "wasmsnap's crash order relies on durable renames and fsync: use xfs or ext4 with a journal",
        ),
    }
}

fn check_space(at: &Path, report: &mut Report) {
    let Ok(s) = nix_statvfs(at) else { return };
    let frsize = s.f_frsize as f64;
    let (free, total) = (s.f_bavail as f64 * frsize, s.f_blocks as f64 * frsize);
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let line = format!("{:.1} GiB free of {:.1} GiB", gib(free), gib(total));
    grade(
        report,
        "root.free_space",
        free,
        total,
        &line,
        "free space on the root's filesystem (images, containers' writes), or move the root",
    );
    if s.f_files == 0 {
        report.ok("root.free_inodes", "inodes are allocated as needed");
    } else {
        let (ifree, itotal) = (s.f_favail as f64, s.f_files as f64);
        let line = format!("{} inodes free of {}", s.f_favail, s.f_files);
        grade(
            report,
            "root.free_inodes",
            ifree,
            itotal,
            &line,
            "remove unused images (crictl rmi --prune), or make the filesystem with more inodes",
        );
    }
}

fn grade(report: &mut Report, name: &str, free: f64, total: f64, line: &str, fix: &str) {
    let fraction = if total > 0.0 { free / total } else { 0.0 };
    if fraction < FAIL_FREE {
        report.fail(name, format!("{line}: under {:.0}% left", FAIL_FREE * 100.0), fix);
    } else if fraction < WARN_FREE {
        report.warn(name, format!("{line}: under {:.0}% left", WARN_FREE * 100.0), fix);
    } else {
        report.ok(name, line.to_string());
    }
}

/// The mount holding a path, from /proc/self/mountinfo.
pub struct Mount {
    pub fstype: String,
    pub source: String,
}

impl Mount {
    /// The kernel's name of the block device (`sda1`, `loop0`, `dm-0`).
    fn device_name(&self) -> Option<String> {
        let real = std::fs::canonicalize(&self.source).ok()?;
        let name = real.strip_prefix("/dev").ok()?.to_str()?.to_string();
        (!name.is_empty()).then_some(name)
    }
}

fn mount_of(path: &Path) -> Option<Mount> {
    let path = std::fs::canonicalize(path).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, Mount)> = None;
    for line in info.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = unescape(left.split(' ').nth(4)?);
        let mut r = right.split(' ');
        let (fstype, source) = (r.next()?.to_string(), r.next()?.to_string());
        if path.starts_with(&mount_point) {
            let depth = mount_point.len();
            // A later mount on the same point hides the earlier: take the last.
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, Mount { fstype, source }));
            }
        }
    }
    best.map(|(_, m)| m)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn nix_statfs(path: &Path) -> std::io::Result<libc::statfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut s = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: statfs writes the struct on success.
    if unsafe { libc::statfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call.
    Ok(unsafe { s.assume_init() })
}

fn nix_statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs writes the struct on success.
    if unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call.
    Ok(unsafe { s.assume_init() })
}
