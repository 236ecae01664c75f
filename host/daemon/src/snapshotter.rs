//! One served snapshotter: the transaction of each containerd operation,
//! over its metastore, its policy and its snapshot directories.
//!
//! Every method is blocking (redb, syscalls, wasm); the wire layer runs the
//! writes off the async reactor (or, where a flush costs nothing, tries
//! them on it at `Pace::Quick`) and answers the short reads on it. Crash
//! order: a snapshot's directory is created (renamed into place) before its
//! record commits, and its record is deleted before its directory, so after
//! a process crash there may be a directory without a record (Cleanup
//! removes it), never a record without its directory. Only the record is
//! flushed for an empty tree; after a power loss, recovery rebuilds it
//! (`recovery`, and `wasmsnap_fs::SnapshotDirs` for what is flushed).
//!
//! Speed (see `docs/performance.md`): the write lock is held only for the
//! records. A Prepare builds its directory before taking it (under an id
//! reserved up front), so concurrent Prepares make their directories in
//! parallel and their record commits share one flush (group commit). A
//! Remove replies once the record is gone and deletes the directory in the
//! background. Mounts answers from a cache of rendered plans, and Usage of
//! an active snapshot from a short-lived cache.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use wasmsnap_engine::Policy;
use wasmsnap_fs::SnapshotDirs;
use wasmsnap_metastore::{Filter, Metastore, ReadTx, Reads, Record, parse_filters};
use wasmsnap_plan::{IdMap, Kind, Mount, Snapshot, SnapshotId, idmap, render_mounts};

use crate::background::Background;
use crate::error::{Error, Result};
use crate::info::{Described, Info, InfoUpdate, Labels, Usage};
use crate::metrics::{PolicyMeter, SnapshotterMeters};
use crate::mount_cache::MountCache;
use crate::recovery::{self, LostDirs};

/// How long a measured Usage of an active snapshot is served again:
/// containerd's CRI asks for every container every 10 s, often from
/// several places at once; a walk of a big upper dir is costly.
const ACTIVE_USAGE_TTL: Duration = Duration::from_secs(2);

/// A parent chain longer than this is refused by `describe` (overlay
/// stacks at most 500 layers).
const MAX_CHAIN: usize = 1024;

/// Prepare/View attempts when the parent changes between the look-up and
/// the record's transaction (removed and made again meanwhile).
const CREATE_ATTEMPTS: usize = 3;

pub struct Snapshotter {
    name: String,
    root: PathBuf,
    metastore: Metastore,
    dirs: Arc<SnapshotDirs>,
    /// The policy now in use.
    policy: RwLock<Current>,
    /// Records found without their directory at start (see `recovery`).
    lost: LostDirs,
    mount_cache: MountCache,
    active_usage: Mutex<HashMap<SnapshotId, (Instant, Usage)>>,
    background: Background,
    /// With metrics on: this snapshotter's RPC and metastore meters.
    meters: Option<Arc<SnapshotterMeters>>,
    /// Run once between a create's directory and its record (tests only).
    #[cfg(test)]
    test_hook: Mutex<Option<TestHook>>,
}

#[cfg(test)]
type TestHook = Box<dyn FnOnce(&Snapshotter, &str) + Send>;

/// The policy, its generation (bumped by each hot reload) and its meter.
#[derive(Clone)]
struct Current {
    policy: Arc<Policy>,
    generation: u64,
    meter: Arc<PolicyMeter>,
}

impl Current {
    fn new(snapshotter: &str, policy: Policy, generation: u64) -> Current {
        let meter = Arc::new(PolicyMeter::new(snapshotter, policy.info()));
        Current { policy: Arc::new(policy), generation, meter }
    }

    fn layout(&self, s: &Snapshot) -> Result<wasmsnap_plan::Layout, wasmsnap_engine::PolicyError> {
        self.meter.time("layout", || self.policy.layout(s))
    }

    fn mounts(
        &self,
        s: &Snapshot,
    ) -> Result<Vec<wasmsnap_plan::MountPlan>, wasmsnap_engine::PolicyError> {
        self.meter.time("mounts", || self.policy.mounts(s))
    }

