//! The floor: the directory operations and syncs a snapshotter with
//! wasmsnap's guarantees cannot avoid, done by a bare loop with no
//! database, no RPC and no policy. It shows how far each operation is from
//! what the disk allows.
//!
//! Per snapshot created: mkdir a temp dir and its subdirs (`fs`, and `work`
//! for an active), rename it into place, then write and fdatasync a 4 KiB
//! "record": an empty tree is not flushed, the record is (see
//! `docs/crash-safety.md`, "Power loss"). Per commit or remove: the
//! record's write and fdatasync (remove then renames the directory away
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
    snapshots: PathBuf,
    record: File,
    next: AtomicUsize,
}

/// The floor's steps per created snapshot.
pub const RECIPE: &str = "mkdir temp/{fs,work}, rename, fdatasync record";

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
    let floor = Floor { snapshots, record, next: AtomicUsize::new(0) };

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
    /// A new snapshot directory in place, then its record, durably.
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
        let path = self.snapshots.join(n.to_string());
        fs::rename(&temp, &path)?;
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
