//! Kernel checks: overlayfs and its parameters, and the features policies
//! may plan with (idmapped mounts, `lowerdir+`, FICLONE), probed for real
//! on the root's filesystem.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Report;
use crate::root::existing_ancestor;

pub fn check(root: &Path, report: &mut Report) {
    let overlay = overlay_available();
    if overlay {
        report.ok("kernel.overlay", "overlayfs is available");
    } else {
        report.fail(
            "kernel.overlay",
            "overlay is not in /proc/filesystems",
            "load it (modprobe overlay) and keep it loaded (echo overlay > /etc/modules-load.d/overlay.conf)",
        );
    }
    check_params(overlay, report);
    let probe_dir = existing_ancestor(root);
    match Probe::new(&probe_dir) {
        Ok(probe) => {
            check_idmap(&probe, report);
            check_lowerdir_plus(overlay, &probe, report);
            check_ficlone(&probe, report);
        }
        Err(e) => report.warn(
            "kernel.probes",
            format!("cannot make a probe directory under {}: {e}", probe_dir.display()),
            "run doctor as root (as the daemon runs), with the root's parent existing",
        ),
    }
    if in_user_namespace() {
        report.ok(
            "kernel.userxattr",
            "running in a user namespace: overlay mounts need `userxattr` (the built-in overlay policy adds it)",
        );
    } else {
        report.ok("kernel.userxattr", "not in a user namespace: overlay needs no `userxattr`");
    }
}

fn check_params(overlay: bool, report: &mut Report) {
    let param = |name: &str| {
        fs::read_to_string(format!("/sys/module/overlay/parameters/{name}"))
            .ok()
            .map(|v| v.trim().to_string())
    };
    match param("index") {
        Some(v) => report.ok(
            "kernel.overlay.index",
            format!(
                "index={v} by default; the overlay policy mounts with index=off, as containerd does"
            ),
        ),
        None if overlay => report.ok(
            "kernel.overlay.index",
            "this kernel's overlay has no `index` feature (nothing to turn off)",
        ),
        None => report.warn(
            "kernel.overlay.index",
            "overlay is not loaded: its parameters cannot be read",
            "modprobe overlay, then run doctor again",
        ),
    }
    match param("redirect_dir").as_deref() {
        Some("Y") | Some("on") | Some("follow") | Some("nofollow") => report.warn(
            "kernel.overlay.redirect_dir",
            "redirect_dir is on by default: a directory renamed in a container is stored as a redirect, which containerd's diff of an upper dir does not read (commits and image builds miss it)",
            "boot with overlay.redirect_dir=off, or set the policy's mount_options to include redirect_dir=off",
        ),
        Some(v) => report.ok("kernel.overlay.redirect_dir", format!("redirect_dir={v} by default")),
        None => report.ok("kernel.overlay.redirect_dir", "no redirect_dir parameter to worry about"),
    }
}

/// `overlay` is listed in /proc/filesystems (loaded or built in).
fn overlay_available() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|list| list.lines().any(|l| l.split_whitespace().last() == Some("overlay")))
        .unwrap_or(false)
}

fn in_user_namespace() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

/// A scratch directory under the root's filesystem, removed on drop.
struct Probe {
    dir: PathBuf,
}

