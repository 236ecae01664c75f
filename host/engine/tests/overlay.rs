//! The real overlay policy, every plan shape: parents 0, 1, 2 and 128, each
//! kind the host asks about, rendered and compared with the exact mounts
//! containerd's overlayfs snapshotter would return.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::*;
use wasmsnap_engine::{Policy, Sandbox, builtin};
use wasmsnap_plan::{HostFacts, Kind, Layout, Mount, Step, render_mounts};

const ROOT: &str = "/var/lib/wasmsnap";

fn overlay_policy(facts: HostFacts, pairs: &[(&str, &str)]) -> Policy {
    load_with(
        "builtin:overlay",
        builtin("overlay").expect("overlay is built in"),
        pairs,
        &facts,
        Sandbox::default(),
    )
    .expect("the overlay policy loads")
}

/// The policy on a host where no extra overlay option applies.
fn plain() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| overlay_policy(HostFacts { index_param: false, ..facts() }, &[]))
}

fn mounts(policy: &Policy, kind: Kind, parents: u64) -> Vec<Mount> {
    let plans = policy.mounts(&snapshot(kind, parents)).expect("mounts");
    render_mounts(Path::new(ROOT), &plans, None)
}

fn fs(id: u64) -> String {
    format!("{ROOT}/snapshots/{id}/fs")
}

fn mount(t: &str, source: &str, options: Vec<String>) -> Mount {
    Mount { r#type: t.into(), source: source.into(), target: String::new(), options }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `lowerdir=` of parents `top, ..., 1`.
fn lowerdir(top: u64) -> String {
    format!("lowerdir={}", (1..=top).rev().map(fs).collect::<Vec<_>>().join(":"))
}

fn active_overlay(id: u64, extra: &[&str]) -> Mount {
    let mut options = strings(extra);
    options.push(format!("workdir={ROOT}/snapshots/{id}/work"));
    options.push(format!("upperdir={}", fs(id)));
    options.push(lowerdir(id - 1));
    mount("overlay", "overlay", options)
}

#[test]
fn no_parents_binds_own_fs_rw_or_ro() {
    let p = plain();
    assert_eq!(mounts(p, Kind::Active, 0), vec![mount("bind", &fs(1), strings(&["rw", "rbind"]))]);
    assert_eq!(mounts(p, Kind::View, 0), vec![mount("bind", &fs(1), strings(&["ro", "rbind"]))]);
}

#[test]
fn one_parent() {
    let p = plain();
    assert_eq!(mounts(p, Kind::Active, 1), vec![active_overlay(2, &[])]);
    assert_eq!(mounts(p, Kind::View, 1), vec![mount("bind", &fs(1), strings(&["ro", "rbind"]))]);
}

#[test]
fn two_parents() {
    let p = plain();
    assert_eq!(mounts(p, Kind::Active, 2), vec![active_overlay(3, &[])]);
    assert_eq!(
        mounts(p, Kind::View, 2),
        vec![mount("overlay", "overlay", vec![format!("lowerdir={}:{}", fs(2), fs(1))])]
    );
}

#[test]
fn one_hundred_twenty_eight_parents() {
    let p = plain();
    assert_eq!(mounts(p, Kind::Active, 128), vec![active_overlay(129, &[])]);
    assert_eq!(mounts(p, Kind::View, 128), vec![mount("overlay", "overlay", vec![lowerdir(128)])]);
}

#[test]
fn the_issue_example_renders_as_promised() {
    let s = wasmsnap_plan::Snapshot {
        id: 9,
        kind: Kind::Active,
        parent_ids: vec![3, 2, 1],
        labels: vec![],
        id_map: None,
    };
    let rendered = render_mounts(Path::new(ROOT), &plain().mounts(&s).unwrap(), None);
    assert_eq!(
        rendered[0].options,
        strings(&[
            "workdir=/var/lib/wasmsnap/snapshots/9/work",
            "upperdir=/var/lib/wasmsnap/snapshots/9/fs",
            "lowerdir=/var/lib/wasmsnap/snapshots/3/fs:/var/lib/wasmsnap/snapshots/2/fs:/var/lib/wasmsnap/snapshots/1/fs",
        ])
    );
}

#[test]
fn host_facts_add_index_off_and_userxattr_and_config_appends_mount_options() {
    let p = overlay_policy(
        HostFacts { index_param: true, userxattr: true, ..facts() },
        &[("mount_options", "volatile,metacopy=on")],
    );
    let head = ["index=off", "userxattr", "volatile", "metacopy=on"];
    assert_eq!(mounts(&p, Kind::Active, 2), vec![active_overlay(3, &head)]);
    let mut view = strings(&head);
    view.push(lowerdir(2));
    assert_eq!(mounts(&p, Kind::View, 2), vec![mount("overlay", "overlay", view)]);
    // Binds never carry overlay options.
    assert_eq!(mounts(&p, Kind::View, 1), vec![mount("bind", &fs(1), strings(&["ro", "rbind"]))]);
    assert_eq!(mounts(&p, Kind::Active, 0), vec![mount("bind", &fs(1), strings(&["rw", "rbind"]))]);
}

#[test]
fn an_operator_index_option_replaces_index_off() {
    let p = overlay_policy(facts(), &[("mount_options", "index=on")]);
    assert_eq!(mounts(&p, Kind::Active, 1), vec![active_overlay(2, &["index=on"])]);
}

#[test]
fn layouts_are_fs_and_work_for_actives_fs_for_views() {
    let p = plain();
    let fs_step = Step::Mkdir { name: "fs".into(), mode: 0o755 };
    let work_step = Step::Mkdir { name: "work".into(), mode: 0o711 };
    let chown = Step::ChownLikeParent { name: "fs".into() };
    for parents in [0, 1, 2, 128] {
        assert_eq!(
            p.layout(&snapshot(Kind::Active, parents)).unwrap(),
            Layout {
                steps: vec![fs_step.clone(), work_step.clone(), chown.clone()],
                content: Some("fs".into())
            }
        );
        assert_eq!(
            p.layout(&snapshot(Kind::View, parents)).unwrap(),
            Layout { steps: vec![fs_step.clone(), chown.clone()], content: Some("fs".into()) }
        );
    }
}

#[test]
fn a_bad_config_key_refuses_the_load_as_declared() {
    let err = load("builtin:overlay", builtin("overlay").unwrap(), &[("mount_option", "x")])
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            wasmsnap_engine::PolicyError::Declared {
                func: "init",
                error: wasmsnap_engine::DeclaredError::InvalidConfig(_),
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("builtin:overlay") && text.contains("mount_option"), "{text}");
}

#[test]
fn info_describes_the_component() {
    let info = plain().info();
    assert_eq!(info.label, "builtin:overlay");
    assert_eq!(info.wit_version, "0.2.0");
    assert_eq!(info.size, builtin("overlay").unwrap().len());
    assert_eq!(info.sha256.len(), 64);
}
