//! `wasmsnap doctor`'s node checks on real filesystems and sockets: a
//! tmpfs, ext4 with and without a journal, xfs; a socket open to everyone
//! and a stale one. Needs root (mounts, loop devices, user namespaces).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use wasmsnap_doctor::{Options, Report, Served, Status, run};

/// A filesystem mounted on a temp dir, unmounted (and its loop device
/// freed) on drop.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn tmpfs() -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        sh("mount", &["-t", "tmpfs", "tmpfs", dir.path().to_str().unwrap()]);
        Mounted { dir }
    }

    /// A 300 MiB image made by `mkfs` with `args`, loop-mounted.
    fn image(mkfs: &str, args: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image).unwrap().set_len(300 << 20).unwrap();
        let mut all = args.to_vec();
        all.push(image.to_str().unwrap());
        sh(mkfs, &all);
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh("mount", &["-o", "loop", image.to_str().unwrap(), mnt.to_str().unwrap()]);
        Mounted { dir }
    }

    fn path(&self) -> PathBuf {
        let mnt = self.dir.path().join("mnt");
        if mnt.exists() { mnt } else { self.dir.path().to_path_buf() }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn doctor(root: &Path, address: &Path) -> Report {
    let served = Served {
        root: root.join("wasmsnap"),
        address: address.to_path_buf(),
        snapshotters: BTreeMap::new(),
    };
    run(&served, &Options::default())
}

/// The running kernel's (major, minor).
fn kernel() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn one<'a>(report: &'a Report, name: &str) -> &'a wasmsnap_doctor::Check {
    let found: Vec<_> = report.checks.iter().filter(|c| c.name == name).collect();
    assert_eq!(found.len(), 1, "{name} in:\n{}", report.to_text());
    found[0]
}

#[test]
fn tmpfs_root_warns_and_probes_leave_nothing() {
    let fs = Mounted::tmpfs();
    let report = doctor(&fs.path(), Path::new("/nonexistent/wasmsnap.sock"));
    let text = report.to_text();
    assert_eq!(one(&report, "root.filesystem").status, Status::Warn, "{text}");
    assert!(one(&report, "root.filesystem").message.starts_with("tmpfs"));
    // The root does not exist yet: its parent is checked.
    assert_eq!(one(&report, "root.exists").status, Status::Warn);
    assert_eq!(one(&report, "kernel.overlay").status, Status::Ok, "{text}");
    // lowerdir+ came in 6.8, idmapped tmpfs in 6.3: older kernels warn.
    let expect = |since: (u32, u32)| if kernel() >= since { Status::Ok } else { Status::Warn };
    assert_eq!(one(&report, "kernel.lowerdir_plus").status, expect((6, 8)), "{text}");
    assert_eq!(one(&report, "kernel.idmapped_mounts").status, expect((6, 3)), "{text}");
    assert_eq!(one(&report, "socket.reachable").status, Status::Fail);
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0, "probes left files");
}

#[test]
fn ext4_without_a_journal_warns() {
    let with = Mounted::image("mkfs.ext4", &["-q", "-F"]);
    let report = doctor(&with.path(), Path::new("/nonexistent.sock"));
    assert_eq!(one(&report, "root.journal").status, Status::Ok, "{}", report.to_text());
    assert_eq!(one(&report, "root.filesystem").status, Status::Ok);
    let without = Mounted::image("mkfs.ext4", &["-q", "-F", "-O", "^has_journal"]);
    let report = doctor(&without.path(), Path::new("/nonexistent.sock"));
    assert_eq!(one(&report, "root.journal").status, Status::Warn, "{}", report.to_text());
    // ext4 does not reflink.
    assert!(one(&report, "kernel.ficlone").message.contains("does not reflink"));
}

#[test]
fn xfs_reflinks() {
    let fs = Mounted::image("mkfs.xfs", &["-q", "-f", "-m", "reflink=1"]);
    let report = doctor(&fs.path(), Path::new("/nonexistent.sock"));
    assert!(
        one(&report, "kernel.ficlone").message.contains("FICLONE works"),
        "{}",
        report.to_text()
    );
    assert_eq!(one(&report, "root.journal").status, Status::Ok);
    assert_eq!(one(&report, "root.free_space").status, Status::Ok);
}

#[test]
fn socket_reachable_and_not_open_to_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasmsnap.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    let report = doctor(dir.path(), &path);
    assert_eq!(one(&report, "socket.reachable").status, Status::Ok);
    assert_eq!(one(&report, "socket.permissions").status, Status::Ok, "{}", report.to_text());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let report = doctor(dir.path(), &path);
    assert_eq!(one(&report, "socket.permissions").status, Status::Fail);
    // Nobody listening any more: a stale socket.
    drop(listener);
    let report = doctor(dir.path(), &path);
    assert_eq!(one(&report, "socket.reachable").status, Status::Fail, "{}", report.to_text());
}
