//! A snapshotter's work off the reply path, on one background thread:
//!
//! - deleting removed snapshots' directories. Remove replies once the
//!   record's deletion is durable; the directory is then renamed away
//!   (`rm-*`) and deleted here. The crash order holds: the record is gone
//!   before the directory, and a crash with deletions still queued leaves
//!   directories without records, which start-up recovery and Cleanup
//!   remove. Ids are never handed out twice in one process, so no new
//!   snapshot can meet a directory still queued here.
//! - making spare directory trees for the next Prepare of the same layout
//!   shape (see `wasmsnap_fs::SnapshotDirs::make_spares`).

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use wasmsnap_fs::SnapshotDirs;
use wasmsnap_plan::{SnapshotId, Step};

/// Spare trees kept per layout shape: enough for a burst of Prepares
/// (containerd starts pods' containers a few at a time).
const SPARES: usize = 8;

enum Job {
    Remove(SnapshotId),
    Spares(Vec<Step>),
}

pub struct Background {
    queue: Option<Sender<Job>>,
    pending: Arc<Pending>,
    thread: Option<JoinHandle<()>>,
}

/// How many jobs are queued or running.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Background {
    pub fn start(snapshotter: &str, dirs: Arc<SnapshotDirs>) -> std::io::Result<Background> {
        let (queue, jobs) = channel::<Job>();
        let pending = Arc::new(Pending::default());
        let name = snapshotter.to_string();
        let thread = {
            let pending = pending.clone();
            std::thread::Builder::new().name(format!("bg-{snapshotter}")).spawn(move || {
                for job in jobs {
                    match job {
                        Job::Remove(id) => {
                            if let Err(e) = dirs.remove(id) {
                                // The record is gone; Cleanup frees what is left.
                                tracing::warn!(snapshotter = %name, id, error = %e, "removing snapshot directory failed; left for cleanup");
                            }
                        }
                        Job::Spares(steps) => {
                            if let Err(e) = dirs.make_spares(&steps, SPARES) {
                                // Prepares build their directories themselves meanwhile.
                                tracing::warn!(snapshotter = %name, error = %e, "making spare snapshot directories failed");
                            }
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
        Ok(Background { queue: Some(queue), pending, thread: Some(thread) })
    }

    /// Queues the deletion of snapshot `id`'s directory (its record is gone).
    pub fn remove(&self, id: SnapshotId) {
        self.send(Job::Remove(id));
    }

    /// Queues making spare trees for layouts like `steps`.
    pub fn make_spares(&self, steps: Vec<Step>) {
        self.send(Job::Spares(steps));
    }

    fn send(&self, job: Job) {
        *self.pending.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        let sent = self.queue.as_ref().is_some_and(|q| q.send(job).is_ok());
        if !sent {
            // The thread is gone (it only ends when we drop): leave it to Cleanup.
            *self.pending.count.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        }
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
