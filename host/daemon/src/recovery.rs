//! Start-up recovery: make a snapshotter's metastore and its `snapshots/`
//! directory agree again after a crash (SIGKILL, power loss), before the
//! first request is served.
//!
//! The crash order (see `snapshotter.rs`) allows, after a process crash,
//! only one kind of drift: a directory without a record. Recovery removes
//! all of them at once, not
//! leaving them for the next Cleanup, because nothing can be in flight at
//! start (redb refuses a second process on the same root) and because an
//! id whose transaction never committed is handed out again after a crash:
//! its leftover `<id>` directory must be gone before that happens.
//! Removed: `new-*` (a Prepare or View interrupted before its rename),
//! `rm-*` (a Remove interrupted while deleting), `<id>` with no record (a
//! Prepare or View whose record never committed), and any other entry.
//!
//! A power loss can also take the tree of an active snapshot or a view made
//! shortly before: those empty trees are not flushed before their record
//! (the record alone holds what is worth keeping). Recovery makes them
//! again from the record and the policy's layout (`rebuild_trees`).
//!
//! The other drift, a record whose directory is missing and cannot be
//! rebuilt, comes only from outside (someone deleted it, a restored backup
//! of the metastore, a damaged file system) or from a power loss right
//! after a Commit (a layer's files are not flushed either, by wasmsnap or
//! containerd's applier). Such a record is never
//! dropped: it is logged as an error naming key, id and path at every
//! start, and stays visible so containerd's garbage collector can remove
//! it: it still Lists and Stats, and Remove of it succeeds. Mounts of it or
//! of any snapshot above it, Prepare or View on top of it, and Commit of
//! it fail with FailedPrecondition naming the lost directory
//! ([`LostDirs::check`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use wasmsnap_engine::Policy;
use wasmsnap_fs::SnapshotDirs;
use wasmsnap_metastore::{Error as MetaError, Filter, Metastore, Reads, Record};
use wasmsnap_plan::{Kind, SnapshotId};

use crate::error::{Error, Result};

/// A record whose directory is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostDir {
    pub key: String,
    pub id: SnapshotId,
    /// The path that should exist and does not.
    pub path: PathBuf,
}

/// The snapshots found without their directory at start, by id. Operations
/// that need a directory check against it; Remove forgets an entry.
#[derive(Debug, Default)]
pub struct LostDirs {
    lost: RwLock<BTreeMap<SnapshotId, LostDir>>,
}

impl LostDirs {
    /// FailedPrecondition if the snapshot `key` (ids: its own first, then its
    /// parents') or one of its parents lost its directory.
    pub fn check(
        &self,
        snapshotter: &str,
        key: &str,
        ids: impl IntoIterator<Item = SnapshotId>,
    ) -> Result<()> {
        let lost = self.lost.read().unwrap_or_else(|e| e.into_inner());
        if lost.is_empty() {
            return Ok(());
        }
        for id in ids {
            if let Some(l) = lost.get(&id) {
                let whose = if l.key == key {
                    "its".to_string()
                } else {
                    format!("its parent {:?}'s", l.key)
                };
                return Err(Error::FailedPrecondition(format!(
                    "snapshotter {snapshotter:?}: snapshot {key:?} cannot be used: {whose} directory {} \
                     (snapshot id {}) is missing (found at start-up); remove the snapshot and create it again",
                    l.path.display(),
                    l.id
                )));
            }
        }
        Ok(())
    }

