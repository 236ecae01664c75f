//! Fault injection: random churn from concurrent clients against a real
//! daemon, killed with SIGKILL at random moments and restarted each time;
//! after every kill the invariants of docs/crash-safety.md are checked.
//!
//! `WASMSNAP_CRASH_KILLS` sets the number of kills (default 20; the long
//! run is 200), `WASMSNAP_CRASH_SEED` repeats a run's choices (the seed is
//! printed; timing still differs between runs).

use crate::common;
use crate::stress;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, api};
use stress::*;
use tonic::{Code, Status};

const SNAPSHOTTERS: [&str; 2] = ["overlay", "native"];
/// Client tasks per snapshotter.
const TASKS_PER_SNAPSHOTTER: usize = 2;
/// Beyond this many snapshots a task prefers removing.
const MAX_OWNED: usize = 24;

/// How long a client waits for one operation's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Active,
    View,
    Committed,
}

impl Kind {
    fn wire(self) -> i32 {
        (match self {
            Kind::Active => api::Kind::Active,
            Kind::View => api::Kind::View,
            Kind::Committed => api::Kind::Committed,
        }) as i32
    }
}

/// What the clients know about one snapshot: acknowledged state only.
#[derive(Clone, Debug)]
struct Snap {
    kind: Kind,
    parent: String,
    labels: BTreeMap<String, String>,
    /// Files written into its content dir before commit: name -> sha256.
    files: BTreeMap<String, String>,
    owner: usize,
}

/// An operation whose reply never came (the daemon died): after the
/// restart it must either have happened entirely or not at all.
#[derive(Clone, Debug)]
enum Op {
    Create { key: String, kind: Kind, parent: String, labels: BTreeMap<String, String> },
    Commit { key: String, name: String, labels: BTreeMap<String, String> },
    Remove { key: String },
    Update { key: String, label: String, value: String },
    Cleanup,
    Read,
}

#[derive(Default)]
struct World {
    snaps: BTreeMap<String, Snap>,
    uncertain: Vec<Op>,
}

