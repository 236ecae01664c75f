//! A snapshotter's work off the reply path, on one background thread:
//! deleting removed snapshots' directories. Remove replies once the
//! record's deletion is durable; the directory is then renamed away
//! (`rm-*`) and deleted here. The crash order holds: the record is gone
//! before the directory, and a crash with deletions still queued leaves
//! directories without records, which start-up recovery and Cleanup
//! remove. Ids are never handed out twice in one process, so no new
//! snapshot can meet a directory still queued here.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use wasmsnap_fs::SnapshotDirs;
use wasmsnap_plan::SnapshotId;

use crate::metrics::SnapshotterMeters;

pub struct Background {
    /// Snapshots whose directories are to be deleted.
    queue: Option<Sender<SnapshotId>>,
    pending: Arc<Pending>,
    thread: Option<JoinHandle<()>>,
}

/// How many removals are queued or running.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Pending {
    fn count(&self) -> MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Background {
    pub fn start(
        snapshotter: &str,
        dirs: Arc<SnapshotDirs>,
        meters: Option<Arc<SnapshotterMeters>>,
    ) -> std::io::Result<Background> {
        let (queue, removals) = channel::<SnapshotId>();
        let pending = Arc::new(Pending::default());
        let name = snapshotter.to_string();
        let thread = {
            let pending = pending.clone();
            std::thread::Builder::new().name(format!("bg-{snapshotter}")).spawn(move || {
                for id in removals {
                    if let Err(e) = dirs.remove(id) {
                        // The record is gone; Cleanup frees what is left.
                        tracing::warn!(snapshotter = %name, id, error = %e, "removing snapshot directory failed; left for cleanup");
                        if let Some(m) = &meters {
                            m.removal_failed();
                        }
                    }
                    let mut count = pending.count();
                    *count -= 1;
                    if *count == 0 {
                        pending.idle.notify_all();
                    }
                }
            })?
        };
        Ok(Background { queue: Some(queue), pending, thread: Some(thread) })
    }

    /// Queues the deletion of snapshot `id`'s directory (its record is gone).
    pub fn remove(&self, id: SnapshotId) {
        *self.pending.count() += 1;
        let sent = self.queue.as_ref().is_some_and(|q| q.send(id).is_ok());
        if !sent {
            // The thread is gone (it only ends when we drop): leave it to Cleanup.
            *self.pending.count() -= 1;
        }
    }

    /// Removals queued or running.
    pub fn removals_queued(&self) -> usize {
        *self.pending.count()
    }

    /// Blocks until every queued removal has run.
    pub fn wait_idle(&self) {
        let mut count = self.pending.count();
        while *count > 0 {
            count = self.pending.idle.wait(count).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Background {
    /// Finishes the queued removals (a daemon stopping leaves no `rm-*`).
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
