//! One broken snapshotter does not take the daemon down: a policy whose
//! `init` refuses, and a metastore file of garbage, each leave only their
//! own snapshotter unavailable (every call answers Unavailable naming the
//! policy or the file, and why), while the one beside them serves. The
//! failed start leaves neither a snapshotter directory nor a compile-cache
//! entry behind. A SIGHUP with the config fixed and the file mended brings
//! both back.

use std::path::{Path, PathBuf};

use crate::common::{Daemon, api, strip_ansi};
use tonic::Code;

type Client = api::snapshots_client::SnapshotsClient<tonic::transport::Channel>;

fn misbehave_wasm() -> PathBuf {
    PathBuf::from(wasmsnap_test_artifacts::MISBEHAVE)
}

fn config(refuse: bool) -> String {
    let refuse = if refuse { "config = { refuse = \"no thanks\" }\n" } else { "" };
    format!(
        "[snapshotters.good]\npolicy = \"builtin:overlay\"\n\n\
         [snapshotters.refusing]\npolicy = {:?}\n{refuse}\n\
         [snapshotters.corrupt]\npolicy = \"builtin:bind\"\n",
        misbehave_wasm().display().to_string()
    )
}

async fn prepare(c: &mut Client, snapshotter: &str, key: &str) -> Result<(), tonic::Status> {
    let req = api::PrepareSnapshotRequest {
        snapshotter: snapshotter.into(),
        key: key.into(),
        ..Default::default()
    };
    c.prepare(req).await.map(|_| ())
}

async fn stat(c: &mut Client, snapshotter: &str, key: &str) -> Result<(), tonic::Status> {
    let req = api::StatSnapshotRequest { snapshotter: snapshotter.into(), key: key.into() };
    c.stat(req).await.map(|_| ())
}

/// Unavailable, for Prepare and Stat alike; the message.
async fn unavailable(c: &mut Client, snapshotter: &str) -> String {
    let err = prepare(c, snapshotter, "k").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let again = stat(c, snapshotter, "k").await.unwrap_err();
    assert_eq!((again.code(), again.message()), (Code::Unavailable, err.message()));
    err.message().to_string()
}

/// The compile-cache entries under the root, by file name.
fn cache_entries(root: &Path) -> Vec<String> {
    match std::fs::read_dir(root.join(".cache/policies")) {
        Ok(dir) => dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_policy_and_a_corrupt_metastore_leave_only_their_snapshotters_unavailable() {
    let mut d = Daemon::unstarted();
    let file = d.dir.path().join("wasmsnap.toml");
    std::fs::write(&file, config(true)).unwrap();
    // A metastore of garbage bytes waits under the root for `corrupt`.
    let redb = d.root.join("corrupt").join("metadata.redb");
    std::fs::create_dir_all(redb.parent().unwrap()).unwrap();
    std::fs::write(&redb, b"this is not a redb file, just garbage ".repeat(200)).unwrap();
    d.spawn(&["--config", file.to_str().unwrap()]);
    let mut c = d.client().await;

    // The healthy one serves.
    prepare(&mut c, "good", "a").await.unwrap();
    stat(&mut c, "good", "a").await.unwrap();

    let refused = unavailable(&mut c, "refusing").await;
    let wasm = misbehave_wasm().display().to_string();
    assert!(refused.starts_with("snapshotter \"refusing\" is unavailable: "), "{refused}");
    assert!(refused.contains(&format!("policy {wasm}")), "{refused}");
    assert!(refused.contains("refused on request: no thanks"), "{refused}");

    let corrupt = unavailable(&mut c, "corrupt").await;
    assert!(corrupt.starts_with("snapshotter \"corrupt\" is unavailable: "), "{corrupt}");
    assert!(corrupt.contains(&format!("cannot open {}", redb.display())), "{corrupt}");

    // Said at error level at the start, one line each.
    let logs = strip_ansi(&d.logs());
    for name in ["refusing", "corrupt"] {
        assert!(
            logs.lines().any(|l| l.contains("ERROR")
                && l.contains(&format!("snapshotter={name}"))
                && l.contains("snapshotter not served")),
            "{name}:\n{logs}"
        );
    }
    assert!(logs.contains("unavailable=[\"corrupt\", \"refusing\"]"), "{logs}");

    // The failed start left nothing: no directory, no compiled component
    // (the healthy policies' entries are there).
    assert!(!d.root.join("refusing").exists(), "{:?}", d.root.join("refusing"));
    let sha = wasmsnap_engine::sha256_hex(&std::fs::read(misbehave_wasm()).unwrap());
    let entries = cache_entries(&d.root);
    assert!(!entries.iter().any(|e| e.starts_with(&sha)), "{entries:?}");
    let overlay = wasmsnap_engine::sha256_hex(wasmsnap_engine::builtin("overlay").unwrap());
    assert!(entries.iter().any(|e| e.starts_with(&overlay)), "{entries:?}");
    // The garbage is left as it was, for the operator to look at.
    assert!(std::fs::read(&redb).unwrap().starts_with(b"this is not a redb file"));

    // A reload while one is still broken changes nothing and says why.
    std::fs::write(&file, config(false)).unwrap();
    let outcome = tokio::task::block_in_place(|| d.hangup());
    assert!(outcome.contains("reload failed"), "{outcome}");
    assert!(outcome.contains(&redb.display().to_string()), "{outcome}");
    unavailable(&mut c, "refusing").await;
    unavailable(&mut c, "corrupt").await;
    stat(&mut c, "good", "a").await.unwrap();

    // Config fixed, file mended (moved aside): both come back.
    std::fs::rename(&redb, redb.with_extension("broken")).unwrap();
    let outcome = tokio::task::block_in_place(|| d.hangup());
    assert!(outcome.contains(" reloaded "), "{outcome}");
    assert!(outcome.contains("\"corrupt\"") && outcome.contains("\"refusing\""), "{outcome}");
    for name in ["refusing", "corrupt", "good"] {
        prepare(&mut c, name, "b").await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        stat(&mut c, name, "b").await.unwrap();
    }
    assert!(d.root.join("refusing/metadata.redb").exists());
    assert_eq!(d.stop().code(), Some(0));
}
