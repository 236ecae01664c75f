//! Helpers shared by the integration tests: a gate for tests that cannot
//! run here, mounts that tear themselves down, and thin syscall wrappers.
#![allow(dead_code)] // each test binary uses a different subset

pub mod mounts;
pub mod race;
pub mod tree;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Reports that a test cannot run in this environment.
///
/// A test that did not run must never look like a test that passed. So by
/// default this *fails* the test with the reason. Where the environment is
/// known to lack the facility (no root, no loop devices), set
/// `WASMSNAP_ALLOW_SKIP=1`: the test then prints `SKIPPED: <test>: <reason>`
/// and returns, and the caller must count it as skipped.
pub fn cannot_run(test: &str, reason: &str) {
    if std::env::var_os("WASMSNAP_ALLOW_SKIP").is_some_and(|v| v != "0") {
        eprintln!("SKIPPED: {test}: {reason}");
        return;
    }
    panic!(
        "{test} cannot run here: {reason} (set WASMSNAP_ALLOW_SKIP=1 to report it as SKIPPED instead of failing)"
    );
}

/// True when running as root; otherwise reports via [`cannot_run`].
pub fn have_root(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    cannot_run(test, "needs root (chown, mknod, trusted.* xattrs, mounts)");
    false
}

pub fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

pub fn lstat(path: &Path) -> libc::stat {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let r = unsafe { libc::lstat(c(path).as_ptr(), st.as_mut_ptr()) };
    assert_eq!(r, 0, "lstat {}: {}", path.display(), std::io::Error::last_os_error());
    unsafe { st.assume_init() }
}

pub fn check(r: libc::c_int, what: &str, path: &Path) {
    assert!(r >= 0, "{what} {}: {}", path.display(), std::io::Error::last_os_error());
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    check(unsafe { libc::lchown(c(path).as_ptr(), uid, gid) }, "lchown", path);
}

pub fn chmod(path: &Path, mode: u32) {
    check(unsafe { libc::chmod(c(path).as_ptr(), mode) }, "chmod", path);
}

pub fn mknod(path: &Path, mode: u32, dev: libc::dev_t) {
    check(unsafe { libc::mknod(c(path).as_ptr(), mode, dev) }, "mknod", path);
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let name = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(c(path).as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
    };
    check(r, "lsetxattr", path);
}

/// Sets atime/mtime (seconds, nanoseconds) without following symlinks.
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let ts = [
        libc::timespec { tv_sec: atime.0, tv_nsec: atime.1 },
        libc::timespec { tv_sec: mtime.0, tv_nsec: mtime.1 },
    ];
    let r = unsafe {
        libc::utimensat(libc::AT_FDCWD, c(path).as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    };
    check(r, "utimensat", path);
}

/// All xattrs of a path (not following symlinks), sorted by name.
pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let p = c(path);
    let size = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(size >= 0, "llistxattr {}", path.display());
    let mut names = vec![0u8; size as usize];
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let len = unsafe { libc::lgetxattr(p.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        assert!(len >= 0, "lgetxattr {}", path.display());
        let mut value = vec![0u8; len as usize];
        let len = unsafe {
            libc::lgetxattr(p.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len())
        };
        assert!(len >= 0, "lgetxattr {}", path.display());
        value.truncate(len as usize);
        out.push((name.to_vec(), value));
    }
    out.sort();
    out
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Entries of a directory, sorted, as strings.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
