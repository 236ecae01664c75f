//! The metastore: one redb file per snapshotter root, and the transaction
//! discipline around it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    WriteTransaction,
};

use crate::chain_cache::ChainCache;
use crate::error::Error;
use crate::group_commit::{CommitObserver, CommitStats, GroupCommit};
use crate::read_tx::ReadTx;
use crate::redo_log::{Change, RedoLog};
use crate::tables::{
    CHILDREN, IDS, META, META_LOG_ID, META_NEXT_ID, META_REDO_APPLIED, META_SCHEMA_VERSION,
    RECORDS, SCHEMA_VERSION,
};
use crate::write_tx::WriteTx;

/// The metastore's file name inside a snapshotter root.
pub const FILE_NAME: &str = "metadata.redb";

/// Snapshot records of one snapshotter. `Send + Sync`: share it behind an `Arc`.
pub struct Metastore {
    db: Database,
    path: PathBuf,
    group: GroupCommit,
    /// Serialises writers (redb allows one write transaction at a time; the
    /// queue around it is what group commit needs to see), and guards the
    /// redo log they append to.
    writer: Mutex<RedoLog>,
    /// The redo log's file, flushed without the write lock.
    log_file: Arc<File>,
    /// A flush of the log failed: until a checkpoint, nothing is made
    /// durable by flushing it (see `make_durable`).
    log_failed: AtomicBool,
    /// The thread holding the write transaction (0: none), to refuse a nested
    /// write instead of deadlocking, and to let reads inside a write skip the
    /// durability wait that only the write itself can end.
    writer_thread: AtomicU64,
    /// See `WriteTx::allocate_id`.
    id_floor: AtomicU64,
    /// Told of each durable commit (set once, by the daemon's metrics).
    observer: OnceLock<Arc<dyn CommitObserver>>,
    /// What a durable commit has cost lately, in ns (a moving average;
    /// `u64::MAX` until the first one): see [`durable_commit_cost`].
    ///
    /// [`durable_commit_cost`]: Self::durable_commit_cost
    commit_cost_ns: AtomicU64,
    /// The same for a flush of the redo log alone (see [`flush_cost`]).
    ///
    /// [`flush_cost`]: Self::flush_cost
    flush_cost_ns: AtomicU64,
    /// Parent chains of committed snapshots (see `chain_cache`).
    chains: Arc<ChainCache>,
}

