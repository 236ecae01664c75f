//! `<root>/snapshots/`: creating a snapshot's directory from its layout,
//! removing it, and cleaning up what no record owns.
//!
//! Crash order (design.md): a directory without a record may exist after a
//! crash, never a record without its directory. So a new directory is built
//! under a temp name, made durable, and renamed into place (the commit point
//! of the directory) before the caller commits the record; and a directory is
//! removed only after its record is gone.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use wasmsnap_plan::{SnapshotId, Step};

use crate::FsError;
use crate::claims::{Claim, Claims};
use crate::layout;
use crate::sys;

const SNAPSHOTS: &str = "snapshots";
const NEW_PREFIX: &str = "new-";
const REMOVE_PREFIX: &str = "rm-";

/// Owns `<root>/snapshots`. Share it between threads (`Send + Sync`).
pub struct SnapshotDirs {
    snapshots: PathBuf,
    /// Held open to fsync the directory after renames, and for syncfs.
    handle: File,
    claims: Claims,
}

/// What [`SnapshotDirs::cleanup`] did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Entries removed (orphaned snapshot dirs, temp leftovers).
    pub removed: Vec<PathBuf>,
    /// Entries that could not be removed; the others were still removed.
    pub failed: Vec<FsError>,
}

impl SnapshotDirs {
    /// Opens `<root>/snapshots`, creating `root` and it (mode 0700) if missing.
    pub fn open(root: &Path) -> Result<SnapshotDirs, FsError> {
        std::fs::create_dir_all(root).map_err(|e| FsError::io("create directory", root, e))?;
        let snapshots = root.join(SNAPSHOTS);
        let c =
            sys::cpath(&snapshots).map_err(|e| FsError::io("create directory", &snapshots, e))?;
        match sys::mkdir_exact(&c, 0o700) {
            Ok(()) => {
                // Make the new entry itself durable.
                let root_dir =
                    sys::open_dir(root).map_err(|e| FsError::io("open directory", root, e))?;
                sys::fsync(&root_dir).map_err(|e| FsError::io("fsync", root, e))?;
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(FsError::io("create directory", &snapshots, e)),
        }
        // O_NOFOLLOW: a symlink planted at snapshots/ is refused, not followed.
        let handle =
            sys::open_dir(&snapshots).map_err(|e| FsError::io("open directory", &snapshots, e))?;
        Ok(SnapshotDirs {
            snapshots,
            handle,
            claims: Claims::default(),
        })
    }

    /// `<root>/snapshots/<id>`.
    pub fn dir(&self, id: SnapshotId) -> PathBuf {
        self.snapshots.join(id.to_string())
    }

    /// Creates snapshot `id`'s directory by running `steps` in a temp dir
    /// (`parent_content`: the nearest parent's content dir, used by
    /// copy-parent and chown-like-parent), flushing it, and renaming it to
    /// `<root>/snapshots/<id>`. On failure nothing is left behind and the
    /// error names the step and the path.
    ///
    /// `id` must be fresh: allocated in the caller's open metastore
    /// transaction, so no record has it. A directory already at `<id>` is
    /// therefore a crash leftover (a record rolled back after its directory
    /// was renamed in) and is replaced.
    ///
    /// The returned guard removes the directory again when dropped: commit
    /// the record, then call [`NewDir::keep`].
    pub fn create(
        &self,
        id: SnapshotId,
        steps: &[Step],
        parent_content: Option<&Path>,
    ) -> Result<NewDir<'_>, FsError> {
        let target = self.dir(id);
        let claim = self
            .claims
            .try_claim(OsStr::new(&id.to_string()))
            .ok_or(FsError::Busy {
                path: target.clone(),
            })?;
        let temp = self.make_temp()?;
        let ran = layout::run(&temp.path, id, steps, parent_content)?;
        self.flush(&temp.path, ran.copied)?;
        self.rename_into_place(&temp.path, &target, id)?;
        temp.disarm();
        let new_dir = NewDir {
            dirs: self,
            id,
            path: target,
            kept: false,
            _claim: claim,
        };
        // The rename is durable before the caller may commit the record.
        sys::fsync(&self.handle).map_err(|e| FsError::io("fsync", &self.snapshots, e))?;
        Ok(new_dir)
    }

