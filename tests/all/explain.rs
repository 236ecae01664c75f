//! `wasmsnap explain` and `wasmsnap tree` over a running daemon's socket
//! (the admin API beside containerd's Snapshots API).

use std::collections::HashMap;
use std::process::Command;

use crate::common::{self, Daemon, api};
use crate::stress;
use wasmsnap_daemon::wire::admin_client;

const S: &str = "overlay";

/// A Prepare on overlay with `labels`.
fn prepare(key: &str, parent: &str, labels: &[(&str, &str)]) -> api::PrepareSnapshotRequest {
    api::PrepareSnapshotRequest {
        labels: stress::labels(labels),
        ..stress::prepare(S, key, parent)
    }
}

fn wasmsnap(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::bin()).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_and_tree_show_what_is_served() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    client.prepare(prepare("l1-key", "", &[])).await.unwrap();
    client.commit(stress::commit(S, "layer-1", "l1-key")).await.unwrap();
    client.prepare(prepare("l2-key", "layer-1", &[])).await.unwrap();
    client.commit(stress::commit(S, "layer-2", "l2-key")).await.unwrap();
    let label = ("containerd.io/snapshot/app", "web");
    let served = client.prepare(prepare("container", "layer-2", &[label])).await.unwrap();
    let served = served.into_inner().mounts;
    client
        .view(api::ViewSnapshotRequest {
            snapshotter: S.into(),
            key: "peek".into(),
            parent: "layer-1".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap();

    // The admin API: the mounts exactly as the Snapshots API served them.
    let socket = daemon.socket.clone();
    let e = tokio::task::spawn_blocking(move || admin_client::explain(&socket, S, "container"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.mounts, served);
    let record = e.record.clone().unwrap();
    assert_eq!(record.chain, vec!["layer-2", "layer-1"]);
    assert_eq!(record.kind, "active");
    assert_eq!(record.labels.get("containerd.io/snapshot/app").map(String::as_str), Some("web"));
    let policy = e.policy.clone().unwrap();
    assert_eq!(policy.name, "builtin:overlay");
    assert_eq!(policy.sha256.len(), 64);
    assert_eq!(e.plan, "overlay (2 lowers, upper)");
    assert!(e.layout_steps.iter().any(|s| s.starts_with("mkdir fs")), "{:?}", e.layout_steps);
    assert!(e.host_facts.unwrap().page_size >= 4096);

    // The command line prints the same.
    let sock = daemon.socket.to_str().unwrap();
    let (ok, out, err) = wasmsnap(&["explain", "--address", sock, "--snapshotter", S, "container"]);
    assert!(ok, "{err}");
    assert!(out.contains("snapshot   container (id "), "{out}");
    assert!(out.contains("chain      layer-2 <- layer-1"), "{out}");
    assert!(out.contains(&format!("policy     builtin:overlay sha256:{}", policy.sha256)), "{out}");
    assert!(out.contains("plan       overlay (2 lowers, upper)"), "{out}");
    assert!(out.contains("label      containerd.io/snapshot/app=web"), "{out}");
    assert!(out.contains(&format!("options={}", served[0].options.join(","))), "{out}");
    assert!(out.contains("host facts overlay=true"), "{out}");
    let (ok, out, _) = wasmsnap(&["explain", "--address", sock, "--snapshotter", S, "layer-1"]);
    assert!(ok);
    assert!(out.contains("plan       committed"), "{out}");
    assert!(out.contains("usage      "), "{out}");

    // A key that is not there, and a snapshotter that is not served.
    let (ok, _, err) = wasmsnap(&["explain", "--address", sock, "--snapshotter", S, "nope"]);
    assert!(!ok && err.contains("\"nope\""), "{err}");
    let (ok, _, err) = wasmsnap(&["explain", "--address", sock, "--snapshotter", "nah", "x"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // The tree: parents above children, each with its plan type.
    let (ok, out, err) = wasmsnap(&["tree", "--address", sock, "--snapshotter", S]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("layer-1 [committed "), "{out}");
    let child = |prefix: &str| {
        lines.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} in {out}"))
    };
    assert!(child("  layer-2 [committed ").ends_with("committed (no mounts of its own)"));
    assert!(child("    container [active ").ends_with("overlay (2 lowers, upper)"), "{out}");
    // A view of one layer is a read-only bind of it.
    assert!(child("  peek [view ").ends_with("] bind"), "{out}");
}