impl Metastore {
    /// Creates or opens `<root>/metadata.redb` (creating `root` if needed),
    /// checking its schema version: a newer one than this build understands
    /// is refused. Then applies what the redo log (`<root>/metadata.redo`)
    /// holds after the last checkpoint (see `redo_log`).
    pub fn open(root: &Path) -> Result<Metastore, Error> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::Storage(format!("cannot create {}: {e}", root.display())))?;
        let path = root.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => Error::Storage(format!(
                "{} is already open (is another wasmsnap serving this root?)",
                path.display()
            )),
            e => Error::Storage(format!("cannot open {}: {e}", path.display())),
        })?;
        // One durable commit: the schema, the log's id, the replay, and
        // where the log goes on.
        let txn = db.begin_write()?;
        let log_id = init_schema(&txn, &path)?;
        let mut log = RedoLog::open(root)?;
        let go_on_from = replay(&txn, &log, log_id)?;
        let next_id = txn.open_table(META)?.get(META_NEXT_ID)?.map_or(1, |v| v.value());
        txn.commit()?;
        log.restart(log_id, go_on_from);
        Ok(Metastore {
            db,
            path,
            group: GroupCommit::default(),
            log_file: log.file(),
            log_failed: AtomicBool::new(false),
            writer: Mutex::new(log),
            writer_thread: AtomicU64::new(0),
            id_floor: AtomicU64::new(next_id),
            observer: OnceLock::new(),
            commit_cost_ns: AtomicU64::new(u64::MAX),
            flush_cost_ns: AtomicU64::new(u64::MAX),
            chains: Arc::default(),
        })
    }

    /// Takes a fresh snapshot id outside any transaction, for
    /// [`WriteTx::create_reserved`]: unique in this process (never handed
    /// out again, whether or not a record ever uses it). After a restart an
    /// id reserved but never used by a committed record may come again.
    pub fn reserve_id(&self) -> Result<crate::SnapshotId, Error> {
        crate::write_tx::take_id(&self.id_floor)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction (a consistent snapshot). Reads may run
    /// concurrently with each other and with a write, and may be nested
    /// inside one (they do not see its uncommitted changes).
    pub fn read<R>(&self, f: impl FnOnce(&ReadTx) -> Result<R, Error>) -> Result<R, Error> {
        let txn = self.db.begin_read()?;
        let seen = self.group.last();
        let out = f(&ReadTx::open(&txn, &self.chains)?);
        drop(txn);
        if self.writer_thread.load(Ordering::Acquire) != thread_token() {
            self.group.wait_durable(seen)?;
        }
        out
    }

    /// Runs `f` in the write transaction: committed, durably (its redo log
    /// entry flushed), when it returns Ok, before `write` returns; aborted
    /// when it returns Err or panics. Filesystem work done inside `f` happens before the commit,
    /// which gives the daemon its crash order (a directory may outlive a lost
    /// record, never the reverse).
    ///
    /// Writers run one at a time, and concurrent ones share a flush (see
    /// `group_commit`): a writer that finished its `f` while others queued
    /// waits for the next writer's commit. So keep `f` short, and run one that
    /// does slow work (copying a parent, a disk-usage walk) with
    /// [`write_long`](Self::write_long). `f` must not call `write` on the
    /// same metastore (refused with a Storage error), nor wait for another
    /// thread's `read` of it.
    pub fn write<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut WriteTx) -> Result<R, E>,
    ) -> Result<R, E> {
        let done = self.write_turn(Turning::Wait, f)?;
        Ok(done.expect("a writer that waits for its turn gets it"))
    }

    /// [`write`](Self::write) for a caller that must not wait for the write
    /// lock (the daemon's reactor): `None`, without calling `f`, while
    /// another writer holds it (a Cleanup may hold it for long).
    pub fn try_write<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut WriteTx) -> Result<R, E>,
    ) -> Result<Option<R>, E> {
        self.write_turn(Turning::IfFree, f)
    }

    /// [`write`](Self::write) for an `f` that takes long: first makes the
    /// commits of earlier writers durable (one extra flush if there are any),
    /// so their replies do not wait for this `f`.
    pub fn write_long<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut WriteTx) -> Result<R, E>,
    ) -> Result<R, E> {
        let done = self.write_turn(Turning::Long, f)?;
        Ok(done.expect("a writer that waits for its turn gets it"))
    }

    fn write_turn<R, E: From<Error>>(
        &self,
        turning: Turning,
        f: impl FnOnce(&mut WriteTx) -> Result<R, E>,
    ) -> Result<Option<R>, E> {
        let me = self.not_writing()?;
        let log = match turning {
            Turning::Wait | Turning::Long => {
                self.group.enqueue();
                self.writer.lock().unwrap_or_else(PoisonError::into_inner)
            }
            // Queued once it holds the lock: the writer before it has
            // let go and flushes for itself (or for those queued then).
            Turning::IfFree => {
                let log = match self.writer.try_lock() {
                    Ok(log) => log,
                    Err(TryLockError::Poisoned(e)) => e.into_inner(),
                    Err(TryLockError::WouldBlock) => return Ok(None),
                };
                self.group.enqueue();
                log
            }
        };
        let mut turn = Turn { store: self, log, dequeued: false };
        self.writer_thread.store(me, Ordering::Release);
        if turning == Turning::Long {
            // Failures are told to the writers they concern.
            let _ = self.sync_locked(&mut turn.log);
        }

        let mut txn = self.db.begin_write().map_err(Error::from)?;
        // redb commits without fsync; the redo log entry is what makes it
        // durable (see `redo_log`). Set before `f`, while this writer is still
        // queued: an error here leaves through `Turn::drop`, which flushes
        // for the writers before it.
        txn.set_durability(redb::Durability::None).map_err(Error::from)?;
        let outcome = match WriteTx::open(&txn, &self.id_floor) {
            Ok(mut tx) => f(&mut tx).map(|value| (value, tx.into_changes())),
            Err(e) => Err(e.into()),
        };
        turn.dequeued = true;
        let followed = self.group.dequeue();

        let (value, changes) = match outcome {
            Ok(done) => done,
            Err(e) => {
                drop(txn); // aborts
                if !followed {
                    let _ = self.sync_locked(&mut turn.log);
                }
                return Err(e);
            }
        };
        let generation = self.group.reserve();
        let started = Instant::now();
        let committed = txn.commit().map_err(Error::from);
        let logged = match committed {
            Ok(()) => {
                self.group.count_commit();
                self.append_locked(&mut turn.log, &changes)
            }
            Err(e) => Err(e),
        };
        self.group.appended(generation);
        match logged {
            // The entry is in the log: flushed (below) after the write lock
            // is let go, so the next writer's transaction runs meanwhile.
            Ok(false) => {}
            Ok(true) => {
                // A checkpoint made everything durable.
                self.made_durable(generation, started);
            }
            Err(e) => {
                // Not committed (the earlier writers still wait for a flush),
                // or committed and neither logged nor checkpointed.
                if !followed {
                    let _ = self.sync_locked(&mut turn.log);
                }
                return Err(e.into());
            }
        }
        drop(turn);
        if followed {
            // Someone queued behind us leads the flush; wait for it.
            self.group.wait_durable(generation)?;
        } else {
            self.make_durable(generation, started)?;
        }
        Ok(Some(value))
    }

    /// Runs `f` in a read transaction while no write transaction can
    /// commit: what `f` reads stays the truth until it returns. For
    /// Cleanup, which removes what no record owns and must not miss a
    /// record committed meanwhile. It writes nothing, so it flushes nothing
    /// (a write transaction would flush the log for an empty commit).
    pub fn read_holding_writers<R>(
        &self,
        f: impl FnOnce(&ReadTx) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.not_writing()?;
        let mut log = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // A commit whose entry is not flushed waits for the next writer's
        // flush, which waits for this lock: make it durable now (what `f`
        // reads must not be taken back by a crash).
        self.sync_locked(&mut log)?;
        let txn = self.db.begin_read()?;
        let out = f(&ReadTx::open(&txn, &self.chains)?);
        drop(txn);
        out
    }

    /// This thread's token, or an error if it holds the write transaction
    /// already (waiting for the writer lock would deadlock).
    fn not_writing(&self) -> Result<u64, Error> {
        let me = thread_token();
        if self.writer_thread.load(Ordering::Acquire) == me {
            return Err(Error::Storage("nested write transaction on the same metastore".into()));
        }
        Ok(me)
    }

    /// Have `observer` told of every durable commit from now on (the first
    /// observer set stays).
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.observer.set(observer);
    }

    /// A flush or a checkpoint made everything up to `generation` durable;
    /// `started`: when the commit it was made for began.
    fn made_durable(&self, generation: u64, started: Instant) {
        self.group.count_flush();
        let grouped = self.group.mark_durable(generation);
        self.observe(started, grouped);
    }

    fn observe(&self, started: Instant, grouped: u64) {
        let took = started.elapsed();
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // One flush leader at a time: a plain load and store (a checkpoint's
        // update racing one may be lost; it is an average).
        let cost = moving_average(self.commit_cost_ns.load(Ordering::Relaxed), sample);
        self.commit_cost_ns.store(cost, Ordering::Relaxed);
        if let Some(o) = self.observer.get() {
            o.durable_commit(took, grouped);
        }
    }

    /// What a durable commit (redb's commit without fsync, the redo log
    /// entry and its flush) has cost lately: a moving average over the last few, `None` before the
    /// first. Small where a flush costs nothing (tmpfs, a device with
    /// power-loss protection), a device flush or a journal commit elsewhere.
    pub fn durable_commit_cost(&self) -> Option<Duration> {
        match self.commit_cost_ns.load(Ordering::Relaxed) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// What a flush of the redo log (one `fdatasync`) has cost lately: a
    /// moving average over the last few, `None` before the first. About a
    /// µs where a flush does nothing (tmpfs), a device flush or a journal
    /// commit elsewhere; unlike [`durable_commit_cost`], free of the CPU
    /// around it (a debug build's, a busy machine's).
    ///
    /// [`durable_commit_cost`]: Self::durable_commit_cost
    pub fn flush_cost(&self) -> Option<Duration> {
        match self.flush_cost_ns.load(Ordering::Relaxed) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Commits made since open and how many were durable ones (flushed the
    /// redo log): with concurrent writers, fewer flushes than commits.
    pub fn commit_stats(&self) -> CommitStats {
        self.group.stats()
    }

    /// With the write lock held: makes commits whose entries are not yet
    /// flushed durable, or tells their waiters (and the caller) it failed.
    fn sync_locked(&self, log: &mut RedoLog) -> Result<(), Error> {
        if !self.group.needs_sync() {
            return Ok(());
        }
        // Under the write lock every generation handed out has its entry,
        // unless the log cannot be trusted (a write or flush of it, or a
        // checkpoint, failed): then only a checkpoint makes them durable.
        let generation = self.group.last();
        if !self.log_trusted(log) {
            let started = Instant::now();
            return match self.checkpoint_locked(log) {
                Ok(()) => {
                    self.made_durable(generation, started);
                    Ok(())
                }
                Err(e) => {
                    self.group.mark_failed(generation, e.to_string());
                    Err(e)
                }
            };
        }
        self.make_durable(generation, Instant::now())
    }

    /// Whether flushing the log makes what it holds durable: not after a
    /// write of it, a flush of it or a checkpoint failed, until a checkpoint
    /// succeeds.
    fn log_trusted(&self, log: &RedoLog) -> bool {
        !log.is_broken() && !self.log_failed.load(Ordering::Acquire)
    }

    /// With the write lock held: appends `changes` (if any) to the redo
    /// log. Where the log cannot take them (full, or not to be trusted), a
    /// checkpoint makes everything durable without it: `Ok(true)`.
    fn append_locked(&self, log: &mut RedoLog, changes: &[Change]) -> Result<bool, Error> {
        let appended = if !self.log_trusted(log) {
            Ok(false)
        } else if changes.is_empty() {
            Ok(true)
        } else {
            log.append(changes)
        };
        match appended {
            Ok(true) => Ok(false),
            Ok(false) => self.checkpoint_locked(log).map(|()| true),
            Err(log_error) => self.checkpoint_locked(log).map(|()| true).map_err(|e| {
                Error::Storage(format!(
                    "{log_error}; the checkpoint meant to replace it failed too: {e}"
                ))
            }),
        }
    }

    /// With the write lock held: a checkpoint, after which an earlier
    /// failure of the log no longer matters (everything is in redb,
    /// durably). If it fails, the log is not trusted (`make_durable` will
    /// not flush it for anyone) until a checkpoint succeeds.
    fn checkpoint_locked(&self, log: &mut RedoLog) -> Result<(), Error> {
        match checkpoint(&self.db, log) {
            Ok(()) => {
                self.log_failed.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                log.mark_broken();
                self.log_failed.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Makes `generation` (its entry in the log) durable: done if a flush
    /// covered it; else waits for the running flush, or leads the next one
    /// (no write lock needed). `started`: when the caller's commit began,
    /// for [`durable_commit_cost`](Self::durable_commit_cost).
    fn make_durable(&self, generation: u64, started: Instant) -> Result<(), Error> {
        let Some(upto) = self.group.lead_or_wait(generation)? else { return Ok(()) };
        // Ends the leadership however this returns (also by a panic).
        let _leading = Leading(&self.group);
        let flushed = if self.log_failed.load(Ordering::Acquire) {
            // Entries may be missing: a flush now would make a log with a
            // gap look durable. The next writer checkpoints.
            Err("an earlier write, flush or checkpoint of it failed (the next write checkpoints)"
                .to_string())
        } else {
            let flush_started = Instant::now();
            let flushed = self.log_file.sync_data();
            let took = u64::try_from(flush_started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            // One flush leader at a time: a plain load and store.
            let cost = moving_average(self.flush_cost_ns.load(Ordering::Relaxed), took);
            self.flush_cost_ns.store(cost, Ordering::Relaxed);
            flushed.map_err(|e| format!("cannot flush it: {e}"))
        };
        match flushed {
            Ok(()) => {
                self.made_durable(upto, started);
                Ok(())
            }
            Err(why) => {
                self.log_failed.store(true, Ordering::Release);
                let e = Error::Storage(format!("redo log of {}: {why}", self.path.display()));
                self.group.mark_failed(upto, e.to_string());
                Err(e)
            }
        }
    }
}

impl Drop for Metastore {
    /// A clean close checkpoints, so the next open has nothing to replay.
    fn drop(&mut self) {
        let log = self.writer.get_mut().unwrap_or_else(PoisonError::into_inner);
        if log.has_entries() {
            let _ = checkpoint(&self.db, log);
        }
    }
}

/// Commits redb with fsync, recording that every entry up to the log's last
/// is in it, and starts the log again.
fn checkpoint(db: &Database, log: &mut RedoLog) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert(META_REDO_APPLIED, log.last_seq())?;
    txn.commit()?;
    log.restart(log.log_id(), log.last_seq());
    Ok(())
}

/// Applies the log's entries after the last checkpoint in `txn` (which the
/// caller commits, durably: a checkpoint). Returns the sequence number the
/// log goes on from.
///
/// That number skips as many as the log can hold: entries written but
/// never flushed before a crash may have reached the file while an earlier
/// one did not, and the log starts again at its beginning now; numbered on
/// from the last entry read, a new entry could be followed in the file by
/// such an old one with the next number, which a later replay would apply.
fn replay(txn: &WriteTransaction, log: &RedoLog, log_id: u64) -> Result<u64, Error> {
    let applied = txn.open_table(META)?.get(META_REDO_APPLIED)?.map_or(0, |v| v.value());
    let entries = log.entries_after(log_id, applied)?;
    let last = entries.last().map_or(applied, |&(seq, _)| seq);
    let go_on_from = last
        .checked_add(crate::redo_log::MAX_ENTRIES)
        .ok_or_else(|| Error::Storage("redo log sequence numbers exhausted".into()))?;
    for (_, changes) in &entries {
        crate::redo_log::apply(txn, changes)?;
    }
    txn.open_table(META)?.insert(META_REDO_APPLIED, go_on_from)?;
    Ok(go_on_from)
}

/// A flush leader's turn: ends it when dropped.
struct Leading<'a>(&'a GroupCommit);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.flush_ended();
    }
}

/// A writer's hold on the write lock. If the writer leaves early (an error
/// before its closure ran, or a panic in it), dropping this still takes it off
/// the queue and, if it was the last, makes earlier commits durable.
struct Turn<'a> {
    store: &'a Metastore,
    log: MutexGuard<'a, RedoLog>,
    dequeued: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Runs before the fields drop: the lock is still held here.
        if !self.dequeued && !self.store.group.dequeue() {
            let _ = self.store.sync_locked(&mut self.log);
        }
        self.store.writer_thread.store(0, Ordering::Release);
    }
}

