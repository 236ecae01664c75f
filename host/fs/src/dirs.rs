//! `<root>/snapshots/`: creating a snapshot's directory from its layout,
//! removing it, and cleaning up what no record owns.
//!
//! Crash order (`docs/crash-safety.md`): a new directory is built under a
//! temp name and renamed into place before the caller commits the record,
//! and a directory is removed only after its record is gone. So a process
//! crash (SIGKILL, OOM) leaves directories without a record, never a record
//! without its directory.
//!
//! Durability (what survives a power loss) depends on the layout:
//!
//! - **only directories** (mkdir and chown steps: overlay's actives and
//!   views, any snapshot without a parent): nothing is flushed. The new tree is empty, so the record alone
//!   holds everything worth keeping; start-up recovery rebuilds a tree a
//!   power loss took from the record and the policy's layout
//!   ([`rebuild`](SnapshotDirs::rebuild)). That saves a journal commit (or
//!   a flush per directory without a journal) on every Prepare.
//! - **a copy of the parent**: the copy cannot be told from a partial one
//!   later, so it is flushed and the rename made durable before the record.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};

use wasmsnap_plan::{SnapshotId, Step};

use crate::FsError;
use crate::claims::{Claim, Claims};
use crate::layout;
use crate::remove::remove_tree;
use crate::sys;

const SNAPSHOTS: &str = "snapshots";
/// Where earlier versions kept spare trees made ahead of time: removed at
/// open.
const LEGACY_SPARES: &str = "spares";
const NEW_PREFIX: &str = "new-";
const REMOVE_PREFIX: &str = "rm-";
/// Up to this many copied entries (directories and regular files only),
/// each is fsynced instead of a syncfs of the whole file system.
const SMALL_COPY: u64 = 256;

