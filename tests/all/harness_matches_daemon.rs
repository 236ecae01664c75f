//! What the harness prints is what containerd receives: for the same
//! snapshot, `wasmsnap policy plan` and a case file's expected mounts are
//! byte for byte the mounts the daemon returns over gRPC, with `--root`
//! meaning the daemon's root and the snapshotter's name in the path.

use std::process::Command;

use crate::common::{self, Daemon, api};

/// The snapshot id in a rendered path `<root>/<name>/snapshots/<id>/<dir>`.
fn id_in(path: &str) -> u64 {
    let rest = path.split("/snapshots/").nth(1).unwrap_or_else(|| panic!("no id in {path}"));
    rest.split('/').next().unwrap().parse().unwrap()
}

fn wasmsnap(args: &[&str]) -> std::process::Output {
    let o = Command::new(common::bin()).args(args).output().expect("run wasmsnap");
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_plan_and_case_files_render_what_the_daemon_returns() {
    // No config: every built-in policy served under its own name.
    let d = Daemon::start();
    let mut c = d.client().await;
    let root = d.root.display().to_string();
    let prepare = |key: &str, parent: &str| api::PrepareSnapshotRequest {
        snapshotter: "overlay".into(),
        key: key.into(),
        parent: parent.into(),
        ..Default::default()
    };
    for (n, parent) in [(1, ""), (2, "layer-1")] {
        c.prepare(prepare(&format!("work-{n}"), parent)).await.unwrap();
        c.commit(api::CommitSnapshotRequest {
            snapshotter: "overlay".into(),
            name: format!("layer-{n}"),
            key: format!("work-{n}"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let daemon = c.prepare(prepare("container", "layer-2")).await.unwrap().into_inner().mounts;
    assert_eq!(daemon.len(), 1);
    let options = &daemon[0].options;
    let path_of = |key: &str| {
        options.iter().find_map(|o| o.strip_prefix(key)).unwrap_or_else(|| panic!("{options:?}"))
    };
    let lower: Vec<u64> = path_of("lowerdir=").split(':').map(id_in).collect();
    let id = id_in(path_of("upperdir="));
    assert!(path_of("upperdir=").starts_with(&format!("{root}/overlay/snapshots/")));

    // `policy plan` with the daemon's root; the snapshotter is the policy's name.
    let parents = lower.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let o = wasmsnap(&[
        "policy",
        "plan",
        "builtin:overlay",
        "--kind",
        "active",
        "--parents",
        &parents,
        "--id",
        &id.to_string(),
        "--root",
        &root,
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mounts = plan["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0]["type"], daemon[0].r#type.as_str());
    assert_eq!(mounts[0]["source"], daemon[0].source.as_str());
    let planned: Vec<&str> =
        mounts[0]["options"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
    assert_eq!(planned, *options, "policy plan and the daemon differ");
    // Modes read as in case files.
    assert_eq!(plan["layout"]["steps"][0]["mode"], "0755", "{plan}");

    // A case file with the daemon's root, expecting exactly what it returned.
    let dir = tempfile::tempdir().unwrap();
    let quoted: Vec<String> = options.iter().map(|o| format!("{o:?}")).collect();
    let case = format!(
        "[defaults]\nroot = {root:?}\n\n[[case]]\nname = \"as the daemon\"\nkind = \"active\"\n\
         parents = [{parents}]\nid = {id}\n\n[[case.expect.mounts]]\ntype = \"overlay\"\n\
         source = \"overlay\"\noptions = [{}]\n",
        quoted.join(", ")
    );
    let file = dir.path().join("daemon.toml");
    std::fs::write(&file, case).unwrap();
    let o = wasmsnap(&["policy", "test", "builtin:overlay", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stdout).ends_with("1 passed, 0 failed\n"));
    // Under another name the paths differ, so the same case fails.
    let o = Command::new(common::bin())
        .args(["policy", "test", "--snapshotter", "other", "builtin:overlay"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{root}/other/snapshots/{id}/fs")),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
