//! Every operation and every error code, on a real redb file.

mod common;

use std::collections::BTreeMap;

use common::*;
use wasmsnap_metastore::{
    Error, Filter, Kind, MAX_KEY_BYTES, Reads, SnapshotId, UpdateInfo, Usage, parse_filters,
};

#[test]
fn create_allocates_ids_from_one_and_returns_parent_ids_nearest_first() {
    let (_dir, store) = open();
    let base = layer(&store, "base", None);
    assert_eq!(base.id, 1);
    let mid = layer(&store, "mid", Some("base"));
    let top = layer(&store, "top", Some("mid"));
    assert_eq!((mid.id, top.id), (2, 3));

    let (active, parent_ids) = store
        .write(|tx| {
            tx.create(
                "k8s.io/9/container",
                Kind::Active,
                Some("top"),
                labels(&[("a", "1"), ("gone", "")]),
            )
        })
        .unwrap();
    assert_eq!(active.id, 4);
    assert_eq!(parent_ids, [3, 2, 1]);
    assert_eq!(active.kind, Kind::Active);
    assert_eq!(active.parent.as_deref(), Some("top"));
    assert_eq!(active.labels, labels(&[("a", "1")]), "empty label values are not stored");
    assert_eq!(active.created, active.updated);
    assert_eq!(active.usage, None);

    let stored = store.read(|tx| tx.get("k8s.io/9/container")).unwrap();
    assert_eq!(stored, active);
    let (chain_ids, chain) =
        store.read(|tx| Ok((tx.parent_ids(&stored)?, tx.parent_chain(&stored)?))).unwrap();
    assert_eq!(chain_ids, [3, 2, 1]);
    assert_eq!(chain.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["top", "mid", "base"]);

    let (view, ids) = create(&store, "view", Kind::View, Some("base")).unwrap();
    assert_eq!((view.kind, ids), (Kind::View, vec![1]));
    let (root, ids) = create(&store, "root", Kind::Active, Some("")).unwrap();
    assert_eq!((root.parent, ids), (None, vec![]), "an empty parent is no parent");
}

#[test]
fn create_errors_follow_containerd() {
    let (_dir, store) = open();
    layer(&store, "committed", None);
    create(&store, "active", Kind::Active, None).unwrap();
    create(&store, "view", Kind::View, None).unwrap();

    assert_err(create(&store, "", Kind::Active, None), "InvalidArgument", &["key", "empty"]);
    assert_err(
        create(&store, "c", Kind::Committed, None),
        "InvalidArgument",
        &["\"c\"", "committed"],
    );
    assert_err(
        create(&store, "c", Kind::Active, Some("missing")),
        "NotFound",
        &["\"missing\"", "\"c\""],
    );
    assert_err(
        create(&store, "c", Kind::Active, Some("active")),
        "FailedPrecondition",
        &["\"active\"", "not committed"],
    );
    assert_err(
        create(&store, "c", Kind::View, Some("view")),
        "FailedPrecondition",
        &["\"view\"", "not committed"],
    );
    assert_err(create(&store, "active", Kind::Active, None), "AlreadyExists", &["\"active\""]);
    assert_err(
        create(&store, "committed", Kind::View, Some("committed")),
        "AlreadyExists",
        &["\"committed\""],
    );
    // containerd checks the parent before the key.
    assert_err(
        create(&store, "active", Kind::Active, Some("missing")),
        "NotFound",
        &["\"missing\""],
    );

    let big = labels(&[("containerd.io/snapshot/big", &"x".repeat(4096))]);
    assert_err(
        store.write(|tx| tx.create("c", Kind::Active, None, big)),
        "InvalidArgument",
        &["containerd.io/snapshot/big", "4096"],
    );
    assert_err(store.read(|tx| tx.get("c")), "NotFound", &["\"c\""]);
}