impl Probe {
    fn new(parent: &Path) -> std::io::Result<Probe> {
        let dir = parent.join(format!(".wasmsnap-doctor-{}", std::process::id()));
        fs::create_dir(&dir)?;
        Ok(Probe { dir })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn check_idmap(probe: &Probe, report: &mut Report) {
    match idmap_mount(&probe.dir) {
        Ok(()) => report.ok(
            "kernel.idmapped_mounts",
            "idmapped mounts work on the root's filesystem (user-namespaced pods can share layers)",
        ),
        Err(e) => report.warn(
            "kernel.idmapped_mounts",
            format!("an idmapped mount of a directory on the root's filesystem failed: {e}"),
            "user-namespaced pods need kernel 5.12+ with idmap support in the root's filesystem (ext4, xfs, btrfs; overlay lowers need 5.19+); without it containerd chowns a copy of every layer",
        ),
    }
}

/// Clone a detached mount of `dir` and set an id mapping on it (the user
/// namespace is a child's, made for the probe). Nothing is ever attached.
fn idmap_mount(dir: &Path) -> Result<(), String> {
    let userns = UserNamespace::new().map_err(|e| format!("cannot make a user namespace: {e}"))?;
    let path = cstring(dir)?;
    // SAFETY: open_tree with a valid C string; the fd it returns is owned below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if tree < 0 {
        return Err(format!("open_tree: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd from open_tree, owned only here.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.fd.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr on our detached tree with a correctly sized struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(format!(
            "mount_setattr(MOUNT_ATTR_IDMAP): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of linux/mount.h.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A child process in a new user namespace (container 0 = host 100000,
/// 65536 ids), kept alive while its namespace is used; killed on drop.
struct UserNamespace {
    child: std::process::Child,
    fd: fs::File,
}

impl UserNamespace {
    fn new() -> std::io::Result<UserNamespace> {
        let mut cmd = Command::new("sleep");
        cmd.arg("30").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: unshare is async-signal-safe; it runs in the forked child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let mut ns = UserNamespace { fd: fs::File::open("/dev/null")?, child };
        let pid = ns.child.id();
        for map in ["uid_map", "gid_map"] {
            fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/{pid}/{map}"))?
                .write_all(b"0 100000 65536\n")?;
        }
        ns.fd = fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(ns)
    }
}

impl Drop for UserNamespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_lowerdir_plus(overlay: bool, probe: &Probe, report: &mut Report) {
    if !overlay {
        return;
    }
    match lowerdir_plus(&probe.dir) {
        Ok(()) => report.ok(
            "kernel.lowerdir_plus",
            "overlay takes `lowerdir+` (layers one by one: deep images past the 4 KiB mount-option page)",
        ),
        Err(e) => report.warn(
            "kernel.lowerdir_plus",
            format!("overlay does not take `lowerdir+`: {e}"),
            "kernel 6.8+ lifts the limit; until then images past ~60 layers rely on containerd's short-path mount, which runc's own mounts do not do",
        ),
    }
}

/// Open an overlay filesystem context and hand it one `lowerdir+`; the
/// context is never mounted.
fn lowerdir_plus(dir: &Path) -> Result<(), String> {
    // SAFETY: fsopen with a C string; the fd it returns is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(format!("fsopen(overlay): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd from fsopen, owned only here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let path = cstring(dir)?;
    // SAFETY: fsconfig on our context with two C strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.as_raw_fd(),
            FSCONFIG_SET_STRING,
            c"lowerdir+".as_ptr(),
            path.as_ptr(),
            0,
        )
    };
    if rc < 0 {
        return Err(format!("fsconfig(lowerdir+): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;

fn check_ficlone(probe: &Probe, report: &mut Report) {
    match ficlone(&probe.dir) {
        Ok(true) => report.ok(
            "kernel.ficlone",
            "FICLONE works on the root: copies of parents (the native policy) are reflinks",
        ),
        Ok(false) => report.ok(
            "kernel.ficlone",
            "the root's filesystem does not reflink (FICLONE): copies of parents are full copies (fine for overlay)",
        ),
        Err(e) => report.warn(
            "kernel.ficlone",
            format!("cannot probe FICLONE under the root: {e}"),
            "run doctor as the daemon's user with the root in place",
        ),
    }
}

/// Whether one small file clones into another in `dir`.
fn ficlone(dir: &Path) -> std::io::Result<bool> {
    let mut src = fs::File::create_new(dir.join("src"))?;
    src.write_all(&[0x5a; 4096])?;
    src.sync_all()?;
    let dst = fs::File::create_new(dir.join("dst"))?;
    // SAFETY: FICLONE takes the source fd; both fds are open for the call.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    Ok(rc == 0)
}

fn cstring(path: &Path) -> Result<std::ffi::CString, String> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))
}
