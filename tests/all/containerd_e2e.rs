//! Real containerd end to end. A private containerd (its own root, state,
//! sockets and config; nothing of the machine's containerd is used) gets one
//! `[proxy_plugins]` snapshotter per built-in wasmsnap policy, all on one
//! running `wasmsnap serve`. For each, and first for containerd's own
//! overlayfs snapshotter (the baseline for the timings, and a check of the
//! test itself), it imports and unpacks a three-layer image built here,
//! inspects the snapshots, runs containers, removes the image and waits for
//! containerd's garbage collector to empty the snapshotter through wasmsnap's
//! List, Remove and Cleanup. Needs root, containerd, runc and busybox-static.

use crate::common;
use crate::e2e;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Daemon, api};
use e2e::containerd::Containerd;
use e2e::oci::TestImage;
use e2e::scenario::{self, Stage, Target, Timings};

const IMAGE: &str = "docker.io/wasmsnap/e2e:latest";

/// Every snapshotter runs the whole scenario this many times
/// (`WASMSNAP_E2E_ROUNDS=N` for steadier timings).
fn rounds() -> usize {
    match std::env::var("WASMSNAP_E2E_ROUNDS") {
        Ok(v) => v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| {
            panic!("WASMSNAP_E2E_ROUNDS: expected a positive number, got {v:?}")
        }),
        Err(_) => 3,
    }
}

/// containerd's name for the wasmsnap snapshotter serving `policy`. Not the
/// policy's bare name: a proxy plugin may not reuse the name of a snapshotter
/// compiled into containerd, and `native` is one (containerd 1.6 panics at
/// startup on the duplicate registration).
fn proxy_name(policy: &str) -> String {
    format!("wasmsnap-{policy}")
}

#[test]
fn containerd_imports_runs_and_collects_through_wasmsnap() {
    e2e::tools::require();
    let policies = wasmsnap_engine::builtin_names();
    let work = e2e::WorkDir::new("wasmsnap-e2e-");

    let config = work.path().join("wasmsnap.toml");
    let served: String = policies
        .iter()
        .map(|p| format!("[snapshotters.{:?}]\npolicy = \"builtin:{p}\"\n\n", proxy_name(p)))
        .collect();
    std::fs::write(&config, served).expect("write wasmsnap config");
    let wasmsnap = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let _unmount_wasmsnap = e2e::UnmountOnDrop(wasmsnap.dir.path().to_path_buf());
    let _wasmsnap_logs = e2e::LogsOnFailure(vec![("wasmsnap".into(), wasmsnap.log.clone())]);

    let proxies: Vec<_> =
        policies.iter().map(|p| (proxy_name(p), wasmsnap.socket.clone())).collect();
    let containerd = Containerd::start(&work.path().join("containerd"), &proxies);
    let _containerd_logs = e2e::LogsOnFailure(vec![("containerd".into(), containerd.log.clone())]);
    assert_proxies_loaded(&containerd, &proxies);

    let image = e2e::oci::build(work.path(), IMAGE);
    // containerd's own overlayfs first: the baseline for the timings, and a
    // check of the test itself.
    let mut targets = vec![(
        "containerd overlayfs (built in)".to_string(),
        None,
        Target {
            snapshotter: "overlayfs".into(),
            namespace: "wasmsnap-e2e-containerd-overlayfs".into(),
            snapshots_dir: containerd.builtin_snapshots_dir("overlayfs"),
        },
    )];
    for policy in &policies {
        let name = proxy_name(policy);
        let target = Target {
            snapshotter: name.clone(),
            namespace: format!("wasmsnap-e2e-{name}"),
            snapshots_dir: wasmsnap.snapshots_dir(&name),
        };
        targets.push((format!("wasmsnap {policy}"), Some(name), target));
    }

    // Several rounds, the targets taking turns, so that warm-up and drift do
    // not favour one; each round also re-imports what the last one collected.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut timings: Vec<Vec<Timings>> = vec![Vec::new(); targets.len()];
    let rounds = rounds();
    for _ in 0..rounds {
        for ((_, served, target), times) in targets.iter().zip(&mut timings) {
            let t = scenario::exercise(&containerd, target, &image, |stage| {
                if let Some(name) = served {
                    rt.block_on(check_backend(&wasmsnap, name, &image, stage));
                }
            });
            times.push(t);
        }
    }

    let labels: Vec<&str> = targets.iter().map(|(label, _, _)| label.as_str()).collect();
    print_timings(&labels, &timings, rounds);
}

