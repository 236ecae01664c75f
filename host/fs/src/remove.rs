//! Deleting a tree a container wrote (a removed snapshot, a leftover found
//! by cleanup or recovery), by directory fd (see `walk`): never following a
//! symlink out of it, never removing anything on another device (a mount
//! inside fails the removal, which cleanup retries), and for any depth with
//! a bounded number of open directories.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use crate::FsError;
use crate::sys;
use crate::walk::{self, Entry, Flow, Left, Visitor};

/// Deletes the tree (or the single file) at `path`, not following
/// symlinks; a missing path is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), FsError> {
    let c = sys::cpath(path).map_err(|e| FsError::io("remove", path, e))?;
    match sys::lstat(&c) {
        Ok(st) if sys::file_type(&st) == libc::S_IFDIR => {}
        Ok(_) => return ignore_missing(std::fs::remove_file(path), "remove", path),
        Err(e) => return ignore_missing(Err(e), "remove", path),
    }
    // A directory nested deeper than the walk opens is moved up to the
    // root (a rename on one file system) and removed by the next round.
    loop {
        let mut remover = Remover { root: path, moved_up: 0 };
        match walk::walk(path, &mut remover) {
            Err(FsError::Io { error, .. }) if error.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(());
            }
            other => other?,
        };
        if remover.moved_up == 0 {
            break;
        }
    }
    ignore_missing(std::fs::remove_dir(path), "remove directory", path)
}

fn ignore_missing(result: io::Result<()>, op: &'static str, path: &Path) -> Result<(), FsError> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| FsError::io(op, path, e)),
    }
}

struct Remover<'a> {
    root: &'a Path,
    /// Too-deep directories moved up to the root in this round.
    moved_up: u64,
}

fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        e => Err(e),
    }
}

impl Visitor for Remover<'_> {
    type Dir = ();

    fn root(&mut self, _fd: BorrowedFd<'_>, _stat: &libc::stat) -> Result<(), FsError> {
        Ok(())
    }

    fn visit(&mut self, _parent: &mut (), entry: &Entry<'_>) -> Result<Flow<()>, FsError> {
        if entry.dir.is_some() {
            return Ok(Flow::Descend(()));
        }
        unlink_at(entry.parent, entry.name, 0).map_err(|e| FsError::io("remove", entry.path, e))?;
        Ok(Flow::Next)
    }

    fn leave(&mut self, _dir: (), left: &Left<'_>) -> Result<(), FsError> {
        if let (Some(parent), Some(name)) = (left.parent, left.name) {
            unlink_at(parent, name, libc::AT_REMOVEDIR)
                .map_err(|e| FsError::io("remove directory", left.path, e))?;
        }
        Ok(())
    }

    fn too_deep(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
    ) -> Result<(), FsError> {
        // The root by path: it is ours (`rm-*`), not written by a container.
        let away = self.root.join(format!("deep-{}", sys::random_suffix()));
        let away_c = sys::cpath(&away).map_err(|e| FsError::io("move up", &away, e))?;
        let r = unsafe {
            libc::renameat2(
                parent.as_raw_fd(),
                name.as_ptr(),
                libc::AT_FDCWD,
                away_c.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r != 0 {
            return Err(FsError::io("move up", path, io::Error::last_os_error()));
        }
        self.moved_up += 1;
        Ok(())
    }
}
