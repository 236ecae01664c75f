//! The daemon over its real gRPC socket: every RPC, and every error code
//! containerd relies on. Each test starts its own `wasmsnap serve`.

use crate::common;

use std::collections::HashMap;

use common::{Daemon, api};
use tonic::Code;

const S: &str = "overlay";

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn prepare(key: &str, parent: &str) -> api::PrepareSnapshotRequest {
    api::PrepareSnapshotRequest {
        snapshotter: S.into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }
}

fn view(key: &str, parent: &str) -> api::ViewSnapshotRequest {
    api::ViewSnapshotRequest {
        snapshotter: S.into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }
}

fn commit(name: &str, key: &str) -> api::CommitSnapshotRequest {
    api::CommitSnapshotRequest {
        snapshotter: S.into(),
        name: name.into(),
        key: key.into(),
        labels: HashMap::new(),
        parent: String::new(),
    }
}

fn stat(key: &str) -> api::StatSnapshotRequest {
    api::StatSnapshotRequest { snapshotter: S.into(), key: key.into() }
}

fn remove(key: &str) -> api::RemoveSnapshotRequest {
    api::RemoveSnapshotRequest { snapshotter: S.into(), key: key.into() }
}

fn list(filters: &[&str]) -> api::ListSnapshotsRequest {
    api::ListSnapshotsRequest {
        snapshotter: S.into(),
        filters: filters.iter().map(|f| f.to_string()).collect(),
    }
}

