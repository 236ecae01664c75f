//! Races a client cannot time: a hook runs between a Prepare's directory
//! and its record's transaction.

use super::*;
use wasmsnap_engine::{Engine, Sandbox, builtin, probe_facts};

fn overlay(root: &Path) -> Snapshotter {
    let facts = probe_facts(root);
    let wasm = builtin("overlay").unwrap();
    let policy = Policy::load(
        &Engine::new().unwrap(),
        "builtin:overlay",
        wasm,
        &[],
        &facts,
        Sandbox::default(),
    )
    .unwrap();
    Snapshotter::open("overlay", root, policy).unwrap()
}

fn layer(s: &Snapshotter, name: &str, parent: &str) {
    let key = format!("extract {name}");
    s.create(Kind::Active, &key, parent, Labels::new()).unwrap();
    s.commit(name, &key, "", Labels::new()).unwrap();
}

/// The parent is removed and committed again under its name while a
/// Prepare on it builds its directory: the first attempt writes nothing
/// (its transaction rolls back, its directory goes), the retry builds on
/// the new parent, and the snapshot has both its record and its directory.
#[test]
fn a_parent_made_again_mid_prepare_is_retried_and_nothing_half_made_stays() {
    let dir = tempfile::tempdir().unwrap();
    let s = overlay(dir.path());
    layer(&s, "base", "");
    layer(&s, "p", "base");
    let old_p = s.stat("p").unwrap();
    *s.test_hook.lock().unwrap() = Some(Box::new(|s: &Snapshotter, key: &str| {
        assert_eq!(key, "k");
        s.remove("p").unwrap();
        layer(s, "p", "base");
    }));

    let mounts = s.create(Kind::Active, "k", "p", Labels::new()).unwrap();

    let new_p = s.metastore.read(|tx| tx.get("p")).unwrap();
    let k = s.metastore.read(|tx| tx.get("k")).unwrap();
    assert_ne!(new_p.id, s.metastore.read(|tx| tx.get("base")).unwrap().id);
    assert_eq!(k.parent.as_deref(), Some("p"));
    let chain = s.metastore.read(|tx| tx.parent_ids(&k)).unwrap();
    assert_eq!(chain[0], new_p.id, "built on the new p, not {old_p:?}");
    assert!(s.dirs.dir(k.id).is_dir(), "the record's directory exists");
    let options = mounts.iter().flat_map(|m| m.options.iter()).cloned().collect::<Vec<_>>();
    assert!(
        options.iter().any(|o| o.contains(&format!("/{}/fs", new_p.id))),
        "mounts name the new parent's fs: {options:?}"
    );
    // Only the retry's tree is left: every snapshot dir has a record.
    s.cleanup().unwrap();
    let ids: Vec<SnapshotId> = s.metastore.read(|tx| tx.ids()).unwrap().into_iter().collect();
    assert_eq!(ids.len(), 3, "base, the new p and k: {ids:?}");
}
