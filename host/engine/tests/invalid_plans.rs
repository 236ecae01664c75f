//! Every category of bad plan, returned by a real component (the
//! `bad-plans` test policy), is refused with an error that names the policy,
//! the function and the broken rule.

mod common;

use std::sync::OnceLock;

use common::*;
use wasmsnap_engine::{Policy, PolicyError};
use wasmsnap_plan::Kind;

const CASE: &str = "containerd.io/snapshot/wasmsnap-test.case";

fn bad_plans() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        load("test:bad-plans", &test_policy(wasmsnap_test_artifacts::BAD_PLANS), &[])
            .expect("loads")
    })
}

/// The `case` of snapshot `kind` on `parents` is refused with `rule`.
#[track_caller]
fn refused(case: &str, kind: Kind, parents: u64, rule: &str) {
    let s = labelled(kind, parents, CASE, case);
    let (func, result) = if case.starts_with("layout-") {
        ("layout", bad_plans().layout(&s).map(drop))
    } else {
        ("mounts", bad_plans().mounts(&s).map(drop))
    };
    let err = result.expect_err(case);
    let text = err.to_string();
    match &err {
        PolicyError::InvalidPlan { func: f, error, .. } => {
            assert_eq!(*f, func, "{text}");
            assert_eq!(error.rule(), rule, "case {case}: {text}");
        }
        other => panic!("case {case}: not an invalid plan: {other}"),
    }
    assert!(
        text.starts_with(&format!("policy test:bad-plans: {func} returned an invalid plan:")),
        "{text}"
    );
    assert!(text.contains(&format!("[{rule}]")), "{text}");
}

#[test]
fn without_a_case_the_plans_are_good() {
    bad_plans().layout(&snapshot(Kind::Active, 2)).unwrap();
    bad_plans().mounts(&snapshot(Kind::Active, 2)).unwrap();
    bad_plans().mounts(&snapshot(Kind::View, 0)).unwrap();
}

#[test]
fn names_that_are_not_one_plain_component() {
    refused("dotdot", Kind::View, 2, "name-dot");
    refused("slash", Kind::View, 2, "name-slash");
    refused("nul", Kind::View, 2, "name-nul");
    refused("charset", Kind::View, 2, "name-charset");
    refused("layout-dotdot", Kind::Active, 1, "name-dot");
    refused("layout-slash", Kind::Active, 1, "name-slash");
    refused("layout-nul", Kind::Active, 1, "name-nul");
}

#[test]
fn a_snapshot_that_is_not_a_parent() {
    refused("foreign-snapshot", Kind::View, 2, "foreign-snapshot");
}

#[test]
fn paths_smuggled_in_free_options() {
    refused("lowerdir-option", Kind::Active, 2, "option-path-key");
    refused("upperdir-option", Kind::Active, 2, "option-path-key");
    refused("workdir-option", Kind::Active, 2, "option-path-key");
    refused("comma-option", Kind::Active, 2, "option-comma");
    refused("path-option", Kind::Active, 2, "option-path-value");
    refused("reserved-option", Kind::View, 0, "option-reserved");
}

#[test]
fn other_mounts_that_name_a_path() {
    refused("other-bind-absolute", Kind::Active, 1, "other-type");
    refused("other-source-path", Kind::Active, 1, "other-source-path");
}

/// containerd mounts a plan as root in the host's namespaces (unpack,
/// diff): an `other` mount is a tmpfs with allowlisted options, nothing else.
#[test]
fn other_mounts_that_expose_the_host() {
    refused("other-proc", Kind::View, 1, "other-type");
    refused("other-sysfs", Kind::View, 1, "other-type");
    refused("other-suid", Kind::Active, 1, "other-option");
}

/// `["ro","rw"]` passed for a view before, and mounted writable (the last
/// flag wins): `rw` is the host's to render.
#[test]
fn a_view_tmpfs_cannot_end_writable() {
    refused("other-ro-rw", Kind::View, 1, "option-reserved");
}

/// An unknown type is echoed in the refusal: escaped and capped, so a
/// policy cannot write 100 KB or terminal escapes into a status or log.
#[test]
fn an_echoed_type_is_escaped_and_capped() {
    let s = labelled(Kind::Active, 1, CASE, "other-type-echo");
    let text = bad_plans().mounts(&s).unwrap_err().to_string();
    assert!(text.len() < 1400, "{} bytes", text.len());
    assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
    assert!(text.contains("\\u{1b}[2J\\nlevel=ERROR forged yyy"), "{text}");
    assert!(text.contains("(truncated, 100024 bytes)"), "{text}");
}

#[test]
fn writable_mounts_of_parents_or_views() {
    refused("writable-parent", Kind::Active, 2, "writable-parent-dir");
    refused("writable-view", Kind::View, 2, "view-writable");
}

#[test]
fn overlay_shapes() {
    refused("no-lower", Kind::Active, 2, "overlay-no-lower");
    refused("duplicate-lower", Kind::View, 2, "duplicate-lower");
    refused("upper-without-work", Kind::Active, 2, "upper-without-work");
    // The kernel's "at least 2 lowerdir are needed while upperdir nonexistent".
    refused("single-lower", Kind::View, 2, "overlay-single-lower");
    refused("extraction-with-parents", Kind::Active, 2, "extraction-plan");
}

#[test]
fn a_mount_of_an_own_directory_the_layout_does_not_make() {
    let s = labelled(Kind::Active, 1, CASE, "unmade-dir");
    // Each alone is valid: only the two together show the missing directory.
    bad_plans().layout(&s).unwrap();
    bad_plans().mounts(&s).unwrap();
    let err = bad_plans().plan(&s).unwrap_err();
    let text = err.to_string();
    match &err {
        PolicyError::InvalidPlan { func, error, .. } => {
            assert_eq!((*func, error.rule()), ("mounts", "own-dir-not-created"), "{text}");
        }
        other => panic!("not an invalid plan: {other}"),
    }
    assert!(text.contains("mounts directory \"data\" of snapshot 2 itself"), "{text}");
}

#[test]
fn sizes() {
    refused("no-mounts", Kind::Active, 0, "no-mounts");
    refused("too-many-mounts", Kind::Active, 0, "too-many-mounts");
    refused("too-many-lowers", Kind::View, 2, "too-many-lowers");
    refused("layout-too-many-steps", Kind::Active, 0, "too-many-steps");
}

#[test]
fn layout_rules() {
    refused("layout-mode", Kind::Active, 1, "mkdir-mode");
    refused("layout-content", Kind::Active, 1, "content-not-created");
    refused("layout-copy-orphan", Kind::Active, 0, "copy-parent-without-parent");
    refused("layout-chown-first", Kind::Active, 1, "chown-before-create");
}

#[test]
fn the_case_can_come_from_config() {
    let p = load(
        "test:bad-plans",
        &test_policy(wasmsnap_test_artifacts::BAD_PLANS),
        &[("case", "dotdot")],
    )
    .unwrap();
    let err = p.mounts(&snapshot(Kind::View, 1)).unwrap_err();
    assert!(err.to_string().contains("[name-dot]"), "{err}");
    // After a refused plan the policy keeps answering.
    p.layout(&snapshot(Kind::View, 1)).unwrap();
}

#[test]
fn id_maps_are_the_hosts() {
    refused("idmap-option", Kind::Active, 2, "option-idmap");
    refused("layout-mapped-root", Kind::Active, 1, "chown-without-id-map");
}
