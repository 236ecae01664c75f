//! The floor: the directory operations and syncs a snapshotter that keeps
//! containerd's crash order cannot avoid, done by a bare loop with no
//! database, no RPC and no policy. It shows how far each operation is from
//! what the disk allows.
//!
//! Per snapshot created: mkdir a temp dir and its subdirs (`fs`, and `work`
//! for an active), fsync the temp dir, rename it into place, fsync the
//! parent, then write and fdatasync a 4 KiB "record". On a file system that
//! does not keep metadata in order (ext4 without a journal, as on this
//! project's VMs) each new subdir is fsynced too, as it must be there for
//! its inode to be on disk. Per commit or remove:
//! the record's write and fdatasync (remove then renames the directory away
//! and deletes it, with no sync: a directory without a record is allowed).
//! Reads (stat, list, mounts) touch no disk: they have no floor.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::stats::Samples;
use super::workload::{Op, RunSamples, Shape};

struct Floor {
    /// fsync each new subdir (no ordered metadata journal here).
    sync_subdirs: bool,
    snapshots: PathBuf,
    snapshots_dir: File,
    record: File,
    next: AtomicUsize,
}

/// The floor's steps per created snapshot on the file system holding `dir`.
pub fn recipe(dir: &Path) -> anyhow::Result<&'static str> {
    Ok(if sync_subdirs(dir)? {
        "mkdir temp/{fs,work}, fsync fs, fsync work, fsync temp, rename, fsync parent, fdatasync record (no ordered metadata journal)"
    } else {
        "mkdir temp/{fs,work}, fsync temp, rename, fsync parent, fdatasync record"
    })
}

fn sync_subdirs(dir: &Path) -> anyhow::Result<bool> {
    let probe = tempfile::Builder::new().prefix("floor-probe-").tempdir_in(dir)?;
    Ok(!wasmsnap_fs::SnapshotDirs::open(probe.path())?.orders_metadata())
}

/// Runs the floor loop of `shape` in a fresh directory under `dir` (put it
/// on the same file system as the snapshotters' roots).
pub fn run(dir: &Path, shape: Shape) -> anyhow::Result<RunSamples> {
    let scratch = tempfile::Builder::new()
        .prefix("floor-")
        .tempdir_in(dir)
        .with_context(|| format!("temp dir in {}", dir.display()))?;
    let snapshots = scratch.path().join("snapshots");
    fs::create_dir(&snapshots)?;
    let record = File::options()
        .create_new(true)
        .read(true)
        .write(true)
        .open(scratch.path().join("records"))?;
    record.write_all_at(&[0; 64 * 4096], 0)?;
    record.sync_all()?;
    let floor = Floor {
        sync_subdirs: sync_subdirs(dir)?,
        snapshots_dir: File::open(&snapshots)?,
        snapshots,
        record,
        next: AtomicUsize::new(0),
    };

    let mut out = RunSamples::new();
    let (mut pairs, mut prepares, mut commits) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut chain = Vec::new();
    for _ in 0..shape.depth {
        let started = Instant::now();
        chain.push(floor.create(true)?);
        let prepared = Instant::now();
        floor.write_record()?;
        let done = Instant::now();
        prepares.latencies.push(prepared - started);
        commits.latencies.push(done - prepared);
        pairs.latencies.push(done - started);
    }
    for s in [&mut pairs, &mut prepares, &mut commits] {
        s.wall = s.latencies.iter().sum();
    }
    out.insert(Op::PrepareCommit, pairs);
    out.insert(Op::Prepare, prepares);
    out.insert(Op::Commit, commits);

    let mut views = Vec::new();
    out.insert(
        Op::View,
        timed(shape.views(), |_| {
            views.push(floor.create(false)?);
            Ok(())
        })?,
    );
    let mut views = views.into_iter();
    out.insert(Op::RemoveView, timed(shape.views(), |_| floor.remove(views.next().unwrap()))?);
    out.insert(Op::Churn, floor.churn(shape)?);
    let mut chain = chain.into_iter().rev();
    out.insert(Op::RemoveChain, timed(shape.depth, |_| floor.remove(chain.next().unwrap()))?);
    Ok(out)
}

impl Floor {
    /// A new snapshot directory, durable and in place, then its record.
    fn create(&self, active: bool) -> anyhow::Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let temp = self.snapshots.join(format!("new-{n}"));
        fs::create_dir(&temp)?;
        let mut subdirs = vec![temp.join("fs")];
        if active {
            subdirs.push(temp.join("work"));
        }
        for sub in &subdirs {
            fs::create_dir(sub)?;
        }
        if self.sync_subdirs {
            for sub in &subdirs {
                File::open(sub)?.sync_all()?;
            }
        }
        File::open(&temp)?.sync_all()?;
        let path = self.snapshots.join(n.to_string());
        fs::rename(&temp, &path)?;
        self.snapshots_dir.sync_all()?;
        self.write_record()?;
        Ok(path)
    }

    /// The record goes first, then the directory (no sync needed for that).
    fn remove(&self, path: PathBuf) -> anyhow::Result<()> {
        self.write_record()?;
        let away =
            path.with_file_name(format!("rm-{}", path.file_name().unwrap().to_string_lossy()));
        fs::rename(&path, &away)?;
        fs::remove_dir_all(&away)?;
        Ok(())
    }

    fn write_record(&self) -> anyhow::Result<()> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % 64;
        self.record.write_all_at(&[1; 4096], (slot * 4096) as u64)?;
        self.record.sync_data()?;
        Ok(())
    }

    fn churn(&self, shape: Shape) -> anyhow::Result<Samples> {
        let phase = Instant::now();
        let latencies = std::thread::scope(|s| {
            let workers: Vec<_> = (0..shape.workers)
                .map(|_| {
                    s.spawn(|| {
                        (0..shape.churn_per_worker)
                            .map(|_| {
                                let started = Instant::now();
                                self.remove(self.create(true)?)?;
                                Ok(started.elapsed())
                            })
                            .collect::<anyhow::Result<Vec<Duration>>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("floor worker panicked"))
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        Ok(Samples { latencies: latencies.concat(), wall: phase.elapsed() })
    }
}

fn timed(n: usize, mut f: impl FnMut(usize) -> anyhow::Result<()>) -> anyhow::Result<Samples> {
    let phase = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        f(i)?;
        latencies.push(started.elapsed());
    }
    Ok(Samples { latencies, wall: phase.elapsed() })
}
