//! How loading and calling can fail, each told apart: a component for
//! another contract version, something that is not a policy, a declared
//! error, a panic (its message in the error), and an init that refuses.

mod common;

use common::*;
use wasmsnap_engine::{DeclaredError, PolicyError, builtin};
use wasmsnap_plan::Kind;

const MISBEHAVE: &str = "wasmsnap.test/misbehave";

#[test]
fn another_wit_version_is_refused_naming_both_versions() {
    let err = load("wrong.wasm", &test_policy(wasmsnap_test_artifacts::WRONG_VERSION), &[])
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        matches!(&err, PolicyError::UnsupportedVersion { found, .. } if found == "0.3.0"),
        "{text}"
    );
    assert_eq!(
        text,
        "policy wrong.wasm: built for wasmsnap:policy@0.3.0, but this host supports wasmsnap:policy@0.1.0, 0.2.0"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_a_load_error() {
    let err = load("junk.wasm", b"\0asm junk", &[]).err().expect("refused");
    assert!(matches!(err, PolicyError::Load { .. }), "{err}");
    assert!(
        err.to_string().starts_with("policy junk.wasm: cannot load: not a valid component"),
        "{err}"
    );
}

#[test]
fn a_component_without_the_policy_interface_is_a_load_error() {
    // The smallest component there is: it exports nothing.
    let empty = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    let err = load("empty.wasm", &empty, &[]).err().expect("refused");
    assert!(err.to_string().contains("exports no wasmsnap:policy/policy interface"), "{err}");
}

#[test]
fn a_declared_error_is_reported_as_declared() {
    let p = load("test:misbehave", &test_policy(wasmsnap_test_artifacts::MISBEHAVE), &[]).unwrap();
    let err = p.mounts(&labelled(Kind::Active, 1, MISBEHAVE, "declare-mounts")).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Declared { func: "mounts", error: DeclaredError::Failed(m), .. } if m.contains("declared failure")),
        "{err}"
    );
    assert!(!err.is_unavailable());
    assert_eq!(
        err.to_string(),
        "policy test:misbehave: mounts failed: misbehave: declared failure in mounts"
    );
}

#[test]
fn init_refusing_refuses_the_load() {
    let err = load(
        "test:misbehave",
        &test_policy(wasmsnap_test_artifacts::MISBEHAVE),
        &[("refuse", "no thanks")],
    )
    .err()
    .expect("refused");
    assert_eq!(
        err.to_string(),
        "policy test:misbehave: init failed: invalid config: refused on request: no thanks"
    );
}

#[test]
fn a_panic_is_a_trap_carrying_its_message_and_the_policy_recovers() {
    let p = load("test:misbehave", &test_policy(wasmsnap_test_artifacts::MISBEHAVE), &[]).unwrap();
    let err = p.layout(&labelled(Kind::Active, 1, MISBEHAVE, "trap-layout")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(&err, PolicyError::Trap { func: "layout", .. }), "{text}");
    assert!(err.is_unavailable());
    assert!(text.contains("unreachable"), "the trap reason: {text}");
    assert!(
        text.contains("misbehave: trap in layout of snapshot 2 as asked"),
        "the panic message: {text}"
    );
    // The trapped instance is gone; a fresh one answers the next call.
    p.layout(&snapshot(Kind::Active, 1)).unwrap();
    p.mounts(&snapshot(Kind::Active, 1)).unwrap();
}

#[test]
fn an_invalid_plan_from_a_builtin_style_policy_is_not_a_trap() {
    let p = load("test:misbehave", &test_policy(wasmsnap_test_artifacts::MISBEHAVE), &[]).unwrap();
    let err = p.mounts(&labelled(Kind::View, 1, MISBEHAVE, "invalid-mounts")).unwrap_err();
    assert!(matches!(&err, PolicyError::InvalidPlan { func: "mounts", .. }), "{err}");
    assert!(err.to_string().contains("[foreign-snapshot]"), "{err}");
}

#[test]
fn every_builtin_loads_and_answers() {
    for name in wasmsnap_engine::builtin_names() {
        let p = load(&format!("builtin:{name}"), builtin(name).unwrap(), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        for (kind, parents) in
            [(Kind::Active, 0), (Kind::Active, 2), (Kind::View, 1), (Kind::View, 3)]
        {
            let s = snapshot(kind, parents);
            p.layout(&s).unwrap_or_else(|e| panic!("{e}"));
            p.mounts(&s).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
