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

/// Ids kept at most, over all chains (8 MiB); past it the cache starts
/// again empty (each chain is walked once more).
const MAX_IDS: usize = 1 << 20;

type Chains = HashMap<SnapshotId, Arc<[SnapshotId]>>;

#[derive(Default)]
pub(crate) struct ChainCache {
    /// A committed snapshot's ancestors, nearest first, and how many ids
    /// that is in all.
    chains: Mutex<(Chains, usize)>,
}

impl ChainCache {
    /// The ancestors of committed snapshot `id`, if known.
    pub(crate) fn get(&self, id: SnapshotId) -> Option<Arc<[SnapshotId]>> {
        self.lock().0.get(&id).cloned()
    }

    /// Keeps the ancestors of committed snapshot `id` (a read transaction
    /// found it committed).
    pub(crate) fn put(&self, id: SnapshotId, ancestors: &[SnapshotId]) {
        let mut guard = self.lock();
        let (chains, ids) = &mut *guard;
        if *ids + ancestors.len() > MAX_IDS {
            chains.clear();
            *ids = 0;
        }
        *ids += ancestors.len();
        if let Some(old) = chains.insert(id, ancestors.into()) {
            *ids -= old.len();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Chains, usize)> {
        self.chains.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_chains_up_to_its_id_budget_then_starts_again() {
        let cache = ChainCache::default();
        let long: Vec<SnapshotId> = (1..=1000).collect();
        for id in 0..(MAX_IDS / 1000) as u64 {
            cache.put(10_000 + id, &long);
        }
        assert_eq!(cache.get(10_000).as_deref(), Some(&long[..]));
        assert_eq!(cache.lock().1, MAX_IDS / 1000 * 1000);
        // One more does not fit: the cache starts again with it alone.
        cache.put(1, &long);
        assert_eq!(cache.get(10_000), None);
        assert_eq!(cache.get(1).as_deref(), Some(&long[..]));
        assert_eq!(cache.lock().1, 1000);
        // Putting a chain again does not count it twice.
        cache.put(1, &long[..10]);
        assert_eq!(cache.lock().1, 10);
    }
}