/// The average of commit costs with `sample` taken in: each new one weighs
/// an eighth. `u64::MAX` is "none yet".
fn moving_average(average: u64, sample: u64) -> u64 {
    match average {
        u64::MAX => sample,
        average => average - average / 8 + sample / 8,
    }
}

/// How a writer takes its turn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turning {
    /// Waits for the write lock.
    Wait,
    /// Waits, then first makes earlier writers durable (`write_long`).
    Long,
    /// Takes the lock only if it is free (`try_write`).
    IfFree,
}

/// A process-unique number for the current thread (never 0).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

/// In `txn`: creates the tables of a fresh database, or checks the schema
/// version of an existing one. Returns its redo log id (made if it has none
/// yet).
fn init_schema(txn: &WriteTransaction, path: &Path) -> Result<u64, Error> {
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get(META_SCHEMA_VERSION)?.map(|v| v.value());
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(v) if v > SCHEMA_VERSION => {
                return Err(Error::Storage(format!(
                    "{} has schema version {v}, newer than version {SCHEMA_VERSION} that this wasmsnap understands; \
                     refusing to open it (run a newer wasmsnap)",
                    path.display()
                )));
            }
            Some(v) => {
                return Err(Error::Storage(format!(
                    "{} has schema version {v}, older than version {SCHEMA_VERSION}, and no migration exists",
                    path.display()
                )));
            }
            None => {
                if !txn.open_table(RECORDS)?.is_empty()? {
                    return Err(Error::Storage(format!(
                        "{} holds records but no schema version: not a wasmsnap metastore?",
                        path.display()
                    )));
                }
                meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
                meta.insert(META_NEXT_ID, 1)?;
            }
        }
        // Create the remaining tables so read transactions always find them.
        txn.open_table(RECORDS)?;
        txn.open_table(IDS)?;
        txn.open_table(CHILDREN)?;
    }
    let mut meta = txn.open_table(META)?;
    let stored = meta.get(META_LOG_ID)?.map(|v| v.value());
    let log_id = match stored {
        Some(id) => id,
        None => {
            let id = new_log_id();
            meta.insert(META_LOG_ID, id)?;
            id
        }
    };
    Ok(log_id)
}

