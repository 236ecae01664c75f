//! A snapshotter's work off the reply path, on one background thread:
//! deleting removed snapshots' directories. Remove replies once the
//! record's deletion is durable; the directory is then renamed away
//! (`rm-*`) and deleted here. The crash order holds: the record is gone
//! before the directory, and a crash with deletions still queued leaves
//! directories without records, which start-up recovery and Cleanup
//! remove. Ids are never handed out twice in one process, so no new
//! snapshot can meet a directory still queued here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use wasmsnap_fs::SnapshotDirs;
use wasmsnap_plan::SnapshotId;

use crate::metrics::SnapshotterMeters;

enum Job {
    Remove(SnapshotId),
}

pub struct Background {
    queue: Option<Sender<Job>>,
    pending: Arc<Pending>,
    /// Removals queued or running (a subset of `pending`).
    removals: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// How many jobs are queued or running.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Background {
    pub fn start(
        snapshotter: &str,
        dirs: Arc<SnapshotDirs>,
        meters: Option<Arc<SnapshotterMeters>>,
    ) -> std::io::Result<Background> {
        let (queue, jobs) = channel::<Job>();
        let pending = Arc::new(Pending::default());
        let removals = Arc::new(AtomicUsize::new(0));
        let name = snapshotter.to_string();
        let thread = {
            let pending = pending.clone();
            let removals = removals.clone();
            std::thread::Builder::new().name(format!("bg-{snapshotter}")).spawn(move || {
                for job in jobs {
                    match job {
                        Job::Remove(id) => {
                            if let Err(e) = dirs.remove(id) {
                                // The record is gone; Cleanup frees what is left.
                                tracing::warn!(snapshotter = %name, id, error = %e, "removing snapshot directory failed; left for cleanup");
                                if let Some(m) = &meters {
                                    m.removal_failed();
                                }
                            }
                            removals.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    let mut count = pending.count.lock().unwrap_or_else(PoisonError::into_inner);
                    *count -= 1;
                    if *count == 0 {
                        pending.idle.notify_all();
                    }
                }
            })?
        };
        Ok(Background { queue: Some(queue), pending, removals, thread: Some(thread) })
    }

    /// Queues the deletion of snapshot `id`'s directory (its record is gone).
    pub fn remove(&self, id: SnapshotId) {
        self.removals.fetch_add(1, Ordering::Relaxed);
        if !self.send(Job::Remove(id)) {
            self.removals.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Removals queued or running.
    pub fn removals_queued(&self) -> usize {
        self.removals.load(Ordering::Relaxed)
    }

    /// Whether the job was queued.
    fn send(&self, job: Job) -> bool {
        *self.pending.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        let sent = self.queue.as_ref().is_some_and(|q| q.send(job).is_ok());
        if !sent {
            // The thread is gone (it only ends when we drop): leave it to Cleanup.
            *self.pending.count.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        }
        sent
    }

    /// Blocks until every queued job has run.
    pub fn wait_idle(&self) {
        let mut count = self.pending.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            count = self.pending.idle.wait(count).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Background {
    /// Finishes the queued jobs (a daemon stopping leaves no `rm-*`).
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