    /// The snapshot's record is gone: nothing to guard any more.
    pub fn forget(&self, id: SnapshotId) {
        self.lost.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// Recover the snapshotter `name`; call once, after opening its metastore
/// and directories and before serving. Logs everything it finds; returns
/// the records whose directory is missing.
pub fn recover(
    name: &str,
    metastore: &Metastore,
    dirs: &SnapshotDirs,
    policy: &Policy,
) -> anyhow::Result<LostDirs> {
    let (records, chains, keep) = metastore.read(|tx| {
        let mut records = Vec::new();
        tx.list(&Filter::default(), |r| {
            records.push(r);
            Ok(())
        })?;
        let chains = records.iter().map(|r| tx.parent_ids(r)).collect::<Vec<_>>();
        Ok((records, chains, tx.ids()?))
    })?;

    // Nothing runs yet, so everything without a record is a crash leftover.
    let cleaned = dirs.cleanup(&keep)?;
    for path in &cleaned.removed {
        tracing::warn!(snapshotter = name, path = %path.display(), what = leftover_kind(path), "recovery: removed a crash leftover");
    }
    for e in &cleaned.failed {
        tracing::error!(snapshotter = name, error = %e, "recovery: could not remove a crash leftover; Cleanup will retry");
    }

    let rebuilt = rebuild_trees(name, dirs, policy, &records, &chains);
    let on_disk = dirs.ids_on_disk()?;
    let mut lost = BTreeMap::new();
    for record in &records {
        if let Some(missing) = missing_path(dirs, record, &on_disk) {
            tracing::error!(
                snapshotter = name,
                key = %record.name,
                id = record.id,
                kind = ?record.kind,
                path = %missing.display(),
                "recovery: snapshot directory is MISSING; the record is kept so it can be removed \
                 (containerd's GC or `ctr snapshots rm`); mounting it or creating on top of it fails"
            );
            lost.insert(
                record.id,
                LostDir { key: record.name.clone(), id: record.id, path: missing },
            );
        }
    }

    let broken_links = broken_links(&records, chains);
    for message in &broken_links {
        tracing::error!(snapshotter = name, "recovery: {message}");
    }

    tracing::info!(
        snapshotter = name,
        records = records.len(),
        removed = cleaned.removed.len(),
        rebuilt,
        failed = cleaned.failed.len(),
        lost = lost.len(),
        broken_links = broken_links.len(),
        "recovery done"
    );
    Ok(LostDirs { lost: RwLock::new(lost) })
}

/// Makes again the trees of active snapshots and views that a power loss
/// took (their directories are not flushed before the record: see
/// `wasmsnap_fs::SnapshotDirs`'s durability), from each record and the
/// layout the policy in use gives it. Returns how many were rebuilt; what
/// cannot be rebuilt is left for the missing-directory check.
fn rebuild_trees(
    name: &str,
    dirs: &SnapshotDirs,
    policy: &Policy,
    records: &[Record],
    chains: &[Result<Vec<SnapshotId>, MetaError>],
) -> usize {
    let by_key: BTreeMap<&str, &Record> = records.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut rebuilt = 0;
    for (record, chain) in records.iter().zip(chains) {
        let (Kind::Active | Kind::View, Ok(chain)) = (record.kind, chain) else { continue };
        let parent_content = record
            .parent
            .as_deref()
            .and_then(|p| by_key.get(p))
            .and_then(|p| Some(dirs.dir(p.id).join(p.content.as_ref()?)));
        let made = crate::snapshotter::policy_snapshot(
            record.id,
            record.kind,
            chain.clone(),
            &record.labels,
        )
        .map_err(|e| e.message())
        .and_then(|snapshot| {
            let layout = policy.layout(&snapshot).map_err(|e| e.to_string())?;
            let mapped_root = snapshot.id_map.as_ref().and_then(wasmsnap_plan::IdMap::root);
            dirs.rebuild(record.id, &layout.steps, parent_content.as_deref(), mapped_root)
                .map_err(|e| e.to_string())
        });
        match made {
            Ok(made) if made.is_empty() => {}
            Ok(made) => {
                rebuilt += 1;
                tracing::warn!(
                    snapshotter = name,
                    key = %record.name,
                    id = record.id,
                    made = ?made,
                    "recovery: rebuilt what a power loss took of an empty snapshot tree"
                );
            }
            Err(e) => tracing::error!(
                snapshotter = name,
                key = %record.name,
                id = record.id,
                error = %e,
                "recovery: could not check or rebuild the snapshot's tree"
            ),
        }
    }
    rebuilt
}

/// The path of `record` that should exist and does not: its directory, or
/// the content directory inside it.
fn missing_path(
    dirs: &SnapshotDirs,
    record: &Record,
    on_disk: &HashSet<SnapshotId>,
) -> Option<PathBuf> {
    let dir = dirs.dir(record.id);
    if !on_disk.contains(&record.id) || !is_dir(&dir) {
        return Some(dir);
    }
    let content = dir.join(record.content.as_ref()?);
    (!is_dir(&content)).then_some(content)
}

fn is_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Parent links that do not hold: a parent that is missing or not
/// committed, or an id chain that does not lead to it. The metastore
/// writes each link in one transaction, so this finds only damage.
fn broken_links(
    records: &[Record],
    chains: Vec<Result<Vec<SnapshotId>, MetaError>>,
) -> Vec<String> {
    let by_key: BTreeMap<&str, &Record> = records.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut broken = Vec::new();
    for (record, chain) in records.iter().zip(chains) {
        let Some(parent) = &record.parent else {
            if let Err(e) = chain {
                broken.push(format!("snapshot {:?}: parent chain unreadable: {e}", record.name));
            }
            continue;
        };
        match (by_key.get(parent.as_str()), chain) {
            (None, _) => broken.push(format!(
                "snapshot {:?} names parent {parent:?}, which has no record",
                record.name
            )),
            (Some(p), _) if p.kind != Kind::Committed => broken.push(format!(
                "snapshot {:?} has parent {parent:?}, which is not committed",
                record.name
            )),
            (Some(p), Ok(ids)) if ids.first() != Some(&p.id) => broken.push(format!(
                "snapshot {:?}: parent {parent:?} has id {}, but the id chain says {:?}",
                record.name, p.id, ids
            )),
            (Some(_), Err(e)) => {
                broken.push(format!("snapshot {:?}: parent chain unreadable: {e}", record.name))
            }
            _ => {}
        }
    }
    broken
}

fn leftover_kind(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with("new-") {
        "interrupted create"
    } else if name.starts_with("rm-") {
        "interrupted remove"
    } else if name.parse::<u64>().is_ok() {
        "directory without a record"
    } else {
        "unknown entry"
    }
}