/// A number no other database's redo log is likely to have: std's hasher
/// keys are random per process, mixed with the time.
fn new_log_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::Reads;
    use crate::record::{Kind, Record};

    /// Reserved ids are unique with allocated ones, a reserved id can be
    /// used once, and the stored next id stays above every used id (also
    /// after reopening).
    #[test]
    fn reserved_ids_do_not_collide_with_allocated_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Metastore::open(dir.path()).unwrap();
        let first =
            store.write(|tx| tx.create("a", Kind::Active, None, BTreeMap::new())).unwrap().0.id;
        let (r1, r2) = (store.reserve_id().unwrap(), store.reserve_id().unwrap());
        assert!(first < r1 && r1 < r2, "{first} {r1} {r2}");
        let b = store.write(|tx| tx.create("b", Kind::Active, None, BTreeMap::new())).unwrap().0.id;
        assert!(b > r2, "allocated {b} after reserving {r2}");
        let used = store
            .write(|tx| tx.create_reserved(r2, "c", Kind::Active, None, BTreeMap::new(), None))
            .unwrap()
            .0
            .id;
        assert_eq!(used, r2);
        let again = store
            .write(|tx| tx.create_reserved(r2, "d", Kind::Active, None, BTreeMap::new(), None));
        assert!(matches!(again, Err(Error::Storage(ref m)) if m.contains("not free")), "{again:?}");
        drop(store);

        let store = Metastore::open(dir.path()).unwrap();
        let after = store.reserve_id().unwrap();
        assert!(after > b && after > r2, "after reopen: {after}");
        assert_eq!(store.read(|tx| tx.get("c")).unwrap().id, r2);
    }

    /// Everything in `store`: each record with its parents' ids, and whether
    /// it has children.
    fn everything(store: &Metastore) -> Vec<(Record, Vec<u64>, bool)> {
        store
            .read(|tx| {
                let mut records = Vec::new();
                tx.list(&crate::Filter::all(), |rec| {
                    records.push(rec);
                    Ok(())
                })?;
                let mut all = Vec::new();
                for rec in records {
                    let parents = tx.parent_ids(&rec)?;
                    let children = tx.has_children(&rec.name)?;
                    all.push((rec, parents, children));
                }
                Ok(all)
            })
            .unwrap()
    }

    /// A durable write survives redb losing every commit made without fsync
    /// (what a power loss may do): reopening applies the redo log.
    #[test]
    fn the_redo_log_brings_back_what_redb_lost() {
        let (live, lost) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = Metastore::open(live.path()).unwrap();
        // redb as a power loss would leave it: at its last durable commit.
        std::fs::copy(live.path().join(FILE_NAME), lost.path().join(FILE_NAME)).unwrap();
        let labels = BTreeMap::from([("l".to_owned(), "v".to_owned())]);
        store.write(|tx| tx.create("a", Kind::Active, None, labels.clone())).unwrap();
        store
            .write(|tx| tx.commit("a", "A", labels.clone(), crate::Usage { size: 3, inodes: 1 }))
            .unwrap();
        for i in 0..40 {
            store
                .write(|tx| tx.create(&format!("b{i}"), Kind::View, Some("A"), BTreeMap::new()))
                .unwrap();
        }
        store.write(|tx| tx.remove("b7")).unwrap();
        store.write(|tx| tx.set_content("b3", Some("d/3".into()))).unwrap();
        let before = everything(&store);
        let next = store.reserve_id().unwrap();
        std::fs::copy(
            live.path().join(crate::REDO_LOG_FILE_NAME),
            lost.path().join(crate::REDO_LOG_FILE_NAME),
        )
        .unwrap();

        let reopened = Metastore::open(lost.path()).unwrap();
        assert_eq!(everything(&reopened), before);
        assert!(reopened.reserve_id().unwrap() >= next - 1, "ids are not handed out again");
        // Replayed and checkpointed: the next open reads nothing more.
        drop(reopened);
        assert_eq!(everything(&Metastore::open(lost.path()).unwrap()), before);
    }

    /// Concurrent writers (grouped flushes, each run after its writer let go
    /// of the write lock) leave every acknowledged write in the log.
    #[test]
    fn concurrent_writes_are_all_in_the_log() {
        let (live, lost) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = Metastore::open(live.path()).unwrap();
        std::fs::copy(live.path().join(FILE_NAME), lost.path().join(FILE_NAME)).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..40 {
                        let key = format!("t{t}/k{i}");
                        store
                            .write(|tx| tx.create(&key, Kind::Active, None, BTreeMap::new()))
                            .unwrap();
                        if i % 3 == 0 {
                            store.write(|tx| tx.remove(&key)).unwrap();
                        }
                    }
                });
            }
        });
        let stats = store.commit_stats();
        assert!(stats.durable <= stats.commits, "{stats:?}");
        let before = everything(&store);
        assert_eq!(before.len(), 8 * 26);
        std::fs::copy(
            live.path().join(crate::REDO_LOG_FILE_NAME),
            lost.path().join(crate::REDO_LOG_FILE_NAME),
        )
        .unwrap();
        assert_eq!(everything(&Metastore::open(lost.path()).unwrap()), before);
    }

    /// A log that cannot be trusted (a write of it failed, or a flush) is
    /// not flushed for the next write: a checkpoint makes it durable, so
    /// redb's file alone holds it.
    #[test]
    fn a_broken_or_failed_log_is_replaced_by_a_checkpoint() {
        let (live, lost) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = Metastore::open(live.path()).unwrap();
        let create = |key: &str| {
            store.write(|tx| tx.create(key, Kind::Active, None, BTreeMap::new())).unwrap();
        };
        create("a");
        store.writer.lock().unwrap().mark_broken();
        create("b");
        assert!(!store.writer.lock().unwrap().is_broken(), "the checkpoint restarted the log");
        store.log_failed.store(true, Ordering::Release);
        create("c");
        assert!(!store.log_failed.load(Ordering::Acquire), "the checkpoint cleared it");
        let before = everything(&store);
        // redb's file alone, with no log beside it.
        std::fs::copy(live.path().join(FILE_NAME), lost.path().join(FILE_NAME)).unwrap();
        assert_eq!(everything(&Metastore::open(lost.path()).unwrap()), before);
        assert_eq!(before.len(), 3);
    }

    /// An entry that reached the file while an earlier one was lost (both
    /// unflushed at a power loss) is never applied after a later restart.
    #[test]
    fn an_old_unflushed_entry_never_follows_a_new_one() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (a, b, c) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
        let create = |store: &Metastore, key: &str| {
            store.write(|tx| tx.create(key, Kind::Active, None, BTreeMap::new())).unwrap();
        };
        let log = crate::REDO_LOG_FILE_NAME;
        let first = Metastore::open(a).unwrap();
        std::fs::copy(a.join(FILE_NAME), b.join(FILE_NAME)).unwrap();
        create(&first, "lost");
        create(&first, "old");
        std::fs::copy(a.join(log), b.join(log)).unwrap();
        // The first entry lost, the second on disk.
        let file = std::fs::OpenOptions::new().write(true).open(b.join(log)).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[0; 4096], 0).unwrap();

        let second = Metastore::open(b).unwrap();
        assert_eq!(everything(&second), vec![]);
        std::fs::copy(b.join(FILE_NAME), c.join(FILE_NAME)).unwrap();
        create(&second, "new");
        std::fs::copy(b.join(log), c.join(log)).unwrap();

        let keys: Vec<String> =
            everything(&Metastore::open(c).unwrap()).into_iter().map(|(r, ..)| r.name).collect();
        assert_eq!(keys, vec!["new".to_string()]);
    }

    /// A log whose entries do not fit (more than it holds) falls back to
    /// checkpoints, and a log left by another database is not applied.
    #[test]
    fn a_full_log_checkpoints_and_a_stranger_log_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Metastore::open(dir.path()).unwrap();
        let blocks = (crate::redo_log::LOG_BYTES / 4096) as usize;
        for i in 0..blocks + 10 {
            store
                .write(|tx| tx.create(&format!("k{i}"), Kind::Active, None, BTreeMap::new()))
                .unwrap();
        }
        let before = everything(&store);
        assert_eq!(before.len(), blocks + 10);
        // Megabytes of labels: an entry the log cannot hold.
        let big: BTreeMap<_, _> = (0..800).map(|i| (format!("l{i}"), "x".repeat(4000))).collect();
        store.write(|tx| tx.create("big", Kind::Active, None, big)).unwrap();
        let stats = store.commit_stats();
        assert_eq!(stats.commits, blocks as u64 + 11);
        drop(store);
        let store = Metastore::open(dir.path()).unwrap();
        assert_eq!(everything(&store).len(), blocks + 11);
        drop(store);

        // The database file deleted and made again: its old log stays unread.
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let store = Metastore::open(dir.path()).unwrap();
        assert_eq!(everything(&store), vec![]);
    }

    /// The cost of durable commits is known from the first one on, and a
    /// read holding writers off does not commit (so does not move it).
    #[test]
    fn durable_commits_are_timed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Metastore::open(dir.path()).unwrap();
        assert_eq!(store.durable_commit_cost(), None);
        store.write(|tx| tx.create("a", Kind::Active, None, BTreeMap::new())).unwrap();
        let first = store.durable_commit_cost().expect("timed");
        assert!(first > Duration::ZERO && first < Duration::from_secs(10), "{first:?}");
        let ids = store.read_holding_writers(|tx| tx.ids()).unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(store.durable_commit_cost(), Some(first));
        assert_eq!(moving_average(u64::MAX, 800), 800, "the first sample");
        assert_eq!(moving_average(800, 1600), 900, "each new one weighs an eighth");
    }

    /// A writer that committed while a long writer queued behind it gets its
    /// reply before the long writer's `f` ends. (With plain `write` the long
    /// `f` below would wait for a reply that waits for it, and fail.)
    #[test]
    fn a_long_writer_does_not_hold_up_earlier_replies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Metastore::open(dir.path()).unwrap();
        let (in_f, wait_in_f) = mpsc::channel();
        let (replied, wait_replied) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                store
                    .write(|tx| {
                        tx.create("short", Kind::Active, None, BTreeMap::new())?;
                        in_f.send(()).unwrap();
                        // Wait until the long writer is queued behind us.
                        while store.group.queued() < 2 {
                            std::thread::yield_now();
                        }
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                replied.send(()).unwrap();
            });
            wait_in_f.recv().unwrap();
            store
                .write_long(|tx| {
                    wait_replied
                        .recv_timeout(Duration::from_secs(20))
                        .expect("the earlier writer's reply waited for this long transaction");
                    tx.create("long", Kind::Active, None, BTreeMap::new()).map(drop)
                })
                .unwrap();
        });
        assert_eq!(store.commit_stats(), CommitStats { commits: 2, durable: 2 });
    }
}
