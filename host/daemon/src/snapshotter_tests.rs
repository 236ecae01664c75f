//! Races a client cannot time (a hook runs between a Prepare's directory
//! and its record's transaction), and what a quick call on the reactor
//! hands on.

use super::*;
use wasmsnap_engine::{Engine, Sandbox, builtin, probe_facts};

fn overlay(root: &Path) -> Snapshotter {
    open(root, "overlay")
}

fn open(root: &Path, builtin_policy: &str) -> Snapshotter {
    let facts = probe_facts(root);
    let wasm = builtin(builtin_policy).unwrap();
    let policy = Policy::load(
        &Engine::new().unwrap(),
        &format!("builtin:{builtin_policy}"),
        wasm,
        &[],
        &facts,
        Sandbox::default(),
    )
    .unwrap();
    Snapshotter::open(builtin_policy, root, policy).unwrap()
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

/// What is on disk and in the metastore, to compare before and after.
fn state(s: &Snapshotter) -> (Vec<String>, Vec<SnapshotId>) {
    let mut names: Vec<String> = std::fs::read_dir(s.dirs.dir(0).parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut ids: Vec<SnapshotId> = s.metastore.read(|tx| tx.ids()).unwrap().into_iter().collect();
    ids.sort();
    (names, ids)
}

#[test]
fn a_quick_create_is_made_unless_it_copies_a_parent_which_it_hands_on_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = overlay(dir.path());
    layer(&s, "base", "");
    let made = s.create_at(Pace::Quick, Kind::Active, "k", "base", Labels::new()).unwrap();
    assert_eq!(made.unwrap()[0].r#type, "overlay");
    assert_eq!(s.stat("k").unwrap().parent.as_deref(), Some("base"));

    // native copies the parent: a copy takes as long as the parent is big.
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "native");
    layer(&s, "base", "");
    let before = state(&s);
    let made = s.create_at(Pace::Quick, Kind::Active, "k", "base", Labels::new()).unwrap();
    assert!(made.is_none(), "a copy is handed on");
    assert_eq!(state(&s), before, "nothing made, nothing left");
    assert!(matches!(s.stat("k"), Err(Error::NotFound(_))));
    s.create(Kind::Active, "k", "base", Labels::new()).unwrap();
}

#[test]
fn a_quick_commit_measures_a_small_upper_dir_and_hands_a_bigger_one_on_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = overlay(dir.path());
    for (key, files) in [("small", 3), ("big", QUICK_WALK_ENTRIES + 1)] {
        s.create(Kind::Active, key, "", Labels::new()).unwrap();
        let upper = s.content_dir(&s.metastore.read(|tx| tx.get(key)).unwrap()).unwrap();
        for n in 0..files {
            std::fs::write(upper.join(n.to_string()), b"x").unwrap();
        }
    }
    let done = s.commit_at(Pace::Quick, "small-layer", "small", "", Labels::new()).unwrap();
    assert_eq!(done, Some(()));
    assert_eq!(s.usage("small-layer").unwrap().inodes, 4, "the upper dir and its 3 files");

    let before = state(&s);
    let done = s.commit_at(Pace::Quick, "big-layer", "big", "", Labels::new()).unwrap();
    assert_eq!(done, None, "{} entries are handed on", QUICK_WALK_ENTRIES + 1);
    assert_eq!(state(&s), before);
    assert_eq!(s.stat("big").unwrap().kind, Kind::Active, "still active");
    s.commit("big-layer", "big", "", Labels::new()).unwrap();
    let inodes = i64::try_from(QUICK_WALK_ENTRIES).unwrap() + 2;
    assert_eq!(s.usage("big-layer").unwrap().inodes, inodes, "measured whole when patient");
}
