//! Idmapped mounts, as containerd 2.x's mount code makes them from a
//! mount's `uidmap=`/`gidmap=` options: a user namespace is built from the
//! map (a child process unshares one, its `uid_map`/`gid_map` are written,
//! `/proc/PID/ns/user` is opened), then each lowerdir of an overlay, or the
//! source of a bind, is cloned with `open_tree`, given the namespace with
//! `mount_setattr(MOUNT_ATTR_IDMAP)` and attached with `move_mount`. A file
//! owned by container id N in a layer then reads as the host id N maps to.
//!
//! Used by `wasmsnap policy test --mount` and the daemon's gRPC tests, so
//! what they check is what containerd would see.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use wasmsnap_plan::{IdMap, IdRange};

// From linux/mount.h and fcntl.h (not all in every libc release).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MS_PRIVATE: u64 = 1 << 18;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A user namespace with `map`, held open by its fd (the process that made
/// it is gone).
pub fn userns_fd(map: &IdMap) -> io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: a plain pipe(2) into a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fds were just made and are owned here alone.
    let (read_end, write_end) =
        unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only makes syscalls (unshare, write, pause, _exit),
    // which is what is allowed after fork in a threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe syscalls only, then _exit.
        unsafe {
            let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
            libc::write(write_end.as_raw_fd(), (&ok as *const u8).cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    drop(write_end);
    let result = (|| {
        let mut ok = [0u8; 1];
        let mut read_end = read_end;
        read_end.read_exact(&mut ok)?;
        if ok[0] != 1 {
            return Err(io::Error::other("the child could not unshare a user namespace"));
        }
        let proc = format!("/proc/{pid}");
        std::fs::write(format!("{proc}/uid_map"), map_file(&map.uid))?;
        std::fs::write(format!("{proc}/gid_map"), map_file(&map.gid))?;
        Ok(OwnedFd::from(File::open(format!("{proc}/ns/user"))?))
    })();
    // SAFETY: our own child, killed and reaped.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    result
}

/// `uid_map`'s format: one `ctr host size` line per range.
fn map_file(ranges: &[IdRange]) -> String {
    ranges.iter().map(|r| format!("{} {} {}\n", r.container, r.host, r.size)).collect()
}

/// Clone the mount tree at `source` with the ids of `userns` and attach it
/// at `target` (an existing directory); read-only if asked.
pub fn idmapped_mount(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    readonly: bool,
) -> io::Result<()> {
    let source_c = cstring(source)?;
    let target_c = cstring(target)?;
    // SAFETY: open_tree(2) with a valid C path; the fd is checked, then owned.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source_c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if tree < 0 {
        return Err(context("open_tree", source));
    }
    // SAFETY: a new fd from open_tree, owned here.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | if readonly { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: MS_PRIVATE,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr(2) on our tree fd with a valid struct and size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            AT_EMPTY_PATH | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(context("mount_setattr(MOUNT_ATTR_IDMAP)", source));
    }
    // SAFETY: move_mount(2) of our detached tree onto a valid C path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(context("move_mount", target));
    }
    Ok(())
}

fn cstring(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn context(call: &str, path: &Path) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{call} {}: {e}", path.display()))
}

/// The id map of a rendered mount's `uidmap=`/`gidmap=` options (as
/// containerd's mount code reads them), if it has both.
pub fn from_options(options: &[String]) -> Result<Option<IdMap>, String> {
    let find = |key: &str| options.iter().find_map(|o| o.strip_prefix(key));
    match (find("uidmap="), find("gidmap=")) {
        (Some(u), Some(g)) => {
            let uid = wasmsnap_plan::idmap::parse(wasmsnap_plan::idmap::UID_LABEL, u)
                .map_err(|e| e.to_string())?;
            let gid = wasmsnap_plan::idmap::parse(wasmsnap_plan::idmap::GID_LABEL, g)
                .map_err(|e| e.to_string())?;
            Ok(Some(IdMap { uid, gid }))
        }
        _ => Ok(None),
    }
}
