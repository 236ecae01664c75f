//! The snapshotter's fast paths keep containerd's semantics: concurrent
//! Prepares (directories built outside the write lock, records sharing
//! fsyncs), the cache of mount plans (a label Update is seen at once),
//! background removal (Cleanup leaves nothing behind).

use crate::common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::scrape::{sample, scrape_unix};
use common::{Daemon, api};
use tonic::Code;

const S: &str = "overlay";

fn prepare(snapshotter: &str, key: &str, parent: &str) -> api::PrepareSnapshotRequest {
    api::PrepareSnapshotRequest {
        snapshotter: snapshotter.into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }
}

fn commit(snapshotter: &str, name: &str, key: &str) -> api::CommitSnapshotRequest {
    api::CommitSnapshotRequest {
        snapshotter: snapshotter.into(),
        name: name.into(),
        key: key.into(),
        labels: HashMap::new(),
        parent: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prepares_of_one_key_one_wins_and_nothing_is_left() {
    let d = Daemon::start();
    let mut c = d.client().await;
    c.prepare(prepare(S, "base-key", "")).await.unwrap();
    c.commit(commit(S, "base", "base-key")).await.unwrap();

    let attempts: Vec<_> = (0..12)
        .map(|_| {
            let mut c = c.clone();
            tokio::spawn(async move {
                c.prepare(prepare(S, "same", "base")).await.map(|r| r.into_inner().mounts)
            })
        })
        .collect();
    let mut won = 0;
    for a in attempts {
        match a.await.unwrap() {
            Ok(mounts) => {
                won += 1;
                assert_eq!(mounts[0].r#type, "overlay");
            }
            Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one Prepare of the key succeeds");
    // The winner's mounts are what Mounts says; the losers' directories are gone.
    let mounts = c
        .mounts(api::MountsRequest { snapshotter: S.into(), key: "same".into() })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let upper = mounts[0].options.iter().find_map(|o| o.strip_prefix("upperdir=")).unwrap();
    assert!(PathBuf::from(upper).is_dir(), "{upper}");
    c.cleanup(api::CleanupRequest { snapshotter: S.into() }).await.unwrap();
    assert_eq!(
        std::fs::read_dir(d.snapshots_dir(S)).unwrap().count(),
        2,
        "base and the winner only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prepares_share_fsyncs_and_removes_leave_nothing() {
    let metrics_dir = tempfile::tempdir().unwrap();
    let metrics = metrics_dir.path().join("metrics.sock");
    let mut d = Daemon::start_with(&["--metrics-address", metrics.to_str().unwrap()]);
    let mut c = d.client().await;
    c.prepare(prepare(S, "base-key", "")).await.unwrap();
    c.commit(commit(S, "base", "base-key")).await.unwrap();

    // Whether two writers meet at one flush depends on timing (a fast disk
    // can flush each alone), so bursts of N run until the group commit
    // histogram shows one that did: more transactions than fsyncs.
    const N: usize = 64;
    const MAX_BURSTS: usize = 10;
    let group = |field: &str| {
        let series = format!("wasmsnap_metastore_group_commit_size_{field}{{snapshotter=\"{S}\"}}");
        let text = scrape_unix(&metrics);
        sample(&text, &series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let mut bursts = 0;
    while bursts < MAX_BURSTS {
        concurrent_prepares_and_removes(&c, bursts, N).await;
        bursts += 1;
        if group("sum") > group("count") {
            break;
        }
    }

    c.remove(api::RemoveSnapshotRequest { snapshotter: S.into(), key: "base".into() })
        .await
        .unwrap();
    c.cleanup(api::CleanupRequest { snapshotter: S.into() }).await.unwrap();
    assert_eq!(
        std::fs::read_dir(d.snapshots_dir(S)).unwrap().count(),
        0,
        "no snapshot directories left"
    );

    // The snapshotter tells at exit how many commits it made and how many
    // were durable ones: concurrent writers shared fsyncs.
    assert!(d.stop().success());
    let logs = d.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("metastore group commit") && l.contains(&format!("snapshotter={S}")))
        .unwrap_or_else(|| panic!("no group commit line in the log:\n{logs}"));
    let field = |name: &str| -> u64 {
        let at = line.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {line}"))
            + name.len()
            + 1;
        line[at..].split(|ch: char| !ch.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let (commits, durable) = (field("commits"), field("durable"));
    assert!(commits >= (2 * N * bursts) as u64 + 3, "{line}");
    assert!(
        durable < commits,
        "no two of {commits} commits shared an fsync in {bursts} bursts of {N}: {line}"
    );
}

/// `n` clients at once each Prepare a child of `base` and Remove it; every
/// Prepare gets its own directory.
async fn concurrent_prepares_and_removes(c: &common::Client, burst: usize, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                let key = format!("c-{burst}-{i}");
                let mounts = c.prepare(prepare(S, &key, "base")).await.unwrap().into_inner().mounts;
                c.remove(api::RemoveSnapshotRequest { snapshotter: S.into(), key }).await.unwrap();
                mounts[0]
                    .options
                    .iter()
                    .find_map(|o| o.strip_prefix("upperdir=").map(String::from))
                    .unwrap()
            })
        })
        .collect();
    let mut uppers = Vec::new();
    for t in tasks {
        uppers.push(t.await.unwrap());
    }
    uppers.sort();
    uppers.dedup();
    assert_eq!(uppers.len(), n, "every Prepare got its own directory");
}

/// The ephemeral example policy mounts a labelled active with `volatile`:
/// an Update of the label must change what Mounts answers (the cached plan
/// is not served once the record changed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_update_refreshes_the_cached_mounts() {
    let wasm = PathBuf::from(wasmsnap_test_artifacts::EXAMPLE_EPHEMERAL);
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("[snapshotters.eph]\npolicy = {:?}\n", wasm.display().to_string()),
    )
    .unwrap();
    let d = Daemon::start_with(&["--config", config.path().to_str().unwrap()]);
    let mut c = d.client().await;
    c.prepare(prepare("eph", "base-key", "")).await.unwrap();
    c.commit(commit("eph", "base", "base-key")).await.unwrap();
    c.prepare(prepare("eph", "top", "base")).await.unwrap();

    let volatile = |mounts: Vec<wasmsnap_daemon::wire::proto::Mount>| {
        mounts[0].options.iter().any(|o| o == "volatile")
    };
    let mounts_req = || api::MountsRequest { snapshotter: "eph".into(), key: "top".into() };
    assert!(!volatile(c.mounts(mounts_req()).await.unwrap().into_inner().mounts));
    for (value, expect) in [("true", true), ("false", false), ("true", true)] {
        let label = "containerd.io/snapshot/wasmsnap.ephemeral";
        c.update(api::UpdateSnapshotRequest {
            snapshotter: "eph".into(),
            info: Some(api::Info {
                name: "top".into(),
                labels: HashMap::from([(label.into(), value.into())]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec![format!("labels.{label}")] }),
        })
        .await
        .unwrap();
        assert_eq!(
            volatile(c.mounts(mounts_req()).await.unwrap().into_inner().mounts),
            expect,
            "label {value}"
        );
    }
}
