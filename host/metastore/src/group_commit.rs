//! Group commit: concurrent write transactions share one flush.
//!
//! Every write transaction commits to redb without fsync and appends its
//! entry to the redo log (see `redo_log`). Writers queue for the single redb
//! write transaction. A writer that finds others queued behind it leaves the
//! log unflushed and waits; the last writer of the queue flushes it, which
//! makes every earlier entry durable too, and wakes the waiters. A writer
//! alone pays exactly one flush. If the last writer aborts (its closure
//! failed or panicked), it still flushes so that nobody waits forever.
//!
//! The flush runs after the writer has let go of the write transaction, so
//! the next writers' transactions run while it is on its way to the disk.
//! One flush runs at a time (its writer is the *leader*): a writer whose
//! entry came after the running flush began waits for it to end, and the
//! first of them then flushes for all of them.
//!
//! A commit is visible to readers before its entry is flushed. So that a
//! reply never reports state that a crash could still take back, a reader
//! waits (after its transaction) until everything it could have seen is
//! durable; normally that is already so and costs one uncontended lock.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::error::Error;

/// Commits are numbered ("generations") in the order redb makes them.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Writers that asked for the write transaction and have not yet
    /// committed or aborted.
    queued: usize,
    /// The last generation handed out (its commit may still be running).
    committed: u64,
    /// Every generation up to this one has been through its writer's
    /// append: its entry is in the log, or it needs none (its commit failed,
    /// or a checkpoint made it durable), or the log is not trusted and a
    /// flush will not count (see `Metastore::make_durable`).
    appended: u64,
    /// A leader's flush is running.
    flushing: bool,
    /// Every generation up to this one is on disk.
    durable: u64,
    /// A durable commit of this generation failed: waiters up to it learn so.
    failed: u64,
    failure: String,
    /// Commits made, and how many flushes (or checkpoints) made them durable.
    stats: CommitStats,
}

/// Told of every durable commit (for the daemon's metrics): how long the
/// commit and the flush took, and how many commits it made durable (itself
/// and those whose entries were left unflushed before it; a flush for an
/// aborted writer counts).
pub trait CommitObserver: Send + Sync {
    fn durable_commit(&self, took: std::time::Duration, grouped: u64);
}

/// How much grouping happened: commits made and the flushes that made them
/// durable; `durable` below `commits` means writes shared flushes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub commits: u64,
    pub durable: u64,
}

impl GroupCommit {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A writer joins the queue (before it waits for the write lock).
    pub fn enqueue(&self) {
        self.state().queued += 1;
    }

    /// A writer leaves the queue; returns whether others are still queued,
    /// that is whether someone after it is bound to commit durably.
    pub fn dequeue(&self) -> bool {
        let mut st = self.state();
        st.queued -= 1;
        st.queued > 0
    }

    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.state().queued
    }

    /// Numbers the commit about to be made (called before it becomes
    /// visible, so a reader's [`last`](Self::last) covers what it saw).
    pub fn reserve(&self) -> u64 {
        let mut st = self.state();
        st.committed += 1;
        st.committed
    }

    /// The last generation handed out.
    pub fn last(&self) -> u64 {
        self.state().committed
    }

    /// Every generation up to `generation` has its entry in the log (called
    /// with the write lock held).
    pub fn appended(&self, generation: u64) {
        let mut st = self.state();
        st.appended = st.appended.max(generation);
    }

    /// Waits until `generation` is durable (`None`) or no flush runs; then
    /// the caller leads the next flush, which covers the returned
    /// generation and everything before it. End it with [`flush_ended`].
    ///
    /// [`flush_ended`]: Self::flush_ended
    pub fn lead_or_wait(&self, generation: u64) -> Result<Option<u64>, Error> {
        let mut st = self.state();
        loop {
            if st.durable >= generation {
                return Ok(None);
            }
            if st.failed >= generation {
                return Err(failure(&st));
            }
            if !st.flushing {
                st.flushing = true;
                return Ok(Some(st.appended));
            }
            st = self.changed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The leader's flush ended (its outcome marked before).
    pub fn flush_ended(&self) {
        self.state().flushing = false;
        self.changed.notify_all();
    }

    /// Whether a commit still waits for a flush.
    pub fn needs_sync(&self) -> bool {
        let st = self.state();
        st.committed > st.durable
    }

    /// Counts a commit that succeeded.
    pub fn count_commit(&self) {
        self.state().stats.commits += 1;
    }

    /// Counts a flush (or a checkpoint) that made commits durable.
    pub fn count_flush(&self) {
        self.state().stats.durable += 1;
    }

    pub fn stats(&self) -> CommitStats {
        self.state().stats
    }

    /// Returns how many commits this made durable (the group's size).
    pub fn mark_durable(&self, generation: u64) -> u64 {
        let mut st = self.state();
        let grouped = generation.saturating_sub(st.durable);
        st.durable = st.durable.max(generation);
        drop(st);
        self.changed.notify_all();
        grouped
    }

    pub fn mark_failed(&self, generation: u64, why: String) {
        let mut st = self.state();
        if generation > st.failed {
            st.failed = generation;
            st.failure = why;
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Blocks until `generation` is durable; an error if the durable commit
    /// meant to cover it failed.
    pub fn wait_durable(&self, generation: u64) -> Result<(), Error> {
        let mut st = self.state();
        loop {
            if st.durable >= generation {
                return Ok(());
            }
            if st.failed >= generation {
                return Err(failure(&st));
            }
            st = self.changed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn failure(st: &State) -> Error {
    Error::Storage(format!(
        "the durable commit of this change failed, it may be lost: {}",
        st.failure
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn waiters_wake_on_durable_or_failure() {
        let group = Arc::new(GroupCommit::default());
        let g1 = group.reserve();
        let g2 = group.reserve();
        assert!(group.needs_sync());
        let waiter = {
            let group = group.clone();
            thread::spawn(move || group.wait_durable(g1))
        };
        group.mark_durable(g2);
        waiter.join().unwrap().unwrap();
        assert!(!group.needs_sync());

        let g3 = group.reserve();
        let waiter = {
            let group = group.clone();
            thread::spawn(move || group.wait_durable(g3))
        };
        group.mark_failed(g3, "disk on fire".into());
        let err = waiter.join().unwrap().unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        group.wait_durable(g2).unwrap();
    }

    /// One flush at a time: a second writer waits for the running flush and
    /// is done if it covered it, or leads the next one.
    #[test]
    fn one_leader_flushes_at_a_time() {
        let group = Arc::new(GroupCommit::default());
        let g1 = group.reserve();
        group.appended(g1);
        assert_eq!(group.lead_or_wait(g1).unwrap(), Some(g1), "g1 leads");
        let g2 = group.reserve();
        group.appended(g2);
        let second = {
            let group = group.clone();
            thread::spawn(move || group.lead_or_wait(g2))
        };
        thread::sleep(std::time::Duration::from_millis(20));
        assert!(!second.is_finished(), "waits while g1's flush runs");
        group.mark_durable(g1);
        group.flush_ended();
        assert_eq!(second.join().unwrap().unwrap(), Some(g2), "then leads for g2");
        group.mark_durable(g2);
        group.flush_ended();
        assert_eq!(group.lead_or_wait(g1).unwrap(), None, "already durable");
    }

    #[test]
    fn the_queue_tells_a_writer_whether_someone_follows() {
        let group = GroupCommit::default();
        group.enqueue();
        group.enqueue();
        assert!(group.dequeue());
        assert!(!group.dequeue());
    }
}
