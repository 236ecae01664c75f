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

/// What the cache may hold, in id-sized words: each chain costs its ids
/// plus [`ENTRY_WORDS`] for its map slot and allocation (so an empty chain
/// counts too). About 4 MiB; past it the cache starts again empty (each
/// chain is walked once more). Entries of removed snapshots go then too.
const MAX_WORDS: usize = 1 << 19;
const ENTRY_WORDS: usize = 6;

type Chains = HashMap<SnapshotId, Arc<[SnapshotId]>>;

#[derive(Default)]
pub(crate) struct ChainCache {
    /// A committed snapshot's ancestors, nearest first, and the words they
    /// cost in all.
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
        let (chains, words) = &mut *guard;
        let cost = ancestors.len() + ENTRY_WORDS;
        if *words + cost > MAX_WORDS {
            chains.clear();
            *words = 0;
        }
        *words += cost;
        if let Some(old) = chains.insert(id, ancestors.into()) {
            *words -= old.len() + ENTRY_WORDS;
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
    fn keeps_chains_up_to_its_budget_then_starts_again() {
        let cache = ChainCache::default();
        let long: Vec<SnapshotId> = (1..=1000).collect();
        let fit = MAX_WORDS / (1000 + ENTRY_WORDS);
        for id in 0..fit as u64 {
            cache.put(10_000 + id, &long);
        }
        assert_eq!(cache.get(10_000).as_deref(), Some(&long[..]));
        assert_eq!(cache.lock().1, fit * (1000 + ENTRY_WORDS));
        // One more does not fit: the cache starts again with it alone.
        cache.put(1, &long);
        assert_eq!(cache.get(10_000), None);
        assert_eq!(cache.get(1).as_deref(), Some(&long[..]));
        assert_eq!(cache.lock().1, 1000 + ENTRY_WORDS);
        // Putting a chain again does not count it twice.
        cache.put(1, &long[..10]);
        assert_eq!(cache.lock().1, 10 + ENTRY_WORDS);
        // Empty chains (base layers) count too: they cannot grow it unbounded.
        for id in 0..MAX_WORDS as u64 {
            cache.put(100_000 + id, &[]);
        }
        assert!(cache.lock().0.len() <= MAX_WORDS / ENTRY_WORDS);
    }
}
