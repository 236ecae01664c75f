//! Copies an entry's owner, mode bits, xattrs and times, in the one order
//! that keeps them all: chown first (it clears setuid/setgid and file
//! capabilities), then chmod, then xattrs, then times (any of the others
//! would move ctime only, but writing data or entries moves mtime).

use std::ffi::CStr;
use std::path::Path;

use crate::FsError;
use crate::sys::{self, Node};

/// Applies `st` (the source's stat) to an entry, reading xattrs from `src`.
/// `src_path`/`dst_path` are for error messages.
pub(super) fn apply(
    src: Node<'_>,
    dst: Node<'_>,
    st: &libc::stat,
    src_path: &Path,
    dst_path: &Path,
) -> Result<(), FsError> {
    let is_symlink = sys::file_type(st) == libc::S_IFLNK;
    chown(dst, st, dst_path)?;
    if !is_symlink {
        dst.chmod(st.st_mode).map_err(|e| FsError::io("chmod", dst_path, e))?;
    }
    copy_xattrs(src, dst, src_path, dst_path)?;
    dst.set_times(st).map_err(|e| FsError::io("set times of", dst_path, e))
}

fn chown(dst: Node<'_>, st: &libc::stat, dst_path: &Path) -> Result<(), FsError> {
    match dst.chown(st.st_uid, st.st_gid) {
        Ok(()) => Ok(()),
        // Some file systems (NFS) refuse even a chown to the owner the file
        // already has; that is not a failure to copy the owner.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && owner_matches(dst, st) => Ok(()),
        Err(e) => Err(FsError::io("chown", dst_path, e)),
    }
}

fn owner_matches(dst: Node<'_>, st: &libc::stat) -> bool {
    let current = match dst {
        Node::Fd(fd) => sys::fstat(fd),
        Node::Path(p) => sys::lstat(p),
    };
    current.is_ok_and(|c| c.st_uid == st.st_uid && c.st_gid == st.st_gid)
}

/// Copies every xattr, `trusted.overlay.*` included (overlayfs' opaque and
/// redirect markers must survive a copy of an overlay upper dir). Errors on
/// `security.*` are tolerated, as containerd's native snapshotter does:
/// SELinux labels and the like often cannot be set by us and are re-derived
/// by the system anyway.
fn copy_xattrs(
    src: Node<'_>,
    dst: Node<'_>,
    src_path: &Path,
    dst_path: &Path,
) -> Result<(), FsError> {
    let names = src.list_xattrs().map_err(|e| FsError::io("list xattrs of", src_path, e))?;
    for name in &names {
        let tolerated = is_security(name);
        let value = match src.get_xattr(name) {
            Ok(v) => v,
            // Removed since the listing: nothing to copy.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) if tolerated => {
                tracing::debug!(path = %src_path.display(), xattr = ?name, error = %e, "skipping security xattr");
                continue;
            }
            Err(e) => return Err(xattr_error("get xattr", name, src_path, e)),
        };
        match dst.set_xattr(name, &value) {
            Ok(()) => {}
            Err(e) if tolerated => {
                tracing::debug!(path = %dst_path.display(), xattr = ?name, error = %e, "skipping security xattr");
            }
            Err(e) => return Err(xattr_error("set xattr", name, dst_path, e)),
        }
    }
    Ok(())
}

fn is_security(name: &CStr) -> bool {
    name.to_bytes().starts_with(b"security.")
}

fn xattr_error(op: &'static str, name: &CStr, path: &Path, error: std::io::Error) -> FsError {
    FsError::Xattr {
        op,
        name: name.to_string_lossy().into_owned(),
        path: path.to_path_buf(),
        error,
    }
}