/// Owns `<root>/snapshots`. Share it between threads (`Send + Sync`).
pub struct SnapshotDirs {
    snapshots: PathBuf,
    /// Held open to fsync the directory after renames, and for syncfs.
    handle: File,
    claims: Claims,
    /// XFS or journaled ext4: see [`fsync_tree`](Self::fsync_tree).
    ordered_journal: bool,
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
        let ordered_journal = sys::has_ordered_metadata_journal(&handle);
        remove_tree(&root.join(LEGACY_SPARES))?;
        Ok(SnapshotDirs { snapshots, handle, claims: Claims::default(), ordered_journal })
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
    /// `id` must be fresh: reserved from the metastore before the record's
    /// transaction (`Metastore::reserve_id`), so no record has it. A
    /// directory already at `<id>` is therefore a leftover (a create whose
    /// record never committed, its id handed out again after a restart)
    /// and is replaced.
    ///
    /// The returned guard removes the directory again when dropped: commit
    /// the record, then call [`NewDir::keep`].
    pub fn create(
        &self,
        id: SnapshotId,
        steps: &[Step],
        parent_content: Option<&Path>,
    ) -> Result<NewDir<'_>, FsError> {
        self.create_mapped(id, steps, parent_content, None)
    }

    /// [`create`](Self::create) for a snapshot with an id map:
    /// `mapped_root` is the host (uid, gid) its container root maps to, the
    /// owner `chown-to-mapped-root` gives.
    pub fn create_mapped(
        &self,
        id: SnapshotId,
        steps: &[Step],
        parent_content: Option<&Path>,
        mapped_root: Option<(u32, u32)>,
    ) -> Result<NewDir<'_>, FsError> {
        let target = self.dir(id);
        let claim = self
            .claims
            .try_claim(OsStr::new(&id.to_string()))
            .ok_or(FsError::Busy { path: target.clone() })?;
        let temp = self.make_temp()?;
        let ran = layout::run(&temp.path, id, steps, parent_content, mapped_root)?;
        if ran.copied {
            self.flush_copy(&temp.path, &ran)?;
        }
        self.rename_into_place(&temp.path, &target, id)?;
        temp.disarm();
        let new_dir = NewDir { dirs: self, id, path: target, kept: false, _claim: claim };
        if ran.copied {
            // The rename is durable before the caller may commit the record.
            sys::fsync(&self.handle).map_err(|e| FsError::io("fsync", &self.snapshots, e))?;
        }
        Ok(new_dir)
    }

    /// Makes what a power loss took of snapshot `id`'s tree again, if its
    /// `steps` only make directories (see the module's comment): the whole
    /// tree if `<id>` is missing, else each top-level entry that is missing.
    /// What exists is left alone. The result is made durable (recovery is
    /// rare; the next power loss must not take it again). Returns the
    /// entries it made (empty: nothing was missing); an error if the steps
    /// copy (such a tree was durable before its record: its loss is not a
    /// crash's) or if making them fails.
    pub fn rebuild(
        &self,
        id: SnapshotId,
        steps: &[Step],
        parent_content: Option<&Path>,
        mapped_root: Option<(u32, u32)>,
    ) -> Result<Vec<PathBuf>, FsError> {
        let target = self.dir(id);
        let mut names: Vec<&str> = Vec::new();
        for name in steps.iter().map(step_name) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        // `None`: the whole tree is gone; else the top-level entries that are.
        let missing: Option<Vec<&str>> = match sys::cpath(&target).and_then(|c| sys::lstat(&c)) {
            Err(_) => None,
            Ok(_) => Some(names.iter().copied().filter(|n| !is_dir(&target.join(n))).collect()),
        };
        if missing.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        if wasmsnap_plan::copies_parent(steps) {
            return Err(FsError::NotRebuildable { path: target });
        }
        let temp = self.make_temp()?;
        layout::run(&temp.path, id, steps, parent_content, mapped_root)?;
        let (made, flushed) = match missing {
            None => {
                self.rename_into_place(&temp.path, &target, id)?;
                temp.disarm();
                // The tree's subdirectories are new too.
                let subdirs = names.iter().map(|name| target.join(name)).collect();
                (vec![target.clone()], subdirs)
            }
            Some(missing) => {
                let mut made = Vec::new();
                for name in missing {
                    let to = target.join(name);
                    sys::rename_noreplace(&temp.path.join(name), &to)
                        .map_err(|e| FsError::io("rename into place", &to, e))?;
                    made.push(to);
                }
                (made.clone(), made)
            }
        };
        self.fsync_made(&target, &flushed)?;
        sys::fsync(&self.handle).map_err(|e| FsError::io("fsync", &self.snapshots, e))?;
        Ok(made)
    }

    /// Whether this file system keeps metadata changes in order (XFS,
    /// journaled ext4): then one fsync makes the earlier ones durable too.
    pub fn orders_metadata(&self) -> bool {
        self.ordered_journal
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
        remove_tree(&away)
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
                None => remove_tree(&path),
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
        Ok(entries.iter().filter_map(|entry| parse_id(&entry.name)).collect())
    }

    /// Makes a fresh `new-<random>` dir (0700), claimed and removed on drop.
    fn make_temp(&self) -> Result<TempTree<'_>, FsError> {
        loop {
            let (name, claim) = self.fresh_name(NEW_PREFIX);
            let path = self.snapshots.join(&name);
            let c = sys::cpath(&path).map_err(|e| FsError::io("create directory", &path, e))?;
            match sys::mkdir_exact(&c, 0o700) {
                Ok(()) => {
                    return Ok(TempTree { path, armed: true, _claim: claim });
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

    /// Flushes a copy before it is renamed into place: a small one file by
    /// file, else one syncfs (an fsync per file would cost a journal commit
    /// each).
    fn flush_copy(&self, temp: &Path, ran: &layout::Ran) -> Result<(), FsError> {
        if ran.small_plain_copy(SMALL_COPY) {
            return self.fsync_tree(temp);
        }
        sys::syncfs(&self.handle).map_err(|e| FsError::io("syncfs", temp, e))
    }

    /// fsyncs the directories a rebuild made (each is a fresh directory, or
    /// a tree of them: only what the steps made, never a container's files)
    /// and the snapshot directory holding them. Without an ordered journal
    /// each one needs its own fsync to reach the disk; with one, the fsync
    /// of `snapshots/` that follows commits them all.
    fn fsync_made(&self, target: &Path, made: &[PathBuf]) -> Result<(), FsError> {
        if self.ordered_journal {
            return Ok(());
        }
        for path in made.iter().map(PathBuf::as_path).chain([target]) {
            let dir = sys::open_dir(path).map_err(|e| FsError::io("open directory", path, e))?;
            sys::fsync(&dir).map_err(|e| FsError::io("fsync", path, e))?;
        }
        Ok(())
    }

    /// fsyncs every directory and regular file of the tree at `root` (a
    /// small copy: see [`SMALL_COPY`]), a few at a time; with an ordered
    /// metadata journal, the regular files only.
    fn fsync_tree(&self, root: &Path) -> Result<(), FsError> {
        // Breadth first: `paths[..listed]` are directories already read.
        let mut paths = vec![root.to_path_buf()];
        let mut listed = 0;
        while listed < paths.len() {
            let dir = paths[listed].clone();
            listed += 1;
            let c = sys::cpath(&dir).map_err(|e| FsError::io("stat", &dir, e))?;
            if sys::file_type(&sys::lstat(&c).map_err(|e| FsError::io("stat", &dir, e))?)
                != libc::S_IFDIR
            {
                continue;
            }
            let entries =
                sys::read_dir(&dir).map_err(|e| FsError::io("read directory", &dir, e))?;
            paths.extend(entries.into_iter().map(|entry| dir.join(entry.name)));
        }
        if self.ordered_journal {
            // Directories are metadata, kept in order by the journal and
            // committed by the fsync of `snapshots/` after the rename; only
            // file data needs flushing.
            paths.retain(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()));
        }
        let fsync_all = |part: &[PathBuf]| -> Result<(), FsError> {
            for path in part {
                let file = match sys::open_dir(path) {
                    Ok(dir) => dir,
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => sys::cpath(path)
                        .and_then(|c| sys::open_source(&c))
                        .map_err(|e| FsError::io("open", path, e))?,
                    Err(e) => return Err(FsError::io("open directory", path, e)),
                };
                sys::fsync(&file).map_err(|e| FsError::io("fsync", path, e))?;
            }
            Ok(())
        };
        // A few entries (an empty layer's copy): not worth starting threads.
        if paths.len() <= 16 {
            return fsync_all(&paths);
        }
        let chunk = paths.len().div_ceil(4).max(1);
        std::thread::scope(|s| {
            let workers: Vec<_> =
                paths.chunks(chunk).map(|part| s.spawn(move || fsync_all(part))).collect();
            workers.into_iter().try_for_each(|w| w.join().expect("fsync thread panicked"))
        })
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

/// The id a `snapshots/` entry is named by: canonical decimal only, so
/// `007` or `+7` are never taken for snapshot 7.
fn parse_id(name: &OsStr) -> Option<SnapshotId> {
    let s = name.to_str()?;
    let id: SnapshotId = s.parse().ok()?;
    (id.to_string() == s).then_some(id)
}

/// The top-level entry a layout step makes or changes.
fn step_name(step: &Step) -> &str {
    match step {
        Step::Mkdir { name, .. }
        | Step::CopyParent { name, .. }
        | Step::ChownLikeParent { name }
        | Step::ChownToMappedRoot { name } => name,
    }
}

/// A directory, not a symlink to one.
fn is_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
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
