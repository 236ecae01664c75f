//! The executor's error: every variant names what was being done and to which
//! path, and OS errors are shown by their errno name (`ENOSPC: No space left
//! on device`) so an operator can act on the message alone.

use std::fmt;
use std::io;
use std::path::PathBuf;

use wasmsnap_plan::SnapshotId;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A system call failed on one path.
    #[error("{op} {}: {}", path.display(), OsError(error))]
    Io { op: &'static str, path: PathBuf, error: io::Error },

    /// Reading or writing one extended attribute failed.
    #[error("{op} {name:?} on {}: {}", path.display(), OsError(error))]
    Xattr { op: &'static str, name: String, path: PathBuf, error: io::Error },

    /// Copying a regular file's data failed (read side or write side).
    #[error("{op} {} -> {}: {}", src.display(), dst.display(), OsError(error))]
    CopyData { op: &'static str, src: PathBuf, dst: PathBuf, error: io::Error },

    /// A layout step failed; `error` says where inside the step.
    #[error("snapshot {id}: layout step {index} ({step}): {error}")]
    Step { id: SnapshotId, index: usize, step: String, error: Box<FsError> },

    /// An entry is not of the type the operation needs (or changed type
    /// while it was being copied).
    #[error("{}: expected {expected}, found {found}", path.display())]
    WrongType { path: PathBuf, expected: &'static str, found: &'static str },

    /// Copying this file panicked: a bug, reported instead of hanging the copy.
    #[error("copy {}: a copy worker panicked", path.display())]
    Panicked { path: PathBuf },

    /// Another operation of this process is creating the same snapshot dir.
    #[error("{}: another operation is creating this snapshot directory", path.display())]
    Busy { path: PathBuf },

    /// A tree a power loss took cannot be made again: its layout copies
    /// the parent (and such a tree was durable before its record).
    #[error("{}: its layout copies the parent, so it cannot be rebuilt", path.display())]
    NotRebuildable { path: PathBuf },

    /// A tree being walked holds something the walk will not enter (a
    /// mount point, a nesting deeper than the walk's limit).
    #[error("{}: {reason}", path.display())]
    Unwalkable { path: PathBuf, reason: &'static str },

    #[error("layout step names an invalid entry {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("mkdir {name:?}: mode {mode:#o} has bits outside 0o7777")]
    InvalidMode { name: String, mode: u32 },

    #[error("copy-parent {name:?}: the snapshot has no parent to copy from")]
    NoParent { name: String },

    /// The request the copy was for was cancelled (see `interrupt`).
    #[error("copy stopped at {}: the request was cancelled", path.display())]
    Cancelled { path: PathBuf },
    #[error("chown-to-mapped-root {name:?}: the snapshot has no id map")]
    NoIdMap { name: String },
}

impl FsError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, error: io::Error) -> FsError {
        FsError::Io { op, path: path.into(), error }
    }

    /// The OS error number behind this error, looking through layout steps:
    /// lets the caller tell ENOSPC from EACCES without parsing messages.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            FsError::Io { error, .. }
            | FsError::Xattr { error, .. }
            | FsError::CopyData { error, .. } => error.raw_os_error(),
            FsError::Step { error, .. } => error.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the copy stopped because its request was cancelled.
    pub fn is_cancelled(&self) -> bool {
        match self {
            FsError::Cancelled { .. } => true,
            FsError::Step { error, .. } => error.is_cancelled(),
            _ => false,
        }
    }
}

/// Shows an `io::Error` as `ENOSPC: No space left on device` when it carries
/// an errno, else as the error itself.
struct OsError<'a>(&'a io::Error);

impl fmt::Display for OsError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.raw_os_error() {
            Some(code) => write!(f, "{}", nix::errno::Errno::from_raw(code)),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_names_operation_path_and_errno() {
        let e = FsError::io("mkdir", "/x/y", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.to_string(), "mkdir /x/y: ENOSPC: No space left on device");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn step_error_wraps_inner_error() {
        let inner = FsError::io("open", "/p/f", io::Error::from_raw_os_error(libc::EACCES));
        let e = FsError::Step {
            id: 7,
            index: 1,
            step: "copy-parent \"fs\"".into(),
            error: Box::new(inner),
        };
        assert_eq!(
            e.to_string(),
            "snapshot 7: layout step 1 (copy-parent \"fs\"): open /p/f: EACCES: Permission denied"
        );
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }
}