/// `check_create` in a read transaction answers what `create` would, the
/// same error for every bad request, and the parent's record for a good one.
#[test]
fn check_create_answers_what_create_would() {
    let (_dir, store) = open();
    layer(&store, "committed", None);
    create(&store, "active", Kind::Active, None).unwrap();
    let big = labels(&[("containerd.io/snapshot/big", &"x".repeat(4096))]);
    type Request<'a> = (&'a str, Kind, Option<&'a str>, BTreeMap<String, String>);
    let requests: &[Request] = &[
        ("", Kind::Active, None, labels(&[])),
        ("c", Kind::Committed, None, labels(&[])),
        ("c", Kind::Active, Some("missing"), labels(&[])),
        ("c", Kind::Active, Some("active"), labels(&[])),
        ("active", Kind::Active, None, labels(&[])),
        ("active", Kind::Active, Some("missing"), labels(&[])),
        ("c", Kind::Active, None, big),
    ];
    for (key, kind, parent, l) in requests {
        let checked = store.read(|tx| tx.check_create(key, *kind, *parent, l)).unwrap_err();
        let created =
            store.write(|tx| tx.create(key, *kind, *parent, l.clone()).map(|_| ())).unwrap_err();
        assert_eq!(checked, created, "{key:?} on {parent:?}");
    }

    let parent = store.read(|tx| tx.check_create("c", Kind::View, Some("committed"), &labels(&[])));
    assert_eq!(parent.unwrap().map(|p| p.name), Some("committed".to_string()));
    let none = store.read(|tx| tx.check_create("c", Kind::Active, Some(""), &labels(&[])));
    assert_eq!(none.unwrap(), None, "an empty parent is no parent");
    assert_err(store.read(|tx| tx.get("c")), "NotFound", &["\"c\""]);
}

#[test]
fn commit_keeps_the_id_and_the_children_index() {
    let (_dir, store) = open();
    layer(&store, "base", None);
    let (active, _) = store
        .write(|tx| {
            let created = tx.create(
                "extract-1 sha256:a",
                Kind::Active,
                Some("base"),
                labels(&[("old", "1")]),
            )?;
            tx.set_content("extract-1 sha256:a", Some("fs".into()))?;
            Ok::<_, Error>(created)
        })
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let usage = Usage { size: 123_456, inodes: 78 };
    let committed = store
        .write(|tx| {
            tx.commit(
                "extract-1 sha256:a",
                "sha256:a",
                labels(&[("new", "2"), ("dropped", "")]),
                usage,
            )
        })
        .unwrap();
    assert_eq!(committed.id, active.id);
    assert_eq!(committed.name, "sha256:a");
    assert_eq!(committed.kind, Kind::Committed);
    assert_eq!(committed.parent.as_deref(), Some("base"));
    assert_eq!(committed.labels, labels(&[("new", "2")]), "labels are replaced, not inherited");
    assert_eq!(committed.usage, Some(usage));
    assert_eq!(committed.content.as_deref(), Some("fs"));
    assert_eq!(committed.created, committed.updated);
    assert!(committed.created > active.created);

    store
        .read(|tx| {
            assert_err(tx.get("extract-1 sha256:a"), "NotFound", &["extract-1 sha256:a"]);
            assert_eq!(tx.get("sha256:a")?, committed);
            assert!(tx.has_children("base")?);
            assert!(!tx.has_children("sha256:a")?);
            assert_eq!(tx.key_of(committed.id)?.as_deref(), Some("sha256:a"));
            assert_eq!(tx.parent_ids(&committed)?, [1]);
            Ok(())
        })
        .unwrap();
    // The renamed child still holds its parent; a grandchild finds the chain.
    assert_err(
        store.write(|tx| tx.remove("base")),
        "FailedPrecondition",
        &["remove", "\"sha256:a\""],
    );
    let (_, ids) = create(&store, "grandchild", Kind::View, Some("sha256:a")).unwrap();
    assert_eq!(ids, [committed.id, 1]);
}

#[test]
fn commit_errors_follow_containerd() {
    let (_dir, store) = open();
    layer(&store, "committed", None);
    create(&store, "active", Kind::Active, None).unwrap();
    create(&store, "view", Kind::View, None).unwrap();

    assert_err(commit(&store, "", "x"), "InvalidArgument", &["key", "empty"]);
    assert_err(commit(&store, "active", ""), "InvalidArgument", &["name", "empty"]);
    assert_err(commit(&store, "active", "committed"), "AlreadyExists", &["\"committed\""]);
    assert_err(commit(&store, "active", "active"), "AlreadyExists", &["\"active\""]);
    // containerd checks the target name before the source key.
    assert_err(commit(&store, "missing", "committed"), "AlreadyExists", &["\"committed\""]);
    assert_err(commit(&store, "missing", "x"), "NotFound", &["\"missing\""]);
    assert_err(commit(&store, "view", "x"), "FailedPrecondition", &["\"view\"", "not active"]);
    assert_err(
        commit(&store, "committed", "x"),
        "FailedPrecondition",
        &["\"committed\"", "not active"],
    );
    let big = labels(&[(&"k".repeat(4000), &"v".repeat(97))]);
    assert_err(
        store.write(|tx| tx.commit("active", "x", big, Usage::default())),
        "InvalidArgument",
        &["kkkk", "4097 bytes"],
    );
    // Nothing changed.
    assert_eq!(store.read(|tx| tx.get("active")).unwrap().kind, Kind::Active);
    assert_err(store.read(|tx| tx.get("x")), "NotFound", &[]);
}