    /// Layout and mounts, each metered, then checked together; `None` if
    /// a quick call could not answer quickly (see `Policy::layout_quick`),
    /// or if the layout copies a parent (a copy takes as long as the
    /// parent is big): the mounts are not asked for then.
    fn plan(&self, s: &Snapshot, pace: Pace) -> Result<Option<Plan>, wasmsnap_engine::PolicyError> {
        let (layout, mounts) = match pace {
            Pace::Patient => (self.layout(s)?, self.mounts(s)?),
            Pace::Quick => {
                let layout = self.meter.time_quick("layout", || self.policy.layout_quick(s))?;
                let Some(layout) = layout.filter(|l| !wasmsnap_plan::copies_parent(&l.steps))
                else {
                    return Ok(None);
                };
                let mounts = self.meter.time_quick("mounts", || self.policy.mounts_quick(s))?;
                let Some(mounts) = mounts else { return Ok(None) };
                (layout, mounts)
            }
        };
        self.policy.check_plan(s, &layout, &mounts)?;
        Ok(Some((layout, mounts)))
    }
}

type Plan = (wasmsnap_plan::Layout, Vec<wasmsnap_plan::MountPlan>);

/// How long an operation may take, by where it runs (see `wire::server`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Off the reactor: it may wait and take its time.
    Patient,
    /// On the reactor, which answers every other request: it does what
    /// stays short and hands the rest on (`Ok(None)`) before it has
    /// changed anything (a reserved id, never used, is all it spends).
    /// Short: a policy that answers without waiting, and fast
    /// (`Policy::layout_quick`), no copy of a parent, a usage walk of at
    /// most [`QUICK_WALK_ENTRIES`] names, a write lock no one holds.
    Quick,
}

/// Names a Commit on the reactor reads from its upper dir before it hands
/// itself on: a few hundred µs on tmpfs. An empty upper dir (an image layer being
/// committed after unpack writes its files, usually more) is nine syscalls.
pub const QUICK_WALK_ENTRIES: u64 = 256;

/// What one attempt at a create did.
enum Attempt {
    Made(Vec<Mount>),
    /// The parent was removed or replaced since the attempt looked it up.
    ParentChanged,
    /// A quick attempt that would not stay short: nothing was changed.
    HandedOn,
}

/// One snapshot as [`Snapshotter::explain`] tells it.
pub struct Explanation {
    pub record: Described,
    /// Its parents, nearest first.
    pub chain: Vec<Described>,
    pub policy: wasmsnap_engine::PolicyInfo,
    pub layout: wasmsnap_plan::Layout,
    pub mounts: Vec<Mount>,
    pub facts: wasmsnap_plan::HostFacts,
}

/// Snapshots of one kind, and their usage as last computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCensus {
    pub count: u64,
    pub bytes: u64,
    pub inodes: u64,
}

/// What a snapshotter holds, by kind (for the metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub active: KindCensus,
    pub view: KindCensus,
    pub committed: KindCensus,
}

impl Census {
    pub fn kinds(&self) -> [(&'static str, KindCensus); 3] {
        [("active", self.active), ("view", self.view), ("committed", self.committed)]
    }
}

/// What Mounts finds for a key: a cached plan, or what to ask the policy.
enum Found {
    Cached(Arc<Vec<Mount>>),
    Record(Record, Vec<SnapshotId>),
}

/// What Usage finds for a key: its usage, or an active snapshot to measure.
enum Known {
    Usage(Usage),
    ToMeasure(Record),
}

/// A Prepare or View.
struct Create<'a> {
    kind: Kind,
    key: &'a str,
    parent: Option<&'a str>,
    labels: Labels,
}

/// What a Prepare or View builds on: found before its transaction.
struct Base {
    parent_ids: Vec<SnapshotId>,
    parent_content: Option<PathBuf>,
}