type Worlds = Arc<BTreeMap<&'static str, Mutex<World>>>;

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    acked: u64,
    conflicts: u64,
    in_flight_at_kill: u64,
    happened: u64,
    not_happened: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.acked += o.acked;
        self.conflicts += o.conflicts;
        self.in_flight_at_kill += o.in_flight_at_kill;
        self.happened += o.happened;
        self.not_happened += o.not_happened;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_nothing() {
    let kills: usize = std::env::var("WASMSNAP_CRASH_KILLS")
        .ok()
        .map_or(20, |v| v.parse().expect("WASMSNAP_CRASH_KILLS"));
    let seed = Rng::seed_from_env("WASMSNAP_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("wasmsnap.toml");
    let toml: String = SNAPSHOTTERS
        .iter()
        .map(|s| format!("[snapshotters.{s}]\npolicy = \"builtin:{s}\"\n"))
        .collect();
    std::fs::write(&config, toml).unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let mut d = Daemon::start_with(&args);

    let worlds: Worlds =
        Arc::new(SNAPSHOTTERS.iter().map(|s| (*s, Mutex::new(World::default()))).collect());
    let tasks = SNAPSHOTTERS.len() * TASKS_PER_SNAPSHOTTER;
    let mut next_key = vec![0u64; tasks];
    let mut counts = Counts::default();
    let mut startup_kills = 0;
    let started = Instant::now();

    for kill in 1..=kills {
        let stop = Arc::new(AtomicBool::new(false));
        let mut running = Vec::new();
        for (task, start) in next_key.iter().enumerate() {
            let s = SNAPSHOTTERS[task % SNAPSHOTTERS.len()];
            let (socket, worlds, stop) = (d.socket.clone(), worlds.clone(), stop.clone());
            let task_seed = rng.next();
            let start = *start;
            running.push(tokio::spawn(async move {
                churn(task, s, socket, worlds, stop, task_seed, start).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(20 + rng.below(600))).await;
        stop.store(true, Ordering::SeqCst);
        d.kill();
        for (task, run) in running.into_iter().enumerate() {
            let (next, c) = run.await.unwrap_or_else(|e| {
                fail(&d, seed, format!("task {task} failed (kill {kill}): {e}"))
            });
            next_key[task] = next;
            counts += c;
        }

        // The daemon is down: look at what the crash left.
        let before = SNAPSHOTTERS.map(|s| {
            let crashed = crash_state(&d.root.join(s));
            (
                s,
                crashed.unwrap_or_else(|e| {
                    fail(&d, seed, format!("kill {kill}, snapshotter {s}, before restart: {e}"))
                }),
            )
        });
        // Sometimes kill it again while it recovers.
        if rng.chance(25) {
            startup_kills += 1;
            kill_during_startup(&d, &args, Duration::from_millis(rng.below(1500)));
        }
        let log_start = d.logs().len();
        d.spawn(&args);
        let mut c = d.client().await;
        for (s, crashed) in &before {
            // The clients are stopped: take the model out while checking.
            let mut world = std::mem::take(&mut *worlds[s].lock().unwrap());
            let checked = check_after_restart(&d, &mut c, s, crashed, &mut world).await;
            *worlds[s].lock().unwrap() = world;
            counts += checked.unwrap_or_else(|e| {
                fail(&d, seed, format!("kill {kill}, snapshotter {s}, after restart: {e}"))
            });
        }
        let recovered = d.logs()[log_start..].to_string();
        if recovered.contains("MISSING") || recovered.contains("recovery: snapshot ") {
            fail(
                &d,
                seed,
                format!(
                    "kill {kill}: recovery found a record without its directory or a broken parent link"
                ),
            );
        }
    }
    d.stop();

    let log = d.logs();
    let leftovers = |what: &str| log.matches(&format!("what=\"{what}\"")).count();
    let owned: usize = worlds.values().map(|w| w.lock().unwrap().snaps.len()).sum();
    eprintln!(
        "{kills} kills ({startup_kills} more during start-up) in {:.0?}, seed {seed}: {} operations acknowledged, \
         {} expected conflicts, {} in flight at a kill ({} had happened, {} had not); recovery removed {} interrupted \
         creates, {} interrupted removes, {} directories without a record; {owned} snapshots at the end",
        started.elapsed(),
        counts.acked,
        counts.conflicts,
        counts.in_flight_at_kill,
        counts.happened,
        counts.not_happened,
        leftovers("interrupted create"),
        leftovers("interrupted remove"),
        leftovers("directory without a record"),
    );
}

/// Fails the test, keeping the daemon's log (the temp root goes away).
fn fail(d: &Daemon, seed: u64, message: String) -> ! {
    let kept = std::env::temp_dir().join(format!("wasmsnap-crash-{seed}.log"));
    let _ = std::fs::copy(&d.log, &kept);
    panic!(
        "{message}\nseed {seed} (WASMSNAP_CRASH_SEED); the daemon's log is kept in {}",
        kept.display()
    );
}

/// Start the daemon on the same root and kill it after `after`, whether it
/// is still recovering or already serving.
fn kill_during_startup(d: &Daemon, args: &[&str], after: Duration) {
    let log = std::fs::OpenOptions::new().append(true).open(&d.log).unwrap();
    let mut child = Command::new(common::bin())
        .arg("serve")
        .arg("--root")
        .arg(&d.root)
        .arg("--address")
        .arg(&d.socket)
        .args(["--log-level", "debug"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// One client's churn until `stop`: returns its next key number and counts.
async fn churn(
    task: usize,
    s: &'static str,
    socket: PathBuf,
    worlds: Worlds,
    stop: Arc<AtomicBool>,
    seed: u64,
    mut next: u64,
) -> (u64, Counts) {
    let mut rng = Rng::new(seed);
    let mut counts = Counts::default();
    let mut c = common::connect(&socket).await;
    let world = &worlds[s];
    while !stop.load(Ordering::SeqCst) {
        next += 1;
        let op = choose(&mut rng, &world.lock().unwrap(), task, next);
        // A call to a daemon that was just killed fails at once; one seen
        // hanging (the tonic channel never woke its request) must not hang
        // the run: it counts as in flight at the kill, or fails the test.
        let answer = tokio::time::timeout(CALL_TIMEOUT, run(&mut c, s, &op, &mut rng))
            .await
            .unwrap_or_else(|_| {
                eprintln!("task {task}: {op:?} got no answer within {CALL_TIMEOUT:?}");
                Err(Status::deadline_exceeded("no answer within CALL_TIMEOUT"))
            });
        match answer {
            Ok(files) => {
                apply(&mut world.lock().unwrap(), &op, task, files);
                counts.acked += 1;
            }
            Err(status) if stop.load(Ordering::SeqCst) => {
                // The daemon is being killed: this one may or may not have happened.
                let _ = status;
                counts.in_flight_at_kill += 1;
                world.lock().unwrap().uncertain.push(op);
                break;
            }
            Err(status) if expected_conflict(&op, &status) => counts.conflicts += 1,
            Err(status) => panic!("task {task}: {op:?} failed: {status:?}"),
        }
    }
    (next, counts)
}

fn choose(rng: &mut Rng, world: &World, task: usize, n: u64) -> Op {
    let own: Vec<(&String, &Snap)> = world.snaps.iter().filter(|(_, s)| s.owner == task).collect();
    let committed: Vec<&String> =
        world.snaps.iter().filter(|(_, s)| s.kind == Kind::Committed).map(|(k, _)| k).collect();
    let actives: Vec<&String> =
        own.iter().filter(|(_, s)| s.kind == Kind::Active).map(|(k, _)| *k).collect();
    let has_children = |key: &str| world.snaps.values().any(|s| s.parent == key);
    let removable: Vec<&String> =
        own.iter().filter(|(k, _)| !has_children(k)).map(|(k, _)| *k).collect();
    let random_labels = |rng: &mut Rng| -> BTreeMap<String, String> {
        (0..rng.below(3)).map(|i| (format!("l{i}"), format!("v{}", rng.below(1000)))).collect()
    };
    let roll = if own.len() > MAX_OWNED { 0 } else { rng.below(100) };
    match roll {
        0..=19 if !removable.is_empty() => {
            Op::Remove { key: (*rng.pick(&removable).unwrap()).clone() }
        }
        20..=39 if !actives.is_empty() => Op::Commit {
            key: (*rng.pick(&actives).unwrap()).clone(),
            name: format!("t{task}-c{n}"),
            labels: random_labels(rng),
        },
        40..=47 if !committed.is_empty() => Op::Create {
            key: format!("t{task}-v{n}"),
            kind: Kind::View,
            parent: (*rng.pick(&committed).unwrap()).clone(),
            labels: random_labels(rng),
        },
        48..=55 if !own.is_empty() => Op::Update {
            key: own[rng.below(own.len() as u64) as usize].0.clone(),
            label: format!("u{}", rng.below(4)),
            value: if rng.chance(20) { String::new() } else { format!("x{}", rng.below(1000)) },
        },
        56..=58 => Op::Cleanup,
        59..=63 => Op::Read,
        _ => {
            let parent = if committed.is_empty() || rng.chance(20) {
                String::new()
            } else {
                (*rng.pick(&committed).unwrap()).clone()
            };
            Op::Create {
                key: format!("t{task}-a{n}"),
                kind: Kind::Active,
                parent,
                labels: random_labels(rng),
            }
        }
    }
}

/// Runs `op`; for a Prepare, also writes files into the new snapshot and
/// returns their checksums.
async fn run(
    c: &mut Client,
    s: &str,
    op: &Op,
    rng: &mut Rng,
) -> Result<BTreeMap<String, String>, Status> {
    let mut files = BTreeMap::new();
    match op {
        Op::Create { key, kind: Kind::Active, parent, labels } => {
            let mut req = prepare(s, key, parent);
            req.labels = labels.clone().into_iter().collect();
            let m = c.prepare(req).await?.into_inner().mounts;
            let dir = writable_dir(&m).unwrap_or_else(|| panic!("no writable dir in {m:?}"));
            for i in 0..1 + rng.below(3) {
                let len = rng.below(48 << 10) as usize;
                let data = rng.bytes(len);
                let name = format!("{key}-{i}");
                std::fs::write(dir.join(&name), &data).unwrap();
                files.insert(name, sha256(&data));
            }
        }
        Op::Create { key, parent, labels, .. } => {
            let mut req = view(s, key, parent);
            req.labels = labels.clone().into_iter().collect();
            c.view(req).await?;
        }
        Op::Commit { key, name, labels } => {
            let mut req = commit(s, name, key);
            req.labels = labels.clone().into_iter().collect();
            c.commit(req).await?;
        }
        Op::Remove { key } => {
            c.remove(remove(s, key)).await?;
        }
        Op::Update { key, label, value } => {
            let path = format!("labels.{label}");
            c.update(update(s, key, [(label.clone(), value.clone())].into(), &[&path])).await?;
        }
        Op::Cleanup => {
            c.cleanup(cleanup(s)).await?;
        }
        Op::Read => {
            list(c, s, &["kind==committed"]).await?;
        }
    }
    Ok(files)
}

/// Conflicts between tasks: a parent removed by its owner before a Prepare
/// on it arrived, or a child prepared on it before its Remove arrived.
fn expected_conflict(op: &Op, status: &Status) -> bool {
    match op {
        Op::Create { .. } => {
            status.code() == Code::NotFound && status.message().contains("parent snapshot")
        }
        Op::Remove { .. } => {
            status.code() == Code::FailedPrecondition
                && status.message().contains("cannot remove snapshot with child")
        }
        _ => false,
    }
}

fn apply(world: &mut World, op: &Op, task: usize, files: BTreeMap<String, String>) {
    match op {
        Op::Create { key, kind, parent, labels } => {
            let snap = Snap {
                kind: *kind,
                parent: parent.clone(),
                labels: labels.clone(),
                files,
                owner: task,
            };
            world.snaps.insert(key.clone(), snap);
        }
        Op::Commit { key, name, labels } => {
            let mut snap = world.snaps.remove(key).expect("committed an active the model has");
            snap.kind = Kind::Committed;
            snap.labels = labels.clone();
            world.snaps.insert(name.clone(), snap);
        }
        Op::Remove { key } => {
            world.snaps.remove(key);
        }
        Op::Update { key, label, value } => {
            let labels =
                &mut world.snaps.get_mut(key).expect("updated a snapshot the model has").labels;
            if value.is_empty() {
                labels.remove(label);
            } else {
                labels.insert(label.clone(), value.clone());
            }
        }
        Op::Cleanup | Op::Read => {}
    }
}

/// What the metastore and the disk hold right after a kill, before any
/// recovery ran, with the crash-order invariants checked on it.
struct Crashed {
    /// name -> (id, record)
    records: BTreeMap<String, wasmsnap_metastore::Record>,
}

fn crash_state(root: &Path) -> Result<Crashed, String> {
    let records: BTreeMap<String, _> =
        records(root).into_iter().map(|r| (r.name.clone(), r)).collect();
    let chains = parent_ids(root);
    let snapshots = root.join("snapshots");
    for r in records.values() {
        // Every record has its directory, even before recovery.
        let dir = snapshots.join(r.id.to_string());
        if !dir.is_dir() {
            return Err(format!(
                "record {:?} (id {}) has no directory {}",
                r.name,
                r.id,
                dir.display()
            ));
        }
        if let Some(content) = &r.content
            && !dir.join(content).is_dir()
        {
            return Err(format!(
                "record {:?}: no content dir {content} in {}",
                r.name,
                dir.display()
            ));
        }
        // Parent links: the parent exists, is committed, and the id chain
        // is the parent's id followed by the parent's chain.
        let chain = &chains[&r.name];
        match &r.parent {
            None if chain.is_empty() => {}
            None => {
                return Err(format!("{:?} has no parent but an id chain {chain:?}", r.name));
            }
            Some(p) => {
                let parent = records.get(p).ok_or_else(|| {
                    format!("{:?} names parent {p:?}, which has no record", r.name)
                })?;
                if parent.kind != wasmsnap_plan::Kind::Committed {
                    return Err(format!("parent {p:?} of {:?} is {:?}", r.name, parent.kind));
                }
                let mut expected = vec![parent.id];
                expected.extend(&chains[p]);
                if chain != &expected {
                    return Err(format!(
                        "id chain of {:?} is {chain:?}, expected {expected:?}",
                        r.name
                    ));
                }
            }
        }
    }
    Ok(Crashed { records })
}

/// After the restart: recovery left exactly one directory per record and
/// changed no record; every acknowledged operation is there; each one in
/// flight at the kill happened entirely or not at all; files are intact.
async fn check_after_restart(
    d: &Daemon,
    c: &mut Client,
    s: &str,
    crashed: &Crashed,
    world: &mut World,
) -> Result<Counts, String> {
    let mut counts = Counts::default();
    let snapshots = d.snapshots_dir(s);
    let ids: BTreeSet<String> = crashed.records.values().map(|r| r.id.to_string()).collect();
    let on_disk: BTreeSet<String> = entries(&snapshots).into_iter().collect();
    if on_disk != ids {
        return Err(format!("after recovery, snapshots/ holds {on_disk:?}, the records {ids:?}"));
    }
    c.cleanup(cleanup(s)).await.map_err(|e| format!("cleanup: {e}"))?;
    let on_disk: BTreeSet<String> = entries(&snapshots).into_iter().collect();
    if on_disk != ids {
        return Err(format!("after Cleanup, snapshots/ holds {on_disk:?}, the records {ids:?}"));
    }

    let listed: BTreeMap<String, api::Info> = list(c, s, &[])
        .await
        .map_err(|e| format!("list: {e}"))?
        .into_iter()
        .map(|i| (i.name.clone(), i))
        .collect();
    let names: Vec<&String> = listed.keys().collect();
    if names != crashed.records.keys().collect::<Vec<_>>() {
        return Err(format!(
            "List after recovery {names:?} differs from the records at the kill {:?}",
            crashed.records.keys()
        ));
    }

    // Settle what was in flight, then the model must match exactly.
    for op in std::mem::take(&mut world.uncertain) {
        let happened = match &op {
            Op::Create { key, kind, parent, .. } => match listed.get(key) {
                None => false,
                Some(i) if i.kind == kind.wire() && &i.parent == parent => true,
                Some(i) => return Err(format!("in-flight {op:?} left {i:?}")),
            },
            Op::Commit { key, name, .. } => match (listed.contains_key(key), listed.get(name)) {
                (true, None) => false,
                (false, Some(i)) if i.kind == Kind::Committed.wire() => true,
                other => return Err(format!("in-flight {op:?} is half done: {other:?}")),
            },
            Op::Remove { key } => !listed.contains_key(key),
            Op::Update { key, label, value } => {
                let now =
                    listed.get(key).and_then(|i| i.labels.get(label)).cloned().unwrap_or_default();
                &now == value
                    && world
                        .snaps
                        .get(key)
                        .and_then(|s| s.labels.get(label))
                        .cloned()
                        .unwrap_or_default()
                        != now
            }
            Op::Cleanup | Op::Read => false,
        };
        if happened {
            // Only a Create uses the owner; its key says who ("t<task>-...").
            let owner = match &op {
                Op::Create { key, .. } => key[1..key.find('-').unwrap()].parse().unwrap(),
                _ => usize::MAX,
            };
            apply(world, &op, owner, BTreeMap::new());
            counts.happened += 1;
        } else {
            counts.not_happened += 1;
        }
    }

    for (name, snap) in &world.snaps {
        let Some(info) = listed.get(name) else {
            return Err(format!("acknowledged snapshot {name:?} ({snap:?}) is gone"));
        };
        let labels: BTreeMap<String, String> = info.labels.clone().into_iter().collect();
        if info.kind != snap.kind.wire() || info.parent != snap.parent || labels != snap.labels {
            return Err(format!("{name:?} is {info:?}, the acknowledged state is {snap:?}"));
        }
    }
    if let Some(extra) = listed.keys().find(|k| !world.snaps.contains_key(*k)) {
        return Err(format!("{extra:?} exists but was never acknowledged nor in flight"));
    }

    // Files: each snapshot's own, and for a copying snapshotter its
    // ancestors' too, byte for byte.
    for (name, snap) in &world.snaps {
        let record = &crashed.records[name];
        let Some(content) = &record.content else {
            continue;
        };
        let dir = snapshots.join(record.id.to_string()).join(content);
        let mut expect = snap.files.clone();
        if s == "native" {
            let mut parent = &snap.parent;
            while let Some(p) = world.snaps.get(parent) {
                expect.extend(p.files.clone());
                parent = &p.parent;
            }
        }
        for (file, sum) in &expect {
            let actual = sha256_file(&dir.join(file));
            if &actual != sum {
                return Err(format!("{name:?}: file {file} is {actual}, was written as {sum}"));
            }
        }
    }

    // Mounts of actives and views name only the snapshot and its parents,
    // whose directories exist; an overlay's lowers are the parent chain.
    for (name, snap) in world.snaps.iter().filter(|(_, s)| s.kind != Kind::Committed) {
        let m = c
            .mounts(mounts(s, name))
            .await
            .map_err(|e| format!("mounts of {name:?}: {e}"))?
            .into_inner()
            .mounts;
        let mut chain = Vec::new();
        let mut parent = snap.parent.clone();
        while let Some(p) = crashed.records.get(&parent) {
            chain.push(p.id);
            parent = p.parent.clone().unwrap_or_default();
        }
        let mut allowed = chain.clone();
        allowed.push(crashed.records[name].id);
        let used = ids_in(&m);
        if used.is_empty()
            || used
                .iter()
                .any(|id| !allowed.contains(id) || !snapshots.join(id.to_string()).is_dir())
        {
            return Err(format!(
                "mounts of {name:?} ({m:?}) use ids outside {allowed:?} or missing"
            ));
        }
        if s == "overlay"
            && snap.kind == Kind::Active
            && !chain.is_empty()
            && lower_ids(&m) != chain
        {
            return Err(format!(
                "overlay lowers of {name:?} are {:?}, the parent chain {chain:?}",
                lower_ids(&m)
            ));
        }
    }
    Ok(counts)
}

/// What a power loss can take (directories made since the last journal
/// commit) or someone can delete: an empty tree of an active snapshot or a
/// view is made again at start from its record and the policy's layout; a
/// record whose tree cannot be made again (a committed layer, a copy of a
/// parent) is never dropped: reported at start, still listed and
/// removable, and nothing is mounted or built on it.
#[tokio::test(flavor = "multi_thread")]
async fn lost_trees_are_rebuilt_or_stay_visible_and_removable() {
    const S: &str = "overlay";
    const N: &str = "native";
    let mut d = Daemon::start();
    {
        let mut c = d.client().await;
        c.prepare(prepare(S, "extract-base", "")).await.unwrap();
        c.commit(commit(S, "base", "extract-base")).await.unwrap();
        c.prepare(prepare(S, "act", "base")).await.unwrap();
        c.view(view(S, "vw", "base")).await.unwrap();
        c.prepare(prepare(S, "solo", "")).await.unwrap();
        c.prepare(prepare(S, "hollow", "")).await.unwrap();
        c.prepare(prepare(S, "fine", "")).await.unwrap();
        c.prepare(prepare(N, "extract-layer", "")).await.unwrap();
        c.commit(commit(N, "layer", "extract-layer")).await.unwrap();
        c.prepare(prepare(N, "copied", "layer")).await.unwrap();
    }
    assert!(d.stop().success());
    let ids: BTreeMap<String, u64> =
        records(&d.root.join(S)).into_iter().map(|r| (r.name, r.id)).collect();
    let copied_id = records(&d.root.join(N)).into_iter().find(|r| r.name == "copied").unwrap().id;
    let snapshots = d.snapshots_dir(S);
    let dir = |key: &str| snapshots.join(ids[key].to_string());
    let modes = |path: &Path| -> Vec<(String, u32, u32, u32)> {
        let mut out: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| {
                use std::os::unix::fs::MetadataExt;
                let m = e.as_ref().unwrap().metadata().unwrap();
                (e.unwrap().file_name().into_string().unwrap(), m.mode(), m.uid(), m.gid())
            })
            .collect();
        out.sort();
        out
    };
    let fine = modes(&dir("fine"));
    std::fs::remove_dir_all(dir("base")).unwrap();
    std::fs::remove_dir_all(dir("solo")).unwrap();
    // Only the content dir gone.
    std::fs::remove_dir_all(dir("hollow").join("fs")).unwrap();
    std::fs::remove_dir_all(d.snapshots_dir(N).join(copied_id.to_string())).unwrap();

    let log_start = d.logs().len();
    d.spawn(&[]);
    let log = d.logs()[log_start..].to_string();
    let line_of = |needle: &str, key: &str| {
        let line = log.lines().find(|l| l.contains(needle) && l.contains(&format!("key={key} ")));
        line.unwrap_or_else(|| panic!("no {needle:?} line for {key}:\n{log}")).to_string()
    };
    for key in ["base", "copied"] {
        let line = line_of("MISSING", key);
        assert!(line.contains("ERROR"), "{line}");
    }
    assert!(line_of("MISSING", "base").contains(&format!("id={}", ids["base"])));
    assert!(line_of("could not check or rebuild", "copied").contains("copies the parent"), "{log}");
    for key in ["solo", "hollow"] {
        let line = line_of("rebuilt what", key);
        assert!(line.contains("WARN") && line.contains(&format!("id={}", ids[key])), "{line}");
        assert_eq!(modes(&dir(key)), fine, "{key}: rebuilt as the layout makes it");
    }
    assert!(line_of("rebuilt what", "hollow").contains("/fs"), "only fs was made again");
    assert!(!log.contains("key=fine ") && !log.contains("key=act "), "{log}");

    let mut c = d.client().await;
    // Still listed and statted.
    let names: Vec<String> =
        list(&mut c, S, &[]).await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["act", "base", "fine", "hollow", "solo", "vw"]);
    c.stat(stat(S, "base")).await.unwrap();
    // Nothing mounted or built on a lost directory, and the message says which.
    let refused = |r: Result<tonic::Response<_>, Status>, needle: String| {
        let e = r.map(|_: tonic::Response<api::MountsResponse>| ()).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains(&needle) && e.message().contains("is missing"),
            "{needle}: {}",
            e.message()
        );
    };
    let base_dir = format!("its parent \"base\"'s directory {}", dir("base").display());
    refused(c.mounts(mounts(S, "act")).await, base_dir.clone());
    refused(c.mounts(mounts(S, "vw")).await, base_dir.clone());
    let e = c.prepare(prepare(S, "on-base", "base")).await.unwrap_err();
    assert!(e.code() == Code::FailedPrecondition && e.message().contains(&base_dir), "{e:?}");
    let e = c.view(view(S, "view-on-base", "base")).await.unwrap_err();
    assert!(e.code() == Code::FailedPrecondition && e.message().contains(&base_dir), "{e:?}");
    let e = c.commit(commit(N, "copied-committed", "copied")).await.unwrap_err();
    assert!(e.code() == Code::FailedPrecondition && e.message().contains("\"copied\""), "{e:?}");
    // The rebuilt ones serve as before; the healthy one is untouched.
    for key in ["fine", "solo", "hollow"] {
        c.mounts(mounts(S, key)).await.unwrap_or_else(|e| panic!("mounts of {key}: {e}"));
    }
    c.commit(commit(S, "solo-committed", "solo")).await.unwrap();

    // Removable, so containerd's GC can clear them.
    for key in ["act", "vw", "base", "solo-committed", "hollow"] {
        c.remove(remove(S, key)).await.unwrap_or_else(|e| panic!("remove {key}: {e}"));
    }
    c.remove(remove(N, "copied")).await.unwrap();
    c.cleanup(cleanup(S)).await.unwrap();
    assert_eq!(entries(&snapshots), [ids["fine"].to_string()]);
    let log_start = d.logs().len();
    d.stop();
    d.spawn(&[]);
    let log = &d.logs()[log_start..];
    assert!(!log.contains("MISSING") && !log.contains("rebuilt what"), "{log}");
}