/// `ctr plugins ls` lists every proxy snapshotter as loaded.
fn assert_proxies_loaded(containerd: &Containerd, proxies: &[(String, std::path::PathBuf)]) {
    let out = e2e::command::ok(
        containerd.ctr(e2e::containerd::CONTROL_NAMESPACE).args(["plugins", "ls"]),
        Duration::from_secs(30),
    )
    .stdout;
    for (name, _) in proxies {
        let loaded = out.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3
                && f[0] == "io.containerd.snapshotter.v1"
                && f[1] == name
                && f.last() == Some(&"ok")
        });
        assert!(loaded, "containerd did not load proxy snapshotter {name}:\n{out}");
    }
}

/// What wasmsnap itself holds, asked over its socket (not through containerd).
async fn check_backend(wasmsnap: &Daemon, name: &str, image: &TestImage, stage: Stage) {
    let mut client = wasmsnap.client().await;
    let mut stream = client
        .list(api::ListSnapshotsRequest { snapshotter: name.into(), filters: vec![] })
        .await
        .expect("List")
        .into_inner();
    let mut infos = Vec::new();
    while let Some(batch) = stream.message().await.expect("List stream") {
        infos.extend(batch.info);
    }
    match stage {
        Stage::Unpacked => {
            // containerd's metadata layer names backend snapshots
            // `<namespace>/<seq>/<name>`: the layers end in their chain ids.
            let by_chain: BTreeMap<&str, &api::Info> =
                infos.iter().map(|i| (i.name.rsplit('/').next().unwrap_or_default(), i)).collect();
            assert_eq!(
                infos.len(),
                image.chain_ids.len(),
                "[{name}] wasmsnap should hold exactly the layers: {infos:#?}"
            );
            for (i, chain_id) in image.chain_ids.iter().enumerate() {
                let Some(info) = by_chain.get(chain_id.as_str()) else {
                    panic!("[{name}] wasmsnap lacks layer {chain_id}: {infos:#?}")
                };
                assert_eq!(
                    info.kind,
                    api::Kind::Committed as i32,
                    "[{name}] layer {chain_id} is not committed: {info:?}"
                );
                let expected_parent = if i == 0 {
                    String::new()
                } else {
                    by_chain[image.chain_ids[i - 1].as_str()].name.clone()
                };
                assert_eq!(info.parent, expected_parent, "[{name}] parent of layer {}", i + 1);
            }
        }
        Stage::Collected => {
            assert!(
                infos.is_empty(),
                "[{name}] garbage collection left snapshots in wasmsnap: {infos:#?}"
            );
        }
    }
}

/// Median and range of each step, per snapshotter.
fn print_timings(labels: &[&str], timings: &[Vec<Timings>], rounds: usize) {
    let cell = |mut v: Vec<Duration>| {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!("{:.0} ms ({:.0}-{:.0})", ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]))
    };
    // The daemon is built with the test's profile, unless WASMSNAP_TEST_BIN names another.
    let build = match std::env::var("WASMSNAP_TEST_BIN") {
        Ok(bin) => bin,
        Err(_) if cfg!(debug_assertions) => "debug build".into(),
        Err(_) => "release build".into(),
    };
    println!(
        "\ncontainerd end to end: median (min-max) of {rounds} rounds; 3-layer image; wasmsnap: {build}"
    );
    println!(
        "{:<34} {:>24} {:>24} {:>24}",
        "snapshotter", "import + unpack", "ctr run --rm", "image rm + GC"
    );
    for (label, t) in labels.iter().zip(timings) {
        println!(
            "{:<34} {:>24} {:>24} {:>24}",
            label,
            cell(t.iter().map(|x| x.import).collect()),
            cell(t.iter().map(|x| x.run).collect()),
            cell(t.iter().map(|x| x.gc).collect())
        );
    }
}