    /// Removes snapshot `id`'s directory: renames it to `rm-<id>-<random>`
    /// (gone from view at once), then deletes the tree. A missing directory
    /// is not an error. Call it after the record is gone; a tree that fails
    /// to delete stays as `rm-*` for [`cleanup`](Self::cleanup).
    pub fn remove(&self, id: SnapshotId) -> Result<(), FsError> {
        let path = self.dir(id);
        let (name, _claim) = self.fresh_name(&format!("{REMOVE_PREFIX}{id}-"));
        let away = self.snapshots.join(&name);
        match sys::rename_noreplace(&path, &away) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(FsError::io("rename", &path, e)),
        }
        remove_tree(&away).map_err(|e| FsError::io("remove", &away, e))
    }

    /// Removes every entry under `snapshots/` that is not a kept id and that
    /// no operation of this process is using: orphaned snapshot dirs, and
    /// `new-*`/`rm-*` left by a crash or a failed delete.
    pub fn cleanup(&self, keep: &HashSet<SnapshotId>) -> Result<CleanupReport, FsError> {
        let entries = sys::read_dir(&self.snapshots)
            .map_err(|e| FsError::io("read directory", &self.snapshots, e))?;
        let mut report = CleanupReport::default();
        for entry in entries {
            let id = parse_id(&entry.name);
            if id.is_some_and(|id| keep.contains(&id)) {
                continue;
            }
            let Some(_claim) = self.claims.try_claim(&entry.name) else {
                continue;
            };
            let path = self.snapshots.join(&entry.name);
            let result = match id {
                Some(id) => self.remove(id),
                None => remove_tree(&path).map_err(|e| FsError::io("remove", &path, e)),
            };
            match result {
                Ok(()) => report.removed.push(path),
                Err(e) => report.failed.push(e),
            }
        }
        Ok(report)
    }

    /// The snapshot ids that have a directory (entries named by a number).
    pub fn ids_on_disk(&self) -> Result<HashSet<SnapshotId>, FsError> {
        let entries = sys::read_dir(&self.snapshots)
            .map_err(|e| FsError::io("read directory", &self.snapshots, e))?;
        Ok(entries
            .iter()
            .filter_map(|entry| parse_id(&entry.name))
            .collect())
    }

    /// Makes a fresh `new-<random>` dir (0700), claimed and removed on drop.
    fn make_temp(&self) -> Result<TempTree<'_>, FsError> {
        loop {
            let (name, claim) = self.fresh_name(NEW_PREFIX);
            let path = self.snapshots.join(&name);
            let c = sys::cpath(&path).map_err(|e| FsError::io("create directory", &path, e))?;
            match sys::mkdir_exact(&c, 0o700) {
                Ok(()) => {
                    return Ok(TempTree {
                        path,
                        armed: true,
                        _claim: claim,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(FsError::io("create directory", &path, e)),
            }
        }
    }

    /// A claimed name `<prefix><random>` not used by this process.
    fn fresh_name(&self, prefix: &str) -> (OsString, Claim<'_>) {
        loop {
            let name = OsString::from(format!("{prefix}{}", sys::random_suffix()));
            if let Some(claim) = self.claims.try_claim(&name) {
                return (name, claim);
            }
        }
    }

    /// Flushes what the steps made before it is renamed into place.
    ///
    /// A copy wrote a whole tree: one syncfs flushes its data and metadata
    /// (an fsync per file would cost a journal commit each). Otherwise the
    /// steps made only directories: each is fsync'ed, children before the
    /// temp dir holding them. On a journaled file system the first fsync
    /// commits them all and the others find nothing left to commit; without
    /// a journal (this VM's ext4) each one is needed for the inode to reach
    /// the disk. Measured on the no-journal ext4 here: ~2 ms per fsync.
    fn flush(&self, temp: &Path, copied: bool) -> Result<(), FsError> {
        if copied {
            return sys::syncfs(&self.handle).map_err(|e| FsError::io("syncfs", temp, e));
        }
        let entries = sys::read_dir(temp).map_err(|e| FsError::io("read directory", temp, e))?;
        for entry in entries {
            let path = temp.join(&entry.name);
            match sys::open_dir(&path) {
                Ok(dir) => sys::fsync(&dir).map_err(|e| FsError::io("fsync", &path, e))?,
                // Not a directory: no step makes one, but a symlink must not be followed.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {}
                Err(e) => return Err(FsError::io("open directory", &path, e)),
            }
        }
        let dir = sys::open_dir(temp).map_err(|e| FsError::io("open directory", temp, e))?;
        sys::fsync(&dir).map_err(|e| FsError::io("fsync", temp, e))
    }

    fn rename_into_place(&self, temp: &Path, target: &Path, id: SnapshotId) -> Result<(), FsError> {
        match sys::rename_noreplace(temp, target) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                tracing::warn!(path = %target.display(), "replacing a snapshot directory that has no record (left by a crash)");
                self.remove(id)?;
                sys::rename_noreplace(temp, target)
            }
            other => other,
        }
        .map_err(|e| FsError::io("rename into place", target, e))
    }
}

/// A new snapshot directory whose record is not committed yet. Dropping it
/// without [`keep`](Self::keep) removes the directory again.
#[must_use = "dropping a NewDir removes the directory; call keep() after committing the record"]
pub struct NewDir<'a> {
    dirs: &'a SnapshotDirs,
    id: SnapshotId,
    path: PathBuf,
    kept: bool,
    /// Keeps cleanup away until the record exists.
    _claim: Claim<'a>,
}

impl NewDir<'_> {
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// `<root>/snapshots/<id>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record is committed: the directory stays.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for NewDir<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Err(e) = self.dirs.remove(self.id) {
            tracing::warn!(error = %e, "could not remove a snapshot directory whose record was not committed; cleanup will");
        }
    }
}

/// A temp tree under `snapshots/`, deleted on drop unless disarmed (renamed
/// into place).
struct TempTree<'a> {
    path: PathBuf,
    armed: bool,
    _claim: Claim<'a>,
}

impl TempTree<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempTree<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = remove_tree(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a temp dir; cleanup will");
        }
    }
}

/// Deletes a tree (or a single file) without following symlinks; a missing
/// path is fine.
fn remove_tree(path: &Path) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The id a `snapshots/` entry is named by: canonical decimal only, so
/// `007` or `+7` are never taken for snapshot 7.
fn parse_id(name: &OsStr) -> Option<SnapshotId> {
    let s = name.to_str()?;
    let id: SnapshotId = s.parse().ok()?;
    (id.to_string() == s).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_numbers_are_ids() {
        assert_eq!(parse_id(OsStr::new("7")), Some(7));
        assert_eq!(parse_id(OsStr::new("0")), Some(0));
        for name in ["007", "+7", "new-7", "rm-7-ab", "", "7 "] {
            assert_eq!(parse_id(OsStr::new(name)), None, "{name:?}");
        }
    }
}
