//! The daemon's walkers of container-written trees, through a real socket:
//! Usage, Commit and Remove of an active snapshot, and a Prepare that
//! copies (native) or clones-or-copies (bind) a committed parent, each run
//! 200 times while a thread swaps a middle directory of the tree with a
//! symlink to a canary outside it, and a file with a device node (see
//! `host/fs/tests/support/race.rs`, shared with wasmsnap-fs's tests). The
//! daemon must never open or read the canary, a fifo or a device (fanotify,
//! by the daemon's pid), never count or copy the canary, answer every call
//! in time, and stay up.

use crate::common;

#[path = "../../host/fs/tests/support/race.rs"]
mod race;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Daemon, api, daemon_on_tmpfs};
use race::{Canary, Swapper};

const RUNS: usize = 200;
/// Per call: a walker that hangs fails the test instead of stalling it.
const CALL_LIMIT: Duration = Duration::from_secs(20);

type Client = api::snapshots_client::SnapshotsClient<tonic::transport::Channel>;

macro_rules! call {
    ($what:expr, $fut:expr) => {
        match tokio::time::timeout(CALL_LIMIT, $fut).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => panic!("{}: {status:?}", $what),
            Err(_) => panic!("{}: no answer within {CALL_LIMIT:?} (hung?)", $what),
        }
    };
}

fn is_root(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("WASMSNAP_ALLOW_SKIP").is_some_and(|v| v != "0") {
        eprintln!("SKIPPED: {test}: needs root (mknod, fanotify)");
        return false;
    }
    panic!("{test} needs root (mknod, fanotify); set WASMSNAP_ALLOW_SKIP=1 to skip");
}

async fn prepare(c: &mut Client, s: &str, key: &str, parent: &str) -> PathBuf {
    let req = api::PrepareSnapshotRequest {
        snapshotter: s.into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    };
    let mounts = call!(format!("prepare {key}"), c.prepare(req)).mounts;
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    PathBuf::from(&mounts[0].source)
}

async fn commit(c: &mut Client, s: &str, name: &str, key: &str) {
    let req = api::CommitSnapshotRequest {
        snapshotter: s.into(),
        name: name.into(),
        key: key.into(),
        labels: HashMap::new(),
        parent: String::new(),
    };
    call!(format!("commit {key}"), c.commit(req));
}

async fn usage(c: &mut Client, s: &str, key: &str) -> i64 {
    let req = api::UsageRequest { snapshotter: s.into(), key: key.into() };
    call!(format!("usage {key}"), c.usage(req)).size
}

async fn remove(c: &mut Client, s: &str, key: &str) {
    let req = api::RemoveSnapshotRequest { snapshotter: s.into(), key: key.into() };
    call!(format!("remove {key}"), c.remove(req));
}

/// Cleanup waits for the background removals; then the daemon must still
/// answer, and the canary must be whole and untouched.
async fn finish(d: &Daemon, c: &mut Client, s: &str, canary: &Canary) {
    call!("cleanup", c.cleanup(api::CleanupRequest { snapshotter: s.into() }));
    let req = api::ListSnapshotsRequest { snapshotter: s.into(), filters: vec![] };
    match tokio::time::timeout(CALL_LIMIT, c.list(req)).await {
        Ok(Ok(_)) => {}
        other => panic!("the daemon no longer answers: {other:?}\n{}", d.logs()),
    }
    for entry in ["big", race::CANARY_MARK, "d0/deeper"] {
        assert!(canary.dir.join(entry).exists(), "the canary's {entry} was removed");
    }
    canary.assert_untouched(s);
}

/// Usage and Commit measure an active snapshot's tree, Remove deletes it
/// (in the background), each while the tree races.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_commit_remove_stay_in_the_tree_while_it_races() {
    if !is_root("usage_commit_remove_stay_in_the_tree_while_it_races") {
        return;
    }
    const S: &str = "native";
    let (d, _root) = daemon_on_tmpfs(&[]);
    let mut c = d.client().await;
    let base = tempfile::tempdir().unwrap();
    let canary = Canary::new(&base.path().join("canary"));
    canary.watch_pid(d.pid().unwrap());
    let swapper = Swapper::start();
    let started = Instant::now();
    for i in 0..RUNS {
        let (key, name) = (format!("active-{i}"), format!("committed-{i}"));
        let fs = prepare(&mut c, S, &key, "").await;
        let a = race::build_tree_with(&fs, &canary, 20);
        swapper.race_in(Some(&a));
        let active = usage(&mut c, S, &key).await;
        assert!(active < race::bound_bytes() as i64, "usage {i} counted the canary: {active}");
        commit(&mut c, S, &name, &key).await;
        let committed = usage(&mut c, S, &name).await;
        assert!(
            committed < race::bound_bytes() as i64,
            "commit {i} counted the canary: {committed}"
        );
        remove(&mut c, S, &name).await;
    }
    eprintln!(
        "usage/commit/remove: {RUNS} rounds in {:?}, {} swaps",
        started.elapsed(),
        swapper.swaps()
    );
    finish(&d, &mut c, S, &canary).await;
}