impl Snapshotter {
    /// Open (or create) the snapshotter stored under `root`. `root` is made
    /// 0700 and its metastore's files 0600 (also when they exist with wider modes):
    /// snapshot contents, labels and keys are no other local user's to read.
    pub fn open(name: &str, root: &Path, policy: Policy) -> anyhow::Result<Snapshotter> {
        std::fs::create_dir_all(root)?;
        private(root, 0o700)?;
        let metastore = Metastore::open(root)?;
        private(&root.join(wasmsnap_metastore::FILE_NAME), 0o600)?;
        private(&root.join(wasmsnap_metastore::REDO_LOG_FILE_NAME), 0o600)?;
        let dirs = SnapshotDirs::open(root)?;
        let lost = recovery::recover(name, &metastore, &dirs, &policy)?;
        let dirs = Arc::new(dirs);
        let meters = crate::metrics::get().map(|m| Arc::new(m.snapshotter(name)));
        if let Some(m) = &meters {
            metastore.observe_commits(m.clone());
        }
        Ok(Snapshotter {
            name: name.to_string(),
            root: root.to_path_buf(),
            metastore,
            background: Background::start(name, dirs.clone(), meters.clone())?,
            dirs,
            policy: RwLock::new(Current::new(name, policy, 0)),
            meters,
            lost,
            mount_cache: MountCache::default(),
            active_usage: Mutex::default(),
            #[cfg(test)]
            test_hook: Mutex::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The policy now in use; calls in flight keep the one they started with.
    pub fn policy(&self) -> Arc<Policy> {
        self.current_policy().policy
    }

    /// This snapshotter's meters, with metrics on.
    pub fn meters(&self) -> Option<&Arc<SnapshotterMeters>> {
        self.meters.as_ref()
    }

    /// Swap in a new policy (hot reload). Cached plans of the old one are
    /// no longer served.
    pub fn set_policy(&self, policy: Policy) {
        let mut current = self.policy.write().unwrap_or_else(PoisonError::into_inner);
        *current = Current::new(&self.name, policy, current.generation + 1);
        drop(current);
        self.mount_cache.clear();
    }

    fn current_policy(&self) -> Current {
        self.policy.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Prepare (active) or View: record, layout, directory, mounts. Nothing
    /// changes unless every step succeeds.
    ///
    /// The directory is built (under an id reserved up front) and renamed
    /// into place before the record's transaction begins: the write lock
    /// covers only the records, and the crash order is the same as doing it
    /// all inside the transaction.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        let made = self.create_at(Pace::Patient, kind, key, parent, labels)?;
        Ok(made.expect("a patient create always ends"))
    }

    /// [`create`](Self::create) at `pace`: `None` if a quick one handed
    /// itself on (nothing changed; make it again patiently).
    pub fn create_at(
        &self,
        pace: Pace,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Option<Vec<Mount>>> {
        // Checked before anything else: a bad map never reaches a policy.
        id_map_of(&labels)?;
        let request = Create { kind, key, parent: (!parent.is_empty()).then_some(parent), labels };
        for _ in 0..CREATE_ATTEMPTS {
            match self.try_create(&request, pace)? {
                Attempt::Made(mounts) => return Ok(Some(mounts)),
                Attempt::HandedOn => return Ok(None),
                Attempt::ParentChanged => {}
            }
        }
        Err(Error::ParentChanging(format!(
            "the parent of {key:?} kept changing while it was being created; retry"
        )))
    }

    /// One attempt at [`create`](Self::create).
    fn try_create(&self, request: &Create, pace: Pace) -> Result<Attempt> {
        let Create { kind, key, parent, ref labels } = *request;
        // A read, outside the write lock: a request bound to fail builds nothing.
        let base = self.metastore.read(|tx| self.base(tx, request))?;
        self.lost.check(&self.name, key, base.parent_ids.iter().copied())?;
        crate::cancel::check("create", key)?;
        let current = self.current_policy();
        let generation = current.generation;
        let id = self.metastore.reserve_id()?;
        let snapshot = policy_snapshot(id, kind, base.parent_ids.clone(), labels)?;
        // Layout and mounts checked together: a mount of an own directory
        // needs a layout that makes it.
        let planned = current.plan(&snapshot, pace).map_err(|e| Error::policy(&self.name, e))?;
        let Some((layout, plans)) = planned else { return Ok(Attempt::HandedOn) };
        let mapped_root = snapshot.id_map.as_ref().and_then(IdMap::root);
        let parent_content = base.parent_content.as_deref();
        let new_dir = match self.dirs.create_mapped(id, &layout.steps, parent_content, mapped_root)
        {
            Ok(new_dir) => new_dir,
            // The client went away mid-copy: the copy stopped between files
            // (see `cancel`) and its temp dir is gone.
            Err(e) if e.is_cancelled() => {
                tracing::info!(op = "create", key, error = %e, "the client cancelled the request before it committed: rolled back (the copy stopped)");
                return Err(Error::Cancelled(format!(
                    "create of {key:?}: the client cancelled the request; nothing was changed"
                )));
            }
            // The parent was removed meanwhile and its directory with it
            // (copying it failed): the next attempt names that error.
            Err(_) if self.parent_changed(request, &base) => return Ok(Attempt::ParentChanged),
            Err(e) => return Err(e.into()),
        };
        #[cfg(test)]
        self.before_record(request);
        let written = self.write_at(pace, |tx| -> Result<_> {
            let content = layout.content.clone();
            let (record, parent_id) =
                tx.create_reserved(id, key, kind, parent, labels.clone(), content)?;
            // The same parent (by id) is the same chain. An error, so that
            // the transaction rolls back.
            if parent_id != base.parent_ids.first().copied() {
                return Err(Error::ParentChanging(format!("the parent of {key:?} changed")));
            }
            crate::cancel::check("create", key)?;
            Ok(record)
        });
        // Unless made, nothing was written; the directory goes with `new_dir`.
        let record = match written {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(Attempt::HandedOn),
            Err(Error::ParentChanging(_)) => return Ok(Attempt::ParentChanged),
            Err(e) => return Err(e),
        };
        new_dir.keep();
        let mounts = Arc::new(render_mounts(&self.root, &plans, snapshot.id_map.as_ref()));
        self.mount_cache.put(&record, generation, mounts.clone());
        Ok(Attempt::Made(mounts.as_ref().clone()))
    }

    /// Runs the test hook set to run between a create's directory and its
    /// record (see `snapshotter_tests`).
    #[cfg(test)]
    fn before_record(&self, request: &Create) {
        let hook = self.test_hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook(self, request.key);
        }
    }

    /// What `request` builds on: its parent's ids and content directory.
    /// The error its record's transaction would give if it is bound to fail.
    fn base(&self, tx: &ReadTx, request: &Create) -> Result<Base, wasmsnap_metastore::Error> {
        let Create { kind, key, parent, ref labels } = *request;
        let Some(parent) = tx.check_create(key, kind, parent, labels)? else {
            return Ok(Base { parent_ids: Vec::new(), parent_content: None });
        };
        let mut parent_ids = vec![parent.id];
        parent_ids.extend(tx.parent_ids(&parent)?);
        Ok(Base { parent_ids, parent_content: self.content_dir(&parent) })
    }

    /// Whether `request` would now build on something other than `base`
    /// (or fail).
    fn parent_changed(&self, request: &Create, base: &Base) -> bool {
        let now = self.metastore.read(|tx| self.base(tx, request));
        now.map(|b| b.parent_ids).ok().as_ref() != Some(&base.parent_ids)
    }

    /// The mounts of an active snapshot or a view, if a plan made by the
    /// policy in use is cached: a read, no policy call.
    pub fn cached_mounts(&self, key: &str) -> Result<Option<Vec<Mount>>> {
        let generation = self.policy.read().unwrap_or_else(PoisonError::into_inner).generation;
        Ok(match self.find_mounts(key, generation)? {
            Found::Cached(mounts) => Some(mounts.as_ref().clone()),
            Found::Record(..) => None,
        })
    }

    /// A cached plan of `key`, or its record and parents to ask the policy with.
    fn find_mounts(&self, key: &str, generation: u64) -> Result<Found> {
        Ok(self.metastore.read(|tx| {
            let record = tx.get(key)?;
            if record.kind == Kind::Committed {
                return Err(wasmsnap_metastore::Error::FailedPrecondition(format!(
                    "snapshot {key:?} is committed: only active snapshots and views have mounts"
                )));
            }
            if let Some(mounts) = self.mount_cache.get(&record, generation) {
                return Ok(Found::Cached(mounts));
            }
            let parent_ids = tx.parent_ids(&record)?;
            Ok(Found::Record(record, parent_ids))
        })?)
    }

    /// The mounts of an active snapshot or a view.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let current = self.current_policy();
        let generation = current.generation;
        let (record, parent_ids) = match self.find_mounts(key, generation)? {
            Found::Cached(mounts) => return Ok(mounts.as_ref().clone()),
            Found::Record(record, parent_ids) => (record, parent_ids),
        };
        // Labels may have changed since Prepare (Update): checked again.
        let snapshot = policy_snapshot(record.id, record.kind, parent_ids, &record.labels)?;
        self.lost.check(
            &self.name,
            key,
            std::iter::once(snapshot.id).chain(snapshot.parent_ids.iter().copied()),
        )?;
        let plans = current.mounts(&snapshot).map_err(|e| Error::policy(&self.name, e))?;
        let mounts = Arc::new(render_mounts(&self.root, &plans, snapshot.id_map.as_ref()));
        self.mount_cache.put(&record, generation, mounts.clone());
        Ok(mounts.as_ref().clone())
    }

    /// Commit active `key` as `name`; its usage is measured and stored.
    ///
    /// The usage walk (as long as the container made its upper dir) runs
    /// before the write transaction, so no other writer waits for it. The
    /// transaction then commits only if the record is still the one
    /// measured (same id); a key removed and prepared again meanwhile is
    /// measured again. Nothing is written before the transaction, so a
    /// crash anywhere leaves the snapshot active, as before the request.
    ///
    /// With `parent` (containerd 2.2+'s parallel unpack), an active made
    /// without a parent is re-parented onto it in the same transaction (see
    /// `rebase.rs`).
    pub fn commit(&self, name: &str, key: &str, parent: &str, labels: Labels) -> Result<()> {
        match self.commit_at(Pace::Patient, name, key, parent, labels)? {
            Some(()) => Ok(()),
            None => unreachable!("a patient commit always ends"),
        }
    }

    /// [`commit`](Self::commit) at `pace`: `None` if a quick one handed
    /// itself on (its upper dir holds more than [`QUICK_WALK_ENTRIES`];
    /// nothing changed).
    pub fn commit_at(
        &self,
        pace: Pace,
        name: &str,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Option<()>> {
        // A bad name or label is refused before the walk, not after it.
        wasmsnap_metastore::check_commit(name, key, &labels)?;
        let policy = self.policy();
        let max_entries = match pace {
            Pace::Patient => u64::MAX,
            Pace::Quick => QUICK_WALK_ENTRIES,
        };
        for _ in 0..CREATE_ATTEMPTS {
            let measured = self.metastore.read(|tx| tx.get(key))?;
            self.lost.check(&self.name, key, [measured.id])?;
            let usage = match self.content_dir(&measured) {
                Some(dir) if measured.kind == Kind::Active => {
                    match wasmsnap_fs::usage_within(&dir, max_entries)? {
                        Some(usage) => Usage::from(usage),
                        None => return Ok(None),
                    }
                }
                _ => Usage::default(),
            };
            let committed = self.write_at(pace, |tx| -> Result<_> {
                let active = tx.get(key)?;
                if active.id != measured.id {
                    return Ok(false);
                }
                self.lost.check(&self.name, key, [active.id])?;
                // A taken name is AlreadyExists before any rebase check, as in
                // containerd (its unpacker counts that as done).
                if !parent.is_empty() && tx.find(name)?.is_none() {
                    self.rebase(tx, &policy, &active, parent)?;
                }
                tx.commit(key, name, labels.clone(), usage.into())?;
                crate::cancel::check("commit", key)?;
                Ok(true)
            })?;
            match committed {
                Some(true) => return Ok(Some(())),
                Some(false) => {}
                None => return Ok(None),
            }
        }
        Err(Error::KeyChanging(format!(
            "{key:?} kept being removed and created again while it was being committed; retry"
        )))
    }

    /// `f` in a write transaction; at `Pace::Quick` only if no other writer
    /// holds the write lock (`None`, `f` not called).
    fn write_at<R>(
        &self,
        pace: Pace,
        f: impl FnOnce(&mut wasmsnap_metastore::WriteTx) -> Result<R>,
    ) -> Result<Option<R>> {
        match pace {
            Pace::Patient => self.metastore.write(f).map(Some),
            Pace::Quick => self.metastore.try_write(f),
        }
    }

    /// Remove a snapshot: the record first (durably, before the reply),
    /// then its directory, in the background.
    pub fn remove(&self, key: &str) -> Result<()> {
        let record = self.metastore.write(|tx| -> Result<_> { Ok(tx.remove(key)?) })?;
        self.lost.forget(record.id);
        self.mount_cache.forget(record.id);
        self.forget_usage(record.id);
        self.background.remove(record.id);
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.metastore.read(|tx| tx.get(key))?.into())
    }

    /// containerd's Update: only labels change (see `WriteTx::update`).
    pub fn update(&self, info: InfoUpdate, fieldpaths: &[String]) -> Result<Info> {
        let record = self.metastore.write(|tx| tx.update(info.into(), fieldpaths))?;
        Ok(Info::from(record))
    }

    /// Every record matching the filters (ORed; none = all).
    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>> {
        let filter = parse_filters(filters)
            .map_err(|e| Error::InvalidArgument(format!("invalid filter: {e}")))?;
        let mut out = Vec::new();
        self.metastore.read(|tx| {
            tx.list(&filter, |r| {
                out.push(Info::from(r));
                Ok(())
            })
        })?;
        Ok(out)
    }

    /// Disk usage: stored at commit for committed snapshots, measured for
    /// active ones (and served again for [`ACTIVE_USAGE_TTL`]).
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let record = match self.known_usage(key)? {
            Known::Usage(usage) => return Ok(usage),
            Known::ToMeasure(record) => record,
        };
        let Some(dir) = self.content_dir(&record) else { return Ok(Usage::default()) };
        let measured_at = Instant::now();
        let usage = Usage::from(wasmsnap_fs::usage(&dir)?);
        self.active_usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(record.id, (measured_at, usage));
        Ok(usage)
    }

    /// [`usage`](Self::usage) if it needs no walk: stored, or measured
    /// less than [`ACTIVE_USAGE_TTL`] ago. A read.
    pub fn stored_usage(&self, key: &str) -> Result<Option<Usage>> {
        Ok(match self.known_usage(key)? {
            Known::Usage(usage) => Some(usage),
            Known::ToMeasure(_) => None,
        })
    }

    fn known_usage(&self, key: &str) -> Result<Known> {
        let record = self.metastore.read(|tx| tx.get(key))?;
        if let Some(usage) = record.usage.filter(|_| record.kind == Kind::Committed) {
            return Ok(Known::Usage(usage.into()));
        }
        if record.kind != Kind::Active || self.content_dir(&record).is_none() {
            return Ok(Known::Usage(Usage::default()));
        }
        let cached = self
            .active_usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&record.id)
            .copied();
        Ok(match cached.filter(|(at, _)| at.elapsed() < ACTIVE_USAGE_TTL) {
            Some((_, usage)) => Known::Usage(usage),
            None => Known::ToMeasure(record),
        })
    }

