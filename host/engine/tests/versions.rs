//! Contract versions side by side: the example policy built against the
//! frozen 0.1.0 WIT (tests/policies/example-v0_1) loads through the 0.1
//! bindings and answers exactly as the same source built for 0.2 does,
//! where 0.2 added nothing; 0.2 policies declare capabilities and get the
//! id map.

mod common;

use common::{engine, facts, load, snapshot, test_policy};
use wasmsnap_engine::{Policy, Sandbox, builtin};
use wasmsnap_plan::{Capabilities, IdMap, Kind, Snapshot, Step, idmap};

const EPHEMERAL: &str = "containerd.io/snapshot/wasmsnap.ephemeral";

fn v0_1() -> Policy {
    load("example-0.1", &test_policy(wasmsnap_test_artifacts::EXAMPLE_V0_1), &[]).expect("load 0.1")
}

fn v0_2() -> Policy {
    load("example-0.2", &test_policy(wasmsnap_test_artifacts::EXAMPLE_EPHEMERAL), &[])
        .expect("load 0.2")
}

/// The snapshot with CRI's id-map labels, parsed as the host does.
fn id_mapped(kind: Kind, parents: u64) -> Snapshot {
    let mut s = snapshot(kind, parents);
    s.labels = vec![
        (idmap::UID_LABEL.into(), "0:100000:65536".into()),
        (idmap::GID_LABEL.into(), "0:100000:65536".into()),
    ];
    s.id_map = idmap::from_labels(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
    s
}

#[test]
fn a_0_1_build_loads_through_its_own_bindings_and_declares_nothing() {
    let old = v0_1();
    assert_eq!(old.info().wit_version, "0.1.0");
    assert_eq!(old.capabilities(), Capabilities::default());
    let new = v0_2();
    assert_eq!(new.info().wit_version, "0.2.0");
    assert_ne!(old.info().sha256, new.info().sha256, "two different builds");
}

#[test]
fn the_0_1_build_answers_as_the_0_2_build_where_0_2_added_nothing() {
    let (old, new) = (v0_1(), v0_2());
    let mut shapes = Vec::new();
    for kind in [Kind::Active, Kind::View] {
        for parents in [0, 1, 2, 5] {
            shapes.push(snapshot(kind, parents));
            let mut eph = snapshot(kind, parents);
            eph.labels = vec![(EPHEMERAL.into(), "true".into())];
            shapes.push(eph);
        }
    }
    for s in &shapes {
        assert_eq!(old.layout(s).unwrap(), new.layout(s).unwrap(), "layout of {s:?}");
        assert_eq!(old.mounts(s).unwrap(), new.mounts(s).unwrap(), "mounts of {s:?}");
    }
    // A declared error comes through the 0.1 bindings too.
    let mut bad = snapshot(Kind::Active, 1);
    bad.labels = vec![(EPHEMERAL.into(), "maybe".into())];
    let err = old.mounts(&bad).unwrap_err().to_string();
    assert!(err.contains("must be \"true\" or \"false\""), "{err}");
}

#[test]
fn a_0_1_policy_never_sees_the_id_map_and_a_0_2_one_uses_it() {
    let s = id_mapped(Kind::Active, 1);
    // 0.1: as before, the owner of the parent's content, no map in mounts.
    let old = v0_1().layout(&s).unwrap();
    assert!(old.steps.contains(&Step::ChownLikeParent { name: "fs".into() }), "{old:?}");
    // 0.2 (the same source): the mapped root.
    let new = v0_2().layout(&s).unwrap();
    assert!(new.steps.contains(&Step::ChownToMappedRoot { name: "fs".into() }), "{new:?}");
    assert_eq!(s.id_map.as_ref().and_then(IdMap::root), Some((100000, 100000)));
}

#[test]
fn builtins_declare_containerds_capabilities() {
    let load = |name: &str| {
        Policy::load(engine(), name, builtin(name).unwrap(), &[], &facts(), Sandbox::default())
            .unwrap()
    };
    assert_eq!(load("overlay").capabilities().names(), ["rebase", "remap-ids"]);
    assert_eq!(load("bind").capabilities().names(), ["remap-ids"]);
    assert!(load("native").capabilities().names().is_empty());
    // Overlay's id-mapped mounts and bind's carry the map; native's do not.
    let s = id_mapped(Kind::Active, 1);
    for (name, mapped) in [("overlay", true), ("bind", true), ("native", false)] {
        let plans = load(name).mounts(&s).unwrap();
        let rendered = wasmsnap_plan::render_mounts("/r".as_ref(), &plans, s.id_map.as_ref());
        let has_map = rendered[0].options.iter().any(|o| o == "uidmap=0:100000:65536");
        assert_eq!(has_map, mapped, "{name}: {rendered:?}");
    }
}
