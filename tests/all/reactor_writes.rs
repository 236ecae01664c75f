//! Prepare, View and Commit on the reactor thread where a flush costs
//! nothing (a tmpfs root; `wire::server`'s `QUICK_FLUSH`). What
//! would not stay short is handed off the reactor unchanged and done
//! there: a copy of a parent, a big upper dir to measure, a policy that
//! does not answer at once. A policy that loops holds the reactor (and so
//! every other request) for its quick deadline, 10 to 20 ms, not for its
//! 1 s call limit, and only once.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, TmpfsRoot, api, commit, daemon_on_tmpfs, prepare, strip_ansi};
use tonic::Code;

type Client = api::snapshots_client::SnapshotsClient<tonic::transport::Channel>;

/// The hostile test policy's label that picks its act per snapshot.
const DO: &str = "containerd.io/snapshot/wasmsnap-test.do";
const GAVE_UP: &str = "too slow for the reactor";
const HANDED_OFF: &str = "handed off the reactor";

fn is_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("WASMSNAP_ALLOW_SKIP").is_some_and(|v| v != "0") {
        eprintln!("SKIPPED: {test}: needs root (a tmpfs root)");
        return false;
    }
    panic!("{test} needs root (a tmpfs root); set WASMSNAP_ALLOW_SKIP=1 to skip");
}

/// The directory a one-mount plan writes into: a bind's source, or an
/// overlay's upperdir.
fn writable_dir(mounts: &[wasmsnap_daemon::wire::proto::Mount]) -> PathBuf {
    let m = &mounts[0];
    if m.r#type == "bind" {
        return PathBuf::from(&m.source);
    }
    let upper = m.options.iter().find_map(|o| o.strip_prefix("upperdir=")).expect("an upperdir");
    PathBuf::from(upper)
}

/// Stats of `key` again and again until `stop`: the slowest answer.
async fn keep_asking(
    mut c: Client,
    s: &'static str,
    key: &'static str,
    stop: Arc<AtomicBool>,
) -> Duration {
    let mut slowest = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let req = api::StatSnapshotRequest { snapshotter: s.into(), key: key.into() };
        c.stat(req).await.unwrap_or_else(|e| panic!("stat {key}: {e}"));
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    slowest
}

/// The daemon on a tmpfs root, serving overlay, native and the hostile
/// test policy; `None` (the test skipped) without root.
fn start(test: &str) -> Option<(Daemon, TmpfsRoot, tempfile::TempDir)> {
    if !is_root(test) {
        return None;
    }
    let conf = tempfile::tempdir().unwrap();
    let (d, tmpfs) = daemon_on_tmpfs(&["--config", config(conf.path()).to_str().unwrap()]);
    Some((d, tmpfs, conf))
}

fn config(dir: &Path) -> PathBuf {
    let file = dir.join("wasmsnap.toml");
    let text = format!(
        "[snapshotters.overlay]\npolicy = \"builtin:overlay\"\n\n\
         [snapshotters.native]\npolicy = \"builtin:native\"\n\n\
         [snapshotters.hostile]\npolicy = {:?}\n",
        wasmsnap_test_artifacts::HOSTILE,
    );
    std::fs::write(&file, text).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_policy_holds_the_reactor_for_its_quick_deadline_once_not_its_call_limit() {
    let Some((d, _tmpfs, _conf)) = start("a_looping_policy_holds_the_reactor") else { return };
    let mut c = d.client().await;
    // Writes first: the daemon learns what a flush costs here (a moving
    // average over the last few).
    for s in ["overlay", "hostile"] {
        prepare(&mut c, s, "base-work", "", HashMap::new()).await.unwrap();
        commit(&mut c, s, "base", "base-work").await.unwrap();
        for n in 0..5 {
            let key = format!("warm-{n}");
            prepare(&mut c, s, &key, "base", HashMap::new()).await.unwrap();
            let req = api::RemoveSnapshotRequest { snapshotter: s.into(), key };
            c.remove(req).await.unwrap();
        }
    }

    for round in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let prober = tokio::spawn(keep_asking(d.client().await, "overlay", "base", stop.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let labels = HashMap::from([(DO.to_string(), "loop".to_string())]);
        let key = format!("victim-{round}");
        let started = Instant::now();
        let status = prepare(&mut c, "hostile", &key, "base", labels).await.unwrap_err();
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let slowest = prober.await.unwrap();
        // The patient call off the reactor ran into the 1 s limit...
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("exceeded its time limit of 1s"), "{status:?}");
        assert!(took >= Duration::from_secs(1), "{took:?}");
        // ... while the reactor answered Stats: held 10 to 20 ms at most.
        assert!(slowest < Duration::from_millis(300), "round {round}: a Stat took {slowest:?}");
    }
    let logs = strip_ansi(&d.logs());
    assert_eq!(logs.matches(GAVE_UP).count(), 1, "asked quickly once only:\n{logs}");
    // It still answers, patiently.
    prepare(&mut c, "hostile", "fine", "base", HashMap::new()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_and_a_big_upper_dir_are_handed_off_the_reactor_and_done_whole() {
    let Some((d, _tmpfs, _conf)) = start("a_copy_and_a_big_upper_dir_are_handed_off") else {
        return;
    };
    let mut c = d.client().await;

    // native copies the parent's tree into the child.
    let base = prepare(&mut c, "native", "n-work", "", HashMap::new()).await.unwrap();
    std::fs::write(writable_dir(&base).join("hello"), b"from the parent").unwrap();
    commit(&mut c, "native", "n-base", "n-work").await.unwrap();
    let child = prepare(&mut c, "native", "n-child", "n-base", HashMap::new()).await.unwrap();
    let copied = std::fs::read(writable_dir(&child).join("hello")).unwrap();
    assert_eq!(copied, b"from the parent");

    // A small and a big upper dir (more entries than a quick walk takes)
    // are both measured whole.
    for (key, files) in [("small", 3), ("big", 1000)] {
        let mounts = prepare(&mut c, "overlay", key, "", HashMap::new()).await.unwrap();
        let upper = writable_dir(&mounts);
        for n in 0..files {
            std::fs::write(upper.join(n.to_string()), b"x").unwrap();
        }
        let layer = format!("{key}-layer");
        commit(&mut c, "overlay", &layer, key).await.unwrap();
        let req = api::UsageRequest { snapshotter: "overlay".into(), key: layer.clone() };
        let usage = c.usage(req).await.unwrap().into_inner();
        assert_eq!(usage.inodes, files + 1, "{layer}: the upper dir and its files");
    }

    // The copy and the big walk were handed off the reactor; the small
    // commit was done on it (each line names its request).
    let logs = strip_ansi(&d.logs());
    let handed_off = |op: &str, key: &str| {
        logs.lines().any(|l| {
            l.contains(HANDED_OFF)
                && l.contains(&format!("op=\"{op}\""))
                && l.contains(&format!("key=\"{key}\""))
        })
    };
    assert!(handed_off("prepare", "n-child"), "the copy:\n{logs}");
    assert!(handed_off("commit", "big"), "the big walk:\n{logs}");
    assert!(!handed_off("commit", "small"), "the small walk:\n{logs}");
    assert!(!handed_off("commit", "n-work"), "an empty walk:\n{logs}");
}