#[test]
fn remove_refuses_a_parent_and_frees_the_index() {
    let (_dir, store) = open();
    layer(&store, "base", None);
    create(&store, "child", Kind::Active, Some("base")).unwrap();

    assert_err(
        store.write(|tx| tx.remove("base")),
        "FailedPrecondition",
        &["cannot remove snapshot with child", "\"child\""],
    );
    assert_err(store.write(|tx| tx.remove("missing")), "NotFound", &["\"missing\""]);
    assert_err(store.write(|tx| tx.remove("")), "InvalidArgument", &["empty"]);

    let removed = store.write(|tx| tx.remove("child")).unwrap();
    assert_eq!((removed.name.as_str(), removed.id), ("child", 2));
    assert!(!store.read(|tx| tx.has_children("base")).unwrap());
    assert_eq!(store.read(|tx| tx.ids()).unwrap(), [1].into_iter().collect());
    let base = store.write(|tx| tx.remove("base")).unwrap();
    assert_eq!(base.kind, Kind::Committed);
    assert!(store.read(|tx| tx.ids()).unwrap().is_empty());
    assert_eq!(store.read(|tx| tx.key_of(1)).unwrap(), None);
}

fn info(name: &str, pairs: &[(&str, &str)]) -> UpdateInfo {
    UpdateInfo { name: name.into(), labels: labels(pairs), ..UpdateInfo::default() }
}

fn paths(paths: &[&str]) -> Vec<String> {
    paths.iter().map(|s| s.to_string()).collect()
}

#[test]
fn update_applies_containerd_field_masks() {
    let (_dir, store) = open();
    let (before, _) = store
        .write(|tx| tx.create("s", Kind::Active, None, labels(&[("a", "1"), ("b", "2")])))
        .unwrap();
    let update = |info: UpdateInfo, mask: &[&str]| store.write(|tx| tx.update(info, &paths(mask)));

    // No mask: labels replaced; kind and parent ignored.
    let mut ignored = info("s", &[("c", "3")]);
    ignored.kind = Some(Kind::Committed);
    ignored.parent = Some("elsewhere".into());
    let rec = update(ignored, &[]).unwrap();
    assert_eq!(rec.labels, labels(&[("c", "3")]));
    assert_eq!((rec.kind, rec.parent.as_deref()), (Kind::Active, None));
    assert_eq!(rec.created, before.created);
    assert!(rec.updated > before.updated);

    // labels.<key>: set one, leave the rest.
    let rec = update(info("s", &[("a", "10"), ("ignored", "x")]), &["labels.a"]).unwrap();
    assert_eq!(rec.labels, labels(&[("a", "10"), ("c", "3")]));
    // labels.<key> absent from the info, or empty: deleted.
    let rec = update(info("s", &[]), &["labels.a"]).unwrap();
    assert_eq!(rec.labels, labels(&[("c", "3")]));
    let rec = update(info("s", &[("c", "")]), &["labels.c"]).unwrap();
    assert!(rec.labels.is_empty());
    // Keys with dots and slashes.
    let rec =
        update(info("s", &[("containerd.io/gc.root", "t")]), &["labels.containerd.io/gc.root"])
            .unwrap();
    assert_eq!(rec.labels, labels(&[("containerd.io/gc.root", "t")]));
    // labels: replace all.
    let rec = update(info("s", &[("x", "1"), ("y", "")]), &["labels"]).unwrap();
    assert_eq!(rec.labels, labels(&[("x", "1")]));
    assert_eq!(store.read(|tx| tx.get("s")).unwrap(), rec);

    for bad in ["name", "kind", "parent", "created", "labelsx", "unknown"] {
        assert_err(
            update(info("s", &[]), &["labels.x", bad]),
            "InvalidArgument",
            &[&format!("\"{bad}\""), "\"s\""],
        );
    }
    assert_err(update(info("missing", &[]), &[]), "NotFound", &["\"missing\""]);
    assert_err(update(info("", &[]), &[]), "InvalidArgument", &["empty"]);
    let big = info("s", &[("l", &"v".repeat(4096))]);
    assert_err(update(big, &["labels.l"]), "InvalidArgument", &["\"l\"", "4096"]);
    assert_eq!(store.read(|tx| tx.get("s")).unwrap(), rec, "failed updates change nothing");
}

