//! Rendered mount plans of active snapshots and views, by snapshot id.
//!
//! Mounts is a hot path (containerd asks at every container start and
//! mount): a hit skips the walk up the parent chain, the policy call,
//! validation and rendering. An entry is used only while the record it was
//! made from is unchanged (same id and same `updated` time: Update of labels
//! moves it) and the policy that made it is still the one in use (a hot
//! reload bumps the generation). Remove drops the entry. Commit leaves it:
//! the snapshot is committed then, Mounts refuses it before looking here,
//! and its Remove drops the entry.
//!
//! Parents never change under a snapshot: they are committed, and a parent
//! with children cannot be removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use wasmsnap_metastore::{Record, Timestamp};
use wasmsnap_plan::{Mount, SnapshotId};

#[derive(Default)]
pub struct MountCache {
    entries: Mutex<HashMap<SnapshotId, Entry>>,
}

struct Entry {
    updated: Timestamp,
    policy_generation: u64,
    mounts: Arc<Vec<Mount>>,
}

impl MountCache {
    /// The cached plan of `record` as made by policy `generation`, if any.
    pub fn get(&self, record: &Record, generation: u64) -> Option<Arc<Vec<Mount>>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&record.id)
            .filter(|e| e.updated == record.updated && e.policy_generation == generation)
            .map(|e| e.mounts.clone())
    }

    pub fn put(&self, record: &Record, generation: u64, mounts: Arc<Vec<Mount>>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.insert(
            record.id,
            Entry { updated: record.updated, policy_generation: generation, mounts },
        );
    }

    pub fn forget(&self, id: SnapshotId) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}