fn update(
    name: &str,
    labels: HashMap<String, String>,
    paths: &[&str],
) -> api::UpdateSnapshotRequest {
    api::UpdateSnapshotRequest {
        snapshotter: S.into(),
        info: Some(api::Info { name: name.into(), labels, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    }
}

type Client = wasmsnap_daemon::wire::proto::snapshots::snapshots_client::SnapshotsClient<
    tonic::transport::Channel,
>;

async fn names(c: &mut Client, filters: &[&str]) -> Vec<String> {
    let mut stream = c.list(list(filters)).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        out.extend(batch.info.into_iter().map(|i| i.name));
    }
    out.sort();
    out
}

/// A committed chain base <- l1 <- l2 (keys "layer-0".."layer-n").
async fn chain(c: &mut Client, n: usize) {
    let mut parent = String::new();
    for i in 0..n {
        let key = format!("extract-{i}");
        let name = format!("layer-{i}");
        c.prepare(prepare(&key, &parent)).await.unwrap();
        c.commit(commit(&name, &key)).await.unwrap();
        parent = name;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_commit_view_mounts_stat_remove() {
    let d = Daemon::start();
    let mut c = d.client().await;

    let m = c.prepare(prepare("base", "")).await.unwrap().into_inner().mounts;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].r#type, "bind");
    assert_eq!(m[0].options, vec!["rw", "rbind"]);
    let base_fs = std::path::PathBuf::from(&m[0].source);
    assert!(base_fs.is_dir(), "{base_fs:?} exists");
    std::fs::write(base_fs.join("hello"), "world").unwrap();

    let info = c.stat(stat("base")).await.unwrap().into_inner().info.unwrap();
    assert_eq!(info.kind, api::Kind::Active as i32);
    assert_eq!(info.created_at, info.updated_at);

    c.commit(commit("layer", "base")).await.unwrap();
    let info = c.stat(stat("layer")).await.unwrap().into_inner().info.unwrap();
    assert_eq!(info.kind, api::Kind::Committed as i32);
    assert_eq!(c.stat(stat("base")).await.unwrap_err().code(), Code::NotFound);
    let usage = c
        .usage(api::UsageRequest { snapshotter: S.into(), key: "layer".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(usage.size > 0 && usage.inodes == 2, "{usage:?}");

    let m = c.prepare(prepare("top", "layer")).await.unwrap().into_inner().mounts;
    assert_eq!(m[0].r#type, "overlay");
    let lower = m[0].options.iter().find(|o| o.starts_with("lowerdir=")).unwrap();
    assert_eq!(lower, &format!("lowerdir={}", base_fs.display()));
    assert_eq!(
        c.mounts(api::MountsRequest { snapshotter: S.into(), key: "top".into() })
            .await
            .unwrap()
            .into_inner()
            .mounts,
        m
    );

    let v = c.view(view("v", "layer")).await.unwrap().into_inner().mounts;
    assert_eq!(v[0].r#type, "bind");
    assert_eq!(v[0].options, vec!["ro", "rbind"]);
    assert_eq!(v[0].source, base_fs.display().to_string());
    let info = c.stat(stat("v")).await.unwrap().into_inner().info.unwrap();
    assert_eq!((info.kind, info.parent.as_str()), (api::Kind::View as i32, "layer"));

    for key in ["v", "top", "layer"] {
        c.remove(remove(key)).await.unwrap();
    }
    assert!(names(&mut c, &[]).await.is_empty());
    c.cleanup(api::CleanupRequest { snapshotter: S.into() }).await.unwrap();
    assert_eq!(
        std::fs::read_dir(d.snapshots_dir(S)).unwrap().count(),
        0,
        "no snapshot directories left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_match_containerd() {
    let d = Daemon::start();
    let mut c = d.client().await;
    chain(&mut c, 1).await;
    c.prepare(prepare("active", "layer-0")).await.unwrap();
    c.view(view("view", "layer-0")).await.unwrap();

    let code = |r: Result<tonic::Response<_>, tonic::Status>| {
        r.map(|_: tonic::Response<()>| ()).unwrap_err().code()
    };
    // NotFound
    assert_eq!(c.stat(stat("missing")).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(c.prepare(prepare("x", "missing")).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(code(c.remove(remove("missing")).await), Code::NotFound);
    assert_eq!(code(c.commit(commit("n", "missing")).await), Code::NotFound);
    // AlreadyExists
    assert_eq!(c.prepare(prepare("active", "")).await.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(c.view(view("layer-0", "")).await.unwrap_err().code(), Code::AlreadyExists);
    c.prepare(prepare("other", "")).await.unwrap();
    assert_eq!(code(c.commit(commit("layer-0", "other")).await), Code::AlreadyExists);
    // FailedPrecondition
    assert_eq!(
        c.prepare(prepare("on-active", "active")).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        c.prepare(prepare("on-view", "view")).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(code(c.commit(commit("c", "view")).await), Code::FailedPrecondition);
    assert_eq!(code(c.commit(commit("c", "layer-0")).await), Code::FailedPrecondition);
    let e = c.remove(remove("layer-0")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("remove"), "{}", e.message());
    let e = c
        .mounts(api::MountsRequest { snapshotter: S.into(), key: "layer-0".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // InvalidArgument
    assert_eq!(c.prepare(prepare("", "")).await.unwrap_err().code(), Code::InvalidArgument);
    for path in ["name", "kind", "parent", "size"] {
        let e = c.update(update("active", HashMap::new(), &[path])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "update {path}");
        assert!(e.message().contains(path), "{}", e.message());
    }
    let big = "v".repeat(4097);
    let mut req = prepare("big-label", "");
    req.labels = labels(&[("containerd.io/snapshot/x", &big)]);
    assert_eq!(c.prepare(req).await.unwrap_err().code(), Code::InvalidArgument);
    let e = c.list(list(&["labels.\"unterminated"])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    // Unknown snapshotter: NotFound naming the served ones.
    let mut req = prepare("k", "");
    req.snapshotter = "nope".into();
    let e = c.prepare(req).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("overlay"), "{}", e.message());

    // Nothing above left a trace: only the snapshots we made exist.
    assert_eq!(names(&mut c, &[]).await, vec!["active", "layer-0", "other", "view"]);
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_labels_and_filters() {
    let d = Daemon::start();
    let mut c = d.client().await;
    chain(&mut c, 2).await;
    let mut req = prepare("a", "layer-1");
    req.labels = labels(&[("containerd.io/snapshot.ref", "sha256:abc"), ("l1", "v1")]);
    c.prepare(req).await.unwrap();

    // labels.<key> sets one label, an absent value deletes it.
    let info = c
        .update(update("a", labels(&[("l2", "v2")]), &["labels.l2"]))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(
        info.labels,
        labels(&[("containerd.io/snapshot.ref", "sha256:abc"), ("l1", "v1"), ("l2", "v2")])
    );
    assert!(info.updated_at.as_ref().unwrap().seconds >= info.created_at.as_ref().unwrap().seconds);
    let info = c
        .update(update("a", HashMap::new(), &["labels.l1"]))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert!(!info.labels.contains_key("l1"));
    // No mask replaces all labels.
    let info = c
        .update(update("a", labels(&[("only", "x")]), &[]))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.labels, labels(&[("only", "x")]));

    c.update(update(
        "layer-1",
        labels(&[("containerd.io/snapshot.ref", "sha256:abc:def")]),
        &["labels"],
    ))
    .await
    .unwrap();
    assert_eq!(names(&mut c, &["kind==committed"]).await, vec!["layer-0", "layer-1"]);
    assert_eq!(names(&mut c, &["kind==active", "name==layer-0"]).await, vec!["a", "layer-0"]);
    assert_eq!(names(&mut c, &["parent==layer-1"]).await, vec!["a"]);
    assert_eq!(names(&mut c, &["parent!=\"\",kind==committed"]).await, vec!["layer-1"]);
    assert_eq!(names(&mut c, &["labels.only"]).await, vec!["a"]);
    assert_eq!(names(&mut c, &["name~=layer-[01]"]).await, vec!["layer-0", "layer-1"]);
    // containerd's remote-snapshot lookup: an unquoted value with ':'.
    assert_eq!(
        names(
            &mut c,
            &["labels.\"containerd.io/snapshot.ref\"==sha256:abc:def,parent==\"layer-0\""]
        )
        .await,
        vec!["layer-1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_replaces_labels_and_refreshes_times() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let mut req = prepare("k", "");
    req.labels = labels(&[("a", "1")]);
    c.prepare(req).await.unwrap();
    let before = c.stat(stat("k")).await.unwrap().into_inner().info.unwrap();
    let mut req = commit("n", "k");
    req.labels = labels(&[("b", "2")]);
    c.commit(req).await.unwrap();
    let after = c.stat(stat("n")).await.unwrap().into_inner().info.unwrap();
    assert_eq!(after.labels, labels(&[("b", "2")]));
    assert_eq!(after.created_at, after.updated_at);
    let (b, a) = (before.created_at.unwrap(), after.created_at.unwrap());
    assert!((a.seconds, a.nanos) > (b.seconds, b.nanos));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_streams_in_batches_and_namespace_header_is_optional() {
    let d = Daemon::start();
    let mut c = d.client().await;
    for i in 0..250 {
        c.prepare(prepare(&format!("k{i:03}"), "")).await.unwrap();
    }
    let mut req = tonic::Request::new(list(&[]));
    req.metadata_mut().insert("containerd-namespace", "k8s.io".parse().unwrap());
    let mut stream = c.list(req).await.unwrap().into_inner();
    let mut sizes = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        sizes.push(batch.info.len());
    }
    assert_eq!(sizes, vec![100, 100, 50]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_state_survives_restart() {
    let mut d = Daemon::start();
    {
        let mut c = d.client().await;
        chain(&mut c, 3).await;
    }
    assert!(d.stop().success(), "{}", d.logs());
    d.spawn(&[]);
    let mut c = d.client().await;
    assert_eq!(names(&mut c, &[]).await, vec!["layer-0", "layer-1", "layer-2"]);
    let info = c.stat(stat("layer-2")).await.unwrap().into_inner().info.unwrap();
    assert_eq!(info.parent, "layer-1");
}