    /// Snapshots by kind with their usage as last computed: stored at
    /// Commit, or the last measure of an active one (for the metrics; a
    /// read of every record).
    pub fn census(&self) -> Result<Census> {
        let measured: HashMap<SnapshotId, Usage> = self
            .active_usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, (_, usage))| (*id, *usage))
            .collect();
        let mut census = Census::default();
        self.metastore.read(|tx| {
            tx.list(&Filter::default(), |record| {
                let (kind, usage) = match record.kind {
                    Kind::Active => (&mut census.active, measured.get(&record.id).copied()),
                    Kind::View => (&mut census.view, None),
                    Kind::Committed => (&mut census.committed, record.usage.map(Usage::from)),
                };
                kind.count += 1;
                if let Some(u) = usage {
                    kind.bytes += u.size.max(0) as u64;
                    kind.inodes += u.inodes.max(0) as u64;
                }
                Ok(())
            })
        })?;
        Ok(census)
    }

    /// What `wasmsnap explain` shows of `key`: its record and parents, the
    /// policy answering for it, the layout that policy plans for it now (as
    /// at creation, for a policy that answers the same to the same
    /// question), its mounts as served, and the host facts `init` saw.
    pub fn explain(&self, key: &str) -> Result<Explanation> {
        let (record, chain) = self.describe(key)?;
        let current = self.current_policy();
        let parent_ids = chain.iter().map(|r| r.id).collect();
        let snapshot =
            policy_snapshot(record.id, record.info.kind, parent_ids, &record.info.labels)?;
        let layout = current.layout(&snapshot).map_err(|e| Error::policy(&self.name, e))?;
        let mounts = match record.info.kind {
            Kind::Committed => Vec::new(),
            _ => self.mounts(key)?,
        };
        Ok(Explanation {
            policy: current.policy.info().clone(),
            facts: current.policy.host_facts().clone(),
            record,
            chain,
            layout,
            mounts,
        })
    }

    /// `key` and its parents (nearest first); one read.
    fn describe(&self, key: &str) -> Result<(Described, Vec<Described>)> {
        Ok(self.metastore.read(|tx| {
            let record = tx.get(key)?;
            let mut chain: Vec<Described> = Vec::new();
            let mut next = record.parent.clone();
            while let Some(parent) = next {
                if chain.len() > MAX_CHAIN {
                    return Err(wasmsnap_metastore::Error::FailedPrecondition(format!(
                        "the parent chain of {key:?} is longer than {MAX_CHAIN}"
                    )));
                }
                let p = tx.get(&parent)?;
                next = p.parent.clone();
                chain.push(p.into());
            }
            Ok((record.into(), chain))
        })?)
    }

    /// Every snapshot, for the admin API's tree.
    pub fn describe_all(&self) -> Result<Vec<Described>> {
        let mut out = Vec::new();
        self.metastore.read(|tx| {
            tx.list(&Filter::default(), |r| {
                out.push(Described::from(r));
                Ok(())
            })
        })?;
        Ok(out)
    }

    /// What a durable commit of this snapshotter's metastore has cost
    /// lately (`None` before the first).
    pub fn durable_commit_cost(&self) -> Option<Duration> {
        self.metastore.durable_commit_cost()
    }

    /// What a flush of the metastore costs lately (see `Metastore::flush_cost`).
    pub fn flush_cost(&self) -> Option<Duration> {
        self.metastore.flush_cost()
    }

    /// Removed snapshots whose directories the background has yet to delete.
    pub fn removals_queued(&self) -> usize {
        self.background.removals_queued()
    }

    fn forget_usage(&self, id: SnapshotId) {
        self.active_usage.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Remove every directory without a record, after
    /// the background jobs queued so far. A Prepare half-way (its directory made, its
    /// record not yet committed) holds a claim on its directory, which
    /// cleanup skips; holding writers off keeps records from changing
    /// while we look.
    pub fn cleanup(&self) -> Result<()> {
        self.background.wait_idle();
        let report = self.metastore.read_holding_writers(|tx| {
            let keep: HashSet<SnapshotId> = tx.ids()?;
            Ok(self.dirs.cleanup(&keep))
        })??;
        tracing::info!(snapshotter = %self.name, ?report, "cleanup");
        Ok(())
    }

    fn content_dir(&self, record: &Record) -> Option<PathBuf> {
        record.content.as_ref().map(|name| self.dirs.dir(record.id).join(name))
    }
}