#[test]
fn list_walks_matching_records_in_key_order() {
    let (_dir, store) = open();
    layer(&store, "sha256:p", None);
    store
        .write(|tx| {
            tx.create(
                "k8s.io/3/extract-1 sha256:x",
                Kind::Active,
                Some("sha256:p"),
                labels(&[("containerd.io/snapshot.ref", "sha256:x")]),
            )
        })
        .unwrap();
    create(&store, "view", Kind::View, Some("sha256:p")).unwrap();

    let names = |filters: &[&str]| {
        let filter = parse_filters(&paths(filters)).unwrap();
        store
            .read(|tx| {
                let mut names = Vec::new();
                tx.list(&filter, |rec| {
                    names.push(rec.name);
                    Ok(())
                })?;
                Ok(names)
            })
            .unwrap()
    };
    assert_eq!(names(&[]), ["k8s.io/3/extract-1 sha256:x", "sha256:p", "view"]);
    assert_eq!(
        names(&[r#"labels."containerd.io/snapshot.ref"==sha256:x,parent=="sha256:p""#]),
        ["k8s.io/3/extract-1 sha256:x"]
    );
    assert_eq!(names(&["kind==view", "kind==committed"]), ["sha256:p", "view"]);
    assert_eq!(names(&["parent!=\"\""]), ["k8s.io/3/extract-1 sha256:x", "view"]);

    // In a write transaction, List sees that transaction's own changes; a
    // callback error stops the walk and aborts.
    let err = store
        .write(|tx| {
            tx.create("new", Kind::Active, None, BTreeMap::new())?;
            let mut seen = 0;
            tx.list(&Filter::all(), |_| {
                seen += 1;
                if seen == 4 { Err(Error::Storage("stop".into())) } else { Ok(()) }
            })
        })
        .unwrap_err();
    assert_eq!(err, Error::Storage("stop".into()));
    assert_err(store.read(|tx| tx.get("new")), "NotFound", &[]);
}

#[test]
fn keys_are_opaque_and_may_be_long() {
    let (_dir, store) = open();
    // Room for the suffixes below within the limit.
    let huge = "k".repeat(MAX_KEY_BYTES - 16);
    let odd =
        ["a/b/../c", "with space", "nul\0inside", "..", "/", "é:ü", "k8s.io/1/extract-1 sha256:aa"];
    layer(&store, &huge, None);
    for key in odd {
        let (rec, ids) = create(&store, key, Kind::View, Some(&huge)).unwrap();
        assert_eq!((rec.name.as_str(), ids), (key, vec![1]));
    }
    let huge_active = format!("{huge}-active");
    create(&store, &huge_active, Kind::Active, Some(&huge)).unwrap();
    let huge_name = format!("{huge}-committed");
    let committed = commit(&store, &huge_active, &huge_name).unwrap();
    assert_eq!(store.read(|tx| tx.get(&huge_name)).unwrap(), committed);
    let err = store.write(|tx| tx.remove(&huge)).unwrap_err();
    assert!(err.to_string().len() < 1000, "messages quote long keys briefly");
    let mut count = 0;
    store
        .read(|tx| {
            tx.list(&Filter::all(), |_| {
                count += 1;
                Ok(())
            })
        })
        .unwrap();
    assert_eq!(count, 1 + odd.len() + 1);
    for key in odd {
        store.write(|tx| tx.remove(key)).unwrap();
    }
    store.write(|tx| tx.remove(&huge_name)).unwrap();
    store.write(|tx| tx.remove(&huge)).unwrap();
}

#[test]
fn keys_over_the_limit_are_invalid_everywhere() {
    let (_dir, store) = open();
    layer(&store, "base", None);
    let over = "k".repeat(1 << 20);
    let invalid = |r: Result<_, Error>| matches!(r, Err(Error::InvalidArgument(m)) if m.contains("1048576 bytes") && m.len() < 1000);
    assert!(invalid(create(&store, &over, Kind::Active, None).map(drop)));
    assert!(invalid(store.read(|tx| tx.get(&over)).map(drop)));
    assert!(invalid(store.write(|tx| tx.remove(&over)).map(drop)));
    create(&store, "a", Kind::Active, Some("base")).unwrap();
    assert!(invalid(commit(&store, "a", &over).map(drop)));
}

#[test]
fn thousands_of_labels_round_trip() {
    let (_dir, store) = open();
    let many: BTreeMap<String, String> =
        (0..5000).map(|i| (format!("containerd.io/snapshot/l{i}"), format!("value {i}"))).collect();
    let (rec, _) = store.write(|tx| tx.create("s", Kind::Active, None, many.clone())).unwrap();
    assert_eq!(rec.labels, many);
    assert_eq!(store.read(|tx| tx.get("s")).unwrap().labels, many);
}

#[test]
fn set_content_is_stored_and_checked() {
    let (_dir, store) = open();
    create(&store, "s", Kind::Active, None).unwrap();
    store.write(|tx| tx.set_content("s", Some("fs".into()))).unwrap();
    assert_eq!(store.read(|tx| tx.get("s")).unwrap().content.as_deref(), Some("fs"));
    store.write(|tx| tx.set_content("s", None)).unwrap();
    assert_eq!(store.read(|tx| tx.get("s")).unwrap().content, None);
    assert_err(store.write(|tx| tx.set_content("missing", None)), "NotFound", &["\"missing\""]);
}

#[test]
fn get_of_an_empty_key_is_invalid_and_of_a_missing_one_not_found() {
    let (_dir, store) = open();
    assert_err(store.read(|tx| tx.get("nope")), "NotFound", &["\"nope\""]);
    assert_eq!(store.read(|tx| tx.find("nope")).unwrap(), None);
    assert_err(store.read(|tx| tx.has_children("nope")), "NotFound", &["\"nope\""]);
    assert_err(store.read(|tx| tx.get("")), "InvalidArgument", &["empty"]);
    assert_err(store.read(|tx| tx.has_children("")), "InvalidArgument", &["empty"]);
}

/// Chains read by read transactions are kept in memory (`chain_cache`): a
/// chain read after layers are added, removed and made again under the
/// same keys, or after a rebase, is still the one in the tables.
#[test]
fn parent_chains_stay_right_as_layers_come_and_go() {
    let (_dir, store) = open();
    let chain_of = |key: &str| store.read(|tx| tx.parent_ids(&tx.get(key)?)).unwrap();
    let nearest_first = |ids: &[SnapshotId]| ids.iter().rev().copied().collect::<Vec<_>>();
    let mut ids = Vec::new(); // the chain so far, nearest last
    for i in 0..20_u32 {
        let name = format!("layer-{i}");
        let parent = i.checked_sub(1).map(|p| format!("layer-{p}"));
        let rec = layer(&store, &name, parent.as_deref());
        assert_eq!(chain_of(&name), nearest_first(&ids), "{name}");
        ids.push(rec.id);
    }
    // The top five removed and made again: new ids under the same keys.
    for i in (15..20).rev() {
        store.write(|tx| tx.remove(&format!("layer-{i}"))).unwrap();
        ids.pop();
    }
    for i in 15..20 {
        let name = format!("layer-{i}");
        let rec = layer(&store, &name, Some(&format!("layer-{}", i - 1)));
        assert_eq!(chain_of(&name), nearest_first(&ids), "{name} made again");
        ids.push(rec.id);
    }
    // An active made without a parent, committed onto the top (a rebase).
    let (loose, _) = create(&store, "loose", Kind::Active, None).unwrap();
    assert_eq!(chain_of("loose"), Vec::<SnapshotId>::new());
    store
        .write(|tx| {
            tx.rebase("loose", "layer-19")?;
            tx.commit("loose", "rebased", BTreeMap::new(), Usage { size: 0, inodes: 0 })
        })
        .unwrap();
    assert_eq!(chain_of("rebased"), nearest_first(&ids));
    ids.push(loose.id);
    create(&store, "view", Kind::View, Some("rebased")).unwrap();
    assert_eq!(chain_of("view"), nearest_first(&ids));
}
