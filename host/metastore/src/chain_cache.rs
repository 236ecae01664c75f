//! The parent chains of committed snapshots, kept in memory.
//!
//! A Prepare or View reads its parent's whole chain for the policy: one
//! B-tree lookup per ancestor, 15 µs at a hundred layers. A committed
//! snapshot's chain never changes (only an active is re-parented, by the
//! transaction that commits it; a snapshot with children cannot be
//! removed) and ids are never reused, so a walk stops at the first
//! ancestor whose chain is known here. Filled and used by read
//! transactions only: what a write transaction sees may still roll back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::record::SnapshotId;

/// Chains kept at most; past it the cache starts again empty (a full
/// chain is re-read once). Bounds the memory: a chain is at most a few
/// hundred ids.
const MAX_CHAINS: usize = 4096;

#[derive(Default)]
pub(crate) struct ChainCache {
    /// A committed snapshot's ancestors, nearest first.
    chains: Mutex<HashMap<SnapshotId, Arc<[SnapshotId]>>>,
}

impl ChainCache {
    /// The ancestors of committed snapshot `id`, if known.
    pub(crate) fn get(&self, id: SnapshotId) -> Option<Arc<[SnapshotId]>> {
        self.lock().get(&id).cloned()
    }

    /// Keeps the ancestors of committed snapshot `id` (a read transaction
    /// found it committed).
    pub(crate) fn put(&self, id: SnapshotId, ancestors: &[SnapshotId]) {
        let mut chains = self.lock();
        if chains.len() >= MAX_CHAINS {
            chains.clear();
        }
        chains.insert(id, ancestors.into());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SnapshotId, Arc<[SnapshotId]>>> {
        self.chains.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
