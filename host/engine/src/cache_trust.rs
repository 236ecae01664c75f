//! Whether a directory may hold the compile cache. Its files are native
//! code that wasmtime maps and runs without checking (`deserialize` is
//! `unsafe`), so whoever can write there runs code as the daemon (root).
//! The cache is used only if nobody but root can change it: the directory
//! and each of its parents (after resolving symlinks) are owned by root and
//! not writable by group or others. A root-owned parent with the sticky bit
//! (`/tmp`, mode 1777) passes: others cannot rename or remove root's
//! entries there. The directory itself is opened without following a
//! symlink and narrowed to 0700 through that descriptor, so a symlink
//! planted in its place is neither used nor chmodded.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a directory is not trusted with the compile cache; shown with the
/// rule id in brackets, e.g. `[cache-parent-writable]`.
#[derive(Debug)]
pub enum Refusal {
    /// The cache directory is a symlink (or could not be opened as a
    /// directory without following one).
    Symlink { path: PathBuf, error: io::Error },
    /// It or a parent is owned by someone other than root.
    Owner { path: PathBuf, uid: u32 },
    /// It or a parent is writable by group or others (and not a root-owned
    /// sticky directory).
    Writable { path: PathBuf, mode: u32 },
    /// A system call failed on the way.
    Io { path: PathBuf, error: io::Error },
}

impl Refusal {
    pub fn rule(&self) -> &'static str {
        match self {
            Refusal::Symlink { .. } => "cache-symlink",
            Refusal::Owner { .. } => "cache-owner",
            Refusal::Writable { .. } => "cache-writable",
            Refusal::Io { .. } => "cache-io",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Symlink { path, error } => write!(
                f,
                "{} is not a plain directory (opened without following symlinks: {error})",
                path.display()
            ),
            Refusal::Owner { path, uid } => {
                write!(f, "{} is owned by uid {uid}, not root", path.display())
            }
            Refusal::Writable { path, mode } => {
                write!(f, "{} is writable by group or others (mode {mode:04o})", path.display())
            }
            Refusal::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }?;
        write!(f, "; compiled code there could be replaced [{}]", self.rule())
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refusal::Symlink { error, .. } | Refusal::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The uid whose files we trust: root, or the user the process runs as
/// (a test or a rootless run trusts itself, and nobody else).
fn trusted_uid(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// Make `dir` mode 0700 (without following a symlink) and check it and its
/// parents. `dir` must exist.
pub(crate) fn secure_dir(dir: &Path) -> Result<(), Refusal> {
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|error| Refusal::Symlink { path: dir.to_path_buf(), error })?;
    let io = |error| Refusal::Io { path: dir.to_path_buf(), error };
    // fchmod: the directory we opened, never what a symlink points at.
    opened.set_permissions(fs::Permissions::from_mode(0o700)).map_err(io)?;
    check(dir, &opened.metadata().map_err(io)?)?;
    let real = fs::canonicalize(dir).map_err(io)?;
    for parent in real.ancestors().skip(1) {
        let meta = fs::metadata(parent)
            .map_err(|error| Refusal::Io { path: parent.to_path_buf(), error })?;
        check(parent, &meta)?;
    }
    Ok(())
}

fn check(path: &Path, meta: &fs::Metadata) -> Result<(), Refusal> {
    if !trusted_uid(meta.uid()) {
        return Err(Refusal::Owner { path: path.to_path_buf(), uid: meta.uid() });
    }
    let mode = meta.mode() & 0o7777;
    let sticky_root = mode & 0o1000 != 0 && meta.uid() == 0;
    if mode & 0o022 != 0 && !sticky_root {
        return Err(Refusal::Writable { path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// Open a cache entry for reading: never through a symlink, and only a
/// regular file of a trusted owner.
pub(crate) fn open_entry(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || !trusted_uid(meta.uid()) || meta.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "not a regular file of root's, writable only by its owner (uid {}, mode {:o})",
            meta.uid(),
            meta.mode()
        )));
    }
    Ok(file)
}
