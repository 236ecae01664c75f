//! `<root>/snapshots/`: creating a snapshot's directory from its layout,
//! removing it, and cleaning up what no record owns.
//!
//! Crash order (`docs/architecture.md`): a directory without a record may exist after a
//! crash, never a record without its directory. So a new directory is built
//! under a temp name, made durable, and renamed into place (the commit point
//! of the directory) before the caller commits the record; and a directory is
//! removed only after its record is gone.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};

use wasmsnap_plan::{SnapshotId, Step};

use crate::FsError;
use crate::claims::{Claim, Claims};
use crate::layout;
use crate::remove::remove_tree;
use crate::spares::{self, Shape, Spare, Spares};
use crate::sys;

const SNAPSHOTS: &str = "snapshots";
/// Where spare trees wait, beside `snapshots/`.
const SPARES: &str = "spares";
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
    /// XFS or journaled ext4: see [`flush`](Self::flush).
    ordered_journal: bool,
    /// Durable empty trees made ahead of time (see `spares`).
    spares: Spares,
    /// `<root>/spares`, where they wait: beside `snapshots/` (one file
    /// system, so a spare renames into place) but out of it, so
    /// `snapshots/` holds only snapshots and the temp dirs of operations.
    spares_dir: PathBuf,
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
        // Spares of an earlier run are not known to this one: start empty.
        let spares_dir = root.join(SPARES);
        remove_tree(&spares_dir)?;
        let c =
            sys::cpath(&spares_dir).map_err(|e| FsError::io("create directory", &spares_dir, e))?;
        sys::mkdir_exact(&c, 0o700).map_err(|e| FsError::io("create directory", &spares_dir, e))?;
        Ok(SnapshotDirs {
            snapshots,
            handle,
            claims: Claims::default(),
            ordered_journal,
            spares: Spares::default(),
            spares_dir,
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
        if let Some(spare) = self.spare_for(steps, parent_content) {
            // Made and flushed earlier: only the rename is left to do.
            if let Err(e) = self.rename_into_place(&spare.path, &target, id) {
                self.discard_spare(spare);
                return Err(e);
            }
            self.claims.release(&spare.name);
            let new_dir = NewDir { dirs: self, id, path: target, kept: false, _claim: claim };
            if !self.ordered_journal {
                // The spare moved between directories: its `..` entry and
                // `spares/`'s entry for it changed too, and without a journal
                // only their own fsyncs write them. Otherwise a crash could
                // leave the tree linked from both directories (and opening
                // the directory removes whatever `spares/` holds) or with a
                // stale `..`, under a committed record.
                let moved = sys::open_dir(&new_dir.path)
                    .map_err(|e| FsError::io("open directory", &new_dir.path, e))?;
                sys::fsync(&moved).map_err(|e| FsError::io("fsync", &new_dir.path, e))?;
                let spares = sys::open_dir(&self.spares_dir)
                    .map_err(|e| FsError::io("open directory", &self.spares_dir, e))?;
                sys::fsync(&spares).map_err(|e| FsError::io("fsync", &self.spares_dir, e))?;
            }
            sys::fsync(&self.handle).map_err(|e| FsError::io("fsync", &self.snapshots, e))?;
            return Ok(new_dir);
        }
        let temp = self.make_temp()?;
        let ran = layout::run(&temp.path, id, steps, parent_content, mapped_root)?;
        if ran.small_plain_copy(SMALL_COPY) {
            self.fsync_tree(&temp.path)?;
        } else {
            self.flush(&temp.path, ran.copied)?;
        }
        self.rename_into_place(&temp.path, &target, id)?;
        temp.disarm();
        let new_dir = NewDir { dirs: self, id, path: target, kept: false, _claim: claim };
        // The rename is durable before the caller may commit the record.
        sys::fsync(&self.handle).map_err(|e| FsError::io("fsync", &self.snapshots, e))?;
        Ok(new_dir)
    }

    /// Makes spare trees of `steps`' directories until `want` wait (none if
    /// the steps do more than make directories): a later [`create`] with
    /// such steps renames one into place instead of building it then. Run
    /// it off the reply path, after a create.
    ///
    /// [`create`]: Self::create
    pub fn make_spares(&self, steps: &[Step], want: usize) -> Result<(), FsError> {
        let Some(shape) = spares::shape_of(steps) else { return Ok(()) };
        while self.spares.count(&shape) < want {
            let spare = self.make_spare(&shape)?;
            self.keep_spare(shape.clone(), spare);
        }
        Ok(())
    }

    /// Removes every spare tree (Cleanup: the directory then holds only
    /// what records own).
    pub fn drop_spares(&self) {
        for spare in self.spares.drain() {
            self.discard_spare(spare);
        }
    }

    /// Spare trees waiting, of every shape.
    pub fn spares_ready(&self) -> usize {
        self.spares.total()
    }

    /// Whether this file system keeps metadata changes in order (XFS,
    /// journaled ext4): then one fsync makes the earlier ones durable too.
    pub fn orders_metadata(&self) -> bool {
        self.ordered_journal
    }

    /// A spare that can stand in for `steps`: their shape, and the parent's
    /// owner is the spare's (so chown-like-parent has nothing to do).
    fn spare_for(&self, steps: &[Step], parent_content: Option<&Path>) -> Option<Spare> {
        let shape = spares::shape_of(steps)?;
        let spare = self.spares.take(&shape)?;
        let chowns = steps.iter().any(|s| matches!(s, Step::ChownLikeParent { .. }));
        if let (true, Some(parent)) = (chowns, parent_content) {
            let owner =
                sys::cpath(parent).and_then(|c| sys::lstat(&c)).map(|st| (st.st_uid, st.st_gid));
            if owner.ok() != Some(spare.owner) {
                self.keep_spare(shape, spare);
                return None;
            }
        }
        Some(spare)
    }

    fn make_spare(&self, shape: &Shape) -> Result<Spare, FsError> {
        let (name, path) = loop {
            let name = OsString::from(format!("{NEW_PREFIX}{}", sys::random_suffix()));
            if !self.claims.hold(&name) {
                continue;
            }
            let path = self.spares_dir.join(&name);
            let made = sys::cpath(&path).and_then(|c| sys::mkdir_exact(&c, 0o700));
            match made {
                Ok(()) => break (name, path),
                Err(e) => {
                    self.claims.release(&name);
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(FsError::io("create directory", &path, e));
                    }
                }
            }
        };
        let steps: Vec<Step> = shape
            .iter()
            .map(|(name, mode)| Step::Mkdir { name: name.clone(), mode: *mode })
            .collect();
        let built = layout::run(&path, 0, &steps, None, None)
            .and_then(|_| self.flush(&path, false))
            .and_then(|()| {
                let first = path.join(&shape[0].0);
                let st = sys::cpath(&first)
                    .and_then(|c| sys::lstat(&c))
                    .map_err(|e| FsError::io("stat", &first, e))?;
                Ok((st.st_uid, st.st_gid))
            });
        match built {
            Ok(owner) => Ok(Spare { name, path, owner }),
            Err(e) => {
                self.discard_spare(Spare { name, path, owner: (0, 0) });
                Err(e)
            }
        }
    }

    fn keep_spare(&self, shape: Shape, spare: Spare) {
        for pushed_out in self.spares.put(shape, spare) {
            self.discard_spare(pushed_out);
        }
    }

    fn discard_spare(&self, spare: Spare) {
        if let Err(e) = remove_tree(&spare.path) {
            tracing::warn!(path = %spare.path.display(), error = %e, "could not remove a spare dir; cleanup will");
        }
        self.claims.release(&spare.name);
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
        self.drop_spares();
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

    /// Flushes what the steps made before it is renamed into place.
    ///
    /// A copy wrote a whole tree: one syncfs flushes its data and metadata
    /// (an fsync per file would cost a journal commit each). Otherwise the
    /// steps made only directories. On XFS and journaled ext4 nothing is
    /// needed here (below). Elsewhere each is fsync'ed, and the temp dir
    /// holding them: without a journal (ext4 made with `^has_journal`) each
    /// one is needed for the inode to reach the disk. Measured on a
    /// no-journal ext4: 0.15 to 2 ms per fsync, with the disk quiet or busy.
    fn flush(&self, temp: &Path, copied: bool) -> Result<(), FsError> {
        if copied {
            return sys::syncfs(&self.handle).map_err(|e| FsError::io("syncfs", temp, e));
        }
        if self.ordered_journal {
            // The steps made only metadata changes, which the journal keeps
            // in order: the fsync of `snapshots/` after the rename (which
            // `create` does before the caller may commit the record) commits
            // them too, so after a crash the renamed directory is there with
            // its subdirs, modes and owners, or not at all. Each fsync skipped
            // here would still cost a device flush.
            return Ok(());
        }
        let entries = sys::read_dir(temp).map_err(|e| FsError::io("read directory", temp, e))?;
        let mut dirs = Vec::with_capacity(entries.len() + 1);
        for entry in entries {
            let path = temp.join(&entry.name);
            match sys::open_dir(&path) {
                Ok(dir) => dirs.push((dir, path)),
                // Not a directory: no step makes one, but a symlink must not be followed.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {}
                Err(e) => return Err(FsError::io("open directory", &path, e)),
            }
        }
        let dir = sys::open_dir(temp).map_err(|e| FsError::io("open directory", temp, e))?;
        dirs.push((dir, temp.to_path_buf()));
        // In any order: nothing is visible until the rename. One after the
        // other: running them at once saved little here (~0.1 ms on the
        // no-journal ext4) and thread start-ups cost CPU on every Prepare.
        for (dir, path) in &dirs {
            sys::fsync(dir).map_err(|e| FsError::io("fsync", path, e))?;
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

impl Drop for SnapshotDirs {
    /// Spares are a cache: none is left behind.
    fn drop(&mut self) {
        self.drop_spares();
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