/// A Prepare on a committed parent that a container still writes to (it
/// had it mounted read-write at Commit): the copy must hold nothing of the
/// canary and open no device.
async fn prepares_stay_in_the_parent(s: &str) {
    let (d, _root) = daemon_on_tmpfs(&[]);
    let mut c = d.client().await;
    let base = tempfile::tempdir().unwrap();
    let canary = Canary::new(&base.path().join("canary"));
    canary.watch_pid(d.pid().unwrap());
    let fs = prepare(&mut c, s, "parent-key", "").await;
    let a = race::build_tree(&fs, &canary);
    commit(&mut c, s, "parent", "parent-key").await;
    let swapper = Swapper::start();
    swapper.race_in(Some(&a));
    swapper.wait_swaps(100);
    let started = Instant::now();
    for i in 0..RUNS {
        let key = format!("child-{i}");
        let child = prepare(&mut c, s, &key, "parent").await;
        assert_eq!(race::copy_has_canary(&child), None, "{s} prepare {i} copied the canary");
        remove(&mut c, s, &key).await;
    }
    eprintln!("{s} prepare: {RUNS} copies in {:?}, {} swaps", started.elapsed(), swapper.swaps());
    finish(&d, &mut c, s, &canary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_prepare_copy_stays_in_the_parent_while_it_races() {
    if is_root("native_prepare_copy_stays_in_the_parent_while_it_races") {
        prepares_stay_in_the_parent("native").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_prepare_clone_or_copy_stays_in_the_parent_while_it_races() {
    if is_root("bind_prepare_clone_or_copy_stays_in_the_parent_while_it_races") {
        prepares_stay_in_the_parent("bind").await;
    }
}

/// Commit measures the active snapshot before its write transaction: a
/// Prepare of another key started while a Commit walks a big upper dir
/// finishes first, instead of waiting for the walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_walk_does_not_block_other_writers() {
    if !is_root("commit_walk_does_not_block_other_writers") {
        return;
    }
    const S: &str = "native";
    let (d, _root) = daemon_on_tmpfs(&[]);
    let mut c = d.client().await;
    let fs = prepare(&mut c, S, "big", "").await;
    for i in 0..100 {
        let dir = fs.join(format!("d{i}"));
        std::fs::create_dir(&dir).unwrap();
        for j in 0..2000 {
            std::fs::File::create(dir.join(j.to_string())).unwrap();
        }
    }
    let started = Instant::now();
    let req = api::UsageRequest { snapshotter: S.into(), key: "big".into() };
    let measured = call!("usage big", c.usage(req)).inodes;
    let walk = started.elapsed();
    assert_eq!(measured, 1 + 100 + 100 * 2000);
    assert!(walk > Duration::from_millis(200), "the walk ({walk:?}) is too short to tell");

    let committing = {
        let mut c = c.clone();
        tokio::spawn(async move {
            commit(&mut c, S, "big-committed", "big").await;
            Instant::now()
        })
    };
    // Into the Commit's walk, then another writer: it must not wait for
    // the rest of the walk (three quarters of it).
    tokio::time::sleep(walk / 4).await;
    let asked = Instant::now();
    prepare(&mut c, S, "other", "").await;
    let waited = asked.elapsed();
    let committed = committing.await.unwrap();
    eprintln!(
        "walk {walk:?}; the Prepare took {waited:?}; the Commit ended {:?} after the Prepare began",
        committed - asked
    );
    assert!(
        waited < walk / 2,
        "the Prepare took {waited:?}, waiting for the Commit's walk ({walk:?}): the write lock is held across it"
    );
}