impl Drop for Snapshotter {
    /// Says how much group commit shared: with concurrent writers, fewer
    /// durable commits (redo log flushes) than commits.
    fn drop(&mut self) {
        let stats = self.metastore.commit_stats();
        tracing::info!(snapshotter = %self.name, commits = stats.commits, durable = stats.durable, "metastore group commit");
    }
}

/// Set `path`'s mode, through a descriptor opened without following a
/// symlink (so a planted link is refused, never chmodded through).
fn private(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| anyhow::anyhow!("open {} to set mode {mode:o}: {e}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| anyhow::anyhow!("chmod {} {mode:o}: {e}", path.display()))
}

/// The snapshot as the policy sees it. Labels with an empty value are not
/// stored (containerd deletes them), so the policy never sees one either.
pub(crate) fn policy_snapshot(
    id: SnapshotId,
    kind: Kind,
    parent_ids: Vec<SnapshotId>,
    labels: &Labels,
) -> Result<Snapshot> {
    let id_map = id_map_of(labels)?;
    let labels =
        labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(Snapshot { id, kind, parent_ids, labels, id_map })
}

/// The id map of containerd's uid/gid mapping labels (empty values are
/// not stored, so not counted); InvalidArgument naming the label for a bad
/// one.
fn id_map_of(labels: &Labels) -> Result<Option<IdMap>> {
    let set = labels.iter().filter(|(_, v)| !v.is_empty());
    idmap::from_labels(set.map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| Error::InvalidArgument(format!("invalid id map: {e}")))
}

#[cfg(test)]
#[path = "snapshotter_tests.rs"]
mod tests;
