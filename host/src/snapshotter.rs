//! One served snapshotter: the transaction of each containerd operation,
//! over its metastore, its policy and its snapshot directories.
//!
//! Every method is blocking (redb, syscalls, wasm); the wire layer runs them
//! off the async reactor. Crash order: a snapshot's directory is created
//! (and renamed into place) before its record commits, and its record is
//! deleted before its directory, so after a crash there may be a directory
//! without a record (Cleanup removes it), never a record without its
//! directory.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use wasmsnap_engine::Policy;
use wasmsnap_fs::SnapshotDirs;
use wasmsnap_metastore::{Metastore, ReadTx, Reads, Record, Usage, UpdateInfo, parse_filters};
use wasmsnap_plan::{Kind, Mount, Snapshot, SnapshotId, render_mounts};

use crate::error::{Error, Result};
use crate::recovery::{self, LostDirs};

pub type Labels = BTreeMap<String, String>;

pub struct Snapshotter {
    name: String,
    root: PathBuf,
    metastore: Metastore,
    dirs: SnapshotDirs,
    policy: RwLock<Arc<Policy>>,
    /// Records found without their directory at start (see `recovery`).
    lost: LostDirs,
}

impl Snapshotter {
    /// Open (or create) the snapshotter stored under `root`.
    pub fn open(name: &str, root: &Path, policy: Policy) -> anyhow::Result<Snapshotter> {
        std::fs::create_dir_all(root)?;
        let metastore = Metastore::open(root)?;
        let dirs = SnapshotDirs::open(root)?;
        let (lost, _) = recovery::recover(name, &metastore, &dirs)?;
        Ok(Snapshotter {
            name: name.to_string(),
            root: root.to_path_buf(),
            metastore,
            dirs,
            policy: RwLock::new(Arc::new(policy)),
            lost,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The policy now in use; calls in flight keep the one they started with.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swap in a new policy (hot reload).
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }

    /// Prepare (active) or View: record, layout, directory, mounts, in one
    /// transaction. Nothing changes unless every step succeeds.
    pub fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let policy = self.policy();
        let parent = (!parent.is_empty()).then_some(parent);
        let (mounts, new_dir) = self.metastore.write(|tx| -> Result<_> {
            let (record, parent_ids) = tx.create(key, kind, parent, labels)?;
            self.lost.check(&self.name, key, parent_ids.iter().copied())?;
            let snapshot = describe(&record, parent_ids);
            let layout = policy.layout(&snapshot).map_err(|e| Error::policy(&self.name, e))?;
            let mounts = policy.mounts(&snapshot).map_err(|e| Error::policy(&self.name, e))?;
            let parent_content = match parent {
                Some(p) => self.content_dir(&tx.get(p)?),
                None => None,
            };
            let new_dir = self.dirs.create(record.id, &layout.steps, parent_content.as_deref())?;
            tx.set_content(key, layout.content)?;
            crate::cancel::check("create", key)?;
            Ok((render_mounts(&self.root, &mounts), new_dir))
        })?;
        new_dir.keep();
        Ok(mounts)
    }

    /// The mounts of an active snapshot or a view.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let snapshot = self.metastore.read(|tx| {
            let record = tx.get(key)?;
            if record.kind == Kind::Committed {
                return Err(wasmsnap_metastore::Error::FailedPrecondition(format!(
                    "snapshot {key:?} is committed: only active snapshots and views have mounts"
                )));
            }
            let parent_ids = tx.parent_ids(&record)?;
            Ok(describe(&record, parent_ids))
        })?;
        self.lost.check(&self.name, key, std::iter::once(snapshot.id).chain(snapshot.parent_ids.iter().copied()))?;
        let plans = self.policy().mounts(&snapshot).map_err(|e| Error::policy(&self.name, e))?;
        Ok(render_mounts(&self.root, &plans))
    }

    /// Commit active `key` as `name`; its usage is measured and stored.
    pub fn commit(&self, name: &str, key: &str, parent: &str, labels: Labels) -> Result<()> {
        // A disk-usage walk: long, so earlier writers are not kept waiting.
        self.metastore.write_long(|tx| -> Result<_> {
            let active = tx.get(key)?;
            self.lost.check(&self.name, key, [active.id])?;
            if !parent.is_empty() && active.parent.as_deref() != Some(parent) {
                return Err(Error::InvalidArgument(format!(
                    "commit of {key:?} with parent {parent:?}: its parent is {:?} (rebase is not supported)",
                    active.parent.as_deref().unwrap_or("")
                )));
            }
            let usage = match self.content_dir(&active) {
                Some(dir) if active.kind == Kind::Active => to_usage(wasmsnap_fs::usage(&dir)?),
                _ => Usage { size: 0, inodes: 0 },
            };
            tx.commit(key, name, labels, usage)?;
            crate::cancel::check("commit", key)?;
            Ok(())
        })
    }

    /// Remove a snapshot: the record first, then its directory.
    pub fn remove(&self, key: &str) -> Result<()> {
        let record = self.metastore.write(|tx| -> Result<_> { Ok(tx.remove(key)?) })?;
        self.lost.forget(record.id);
        if let Err(e) = self.dirs.remove(record.id) {
            // The record is gone; Cleanup frees what is left of the directory.
            tracing::warn!(snapshotter = %self.name, key, error = %e, "removing snapshot directory failed; left for cleanup");
        }
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Record> {
        Ok(self.metastore.read(|tx| tx.get(key))?)
    }

    pub fn update(&self, info: UpdateInfo, fieldpaths: &[String]) -> Result<Record> {
        Ok(self.metastore.write(|tx| -> Result<_> { Ok(tx.update(info, fieldpaths)?) })?)
    }

    /// Every record matching the filters (ORed; none = all).
    pub fn list(&self, filters: &[String]) -> Result<Vec<Record>> {
        let filter = parse_filters(filters).map_err(|e| Error::InvalidArgument(format!("invalid filter: {e}")))?;
        let mut out = Vec::new();
        self.metastore.read(|tx| {
            tx.list(&filter, |r| {
                out.push(r);
                Ok(())
            })
        })?;
        Ok(out)
    }

    /// Disk usage: stored at commit for committed snapshots, measured now
    /// for active ones.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let record = self.stat(key)?;
        if let Some(usage) = record.usage.filter(|_| record.kind == Kind::Committed) {
            return Ok(usage);
        }
        match (record.kind, self.content_dir(&record)) {
            (Kind::Active, Some(dir)) => Ok(to_usage(wasmsnap_fs::usage(&dir)?)),
            _ => Ok(Usage { size: 0, inodes: 0 }),
        }
    }

    /// Remove every directory without a record. Runs as a write transaction
    /// so no Prepare is half-way (its directory made, its record not yet
    /// committed) while we look.
    pub fn cleanup(&self) -> Result<()> {
        self.metastore.write(|tx| -> Result<_> {
            let keep: HashSet<SnapshotId> = tx.ids()?;
            let report = self.dirs.cleanup(&keep)?;
            tracing::info!(snapshotter = %self.name, ?report, "cleanup");
            Ok(())
        })
    }

    /// Check a record's view of the parent chain (used by recovery checks).
    pub fn read<R>(&self, f: impl FnOnce(&ReadTx) -> Result<R, wasmsnap_metastore::Error>) -> Result<R> {
        Ok(self.metastore.read(f)?)
    }

    fn content_dir(&self, record: &Record) -> Option<PathBuf> {
        record.content.as_ref().map(|name| self.dirs.dir(record.id).join(name))
    }
}

fn describe(record: &Record, parent_ids: Vec<SnapshotId>) -> Snapshot {
    Snapshot {
        id: record.id,
        kind: record.kind,
        parent_ids,
        labels: record.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn to_usage(u: wasmsnap_fs::Usage) -> Usage {
    Usage { size: u.size, inodes: u.inodes }
}
