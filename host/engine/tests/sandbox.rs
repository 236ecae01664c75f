//! The sandbox against a hostile component: every escape attempt fails,
//! every runaway call is stopped and reported for what it was, and the
//! policy (and a healthy one beside it) goes on answering.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wasmsnap_engine::{DeclaredError, Policy, PolicyError, Sandbox, builtin};
use wasmsnap_plan::Kind;

const DO: &str = "containerd.io/snapshot/wasmsnap-test.do";

fn hostile() -> Policy {
    load("test:hostile", &test_policy(wasmsnap_test_artifacts::HOSTILE), &[]).expect("loads")
}

/// `mounts` of a snapshot labelled to do `act`, timed.
fn attempt(p: &Policy, act: &str) -> PolicyError {
    let started = Instant::now();
    let err = p.mounts(&labelled(Kind::Active, 1, DO, act)).expect_err(act);
    println!("{act}: {:?}: {err}", started.elapsed());
    // Whatever happened, the policy answers the next call.
    p.mounts(&snapshot(Kind::Active, 1)).unwrap_or_else(|e| panic!("after {act}: {e}"));
    err
}

#[test]
fn an_infinite_loop_times_out() {
    let p = hostile();
    let err = attempt(&p, "loop");
    assert!(
        matches!(&err, PolicyError::Timeout { func: "mounts", limit, .. } if *limit == Duration::from_secs(1)),
        "{err}"
    );
    assert!(err.is_unavailable());
    assert_eq!(err.to_string(), "policy test:hostile: mounts exceeded its time limit of 1s");
}

#[test]
fn a_loop_in_init_refuses_the_load_within_its_limit() {
    let sandbox = Sandbox { call_timeout: Duration::from_millis(100), ..Sandbox::default() };
    let wasm = test_policy(wasmsnap_test_artifacts::HOSTILE);
    let err =
        load_with("test:hostile", &wasm, &[("do", "loop"), ("in", "init")], &facts(), sandbox)
            .err()
            .unwrap();
    assert!(matches!(&err, PolicyError::Timeout { func: "init", .. }), "{err}");
}

#[test]
fn allocating_4_gib_hits_the_memory_limit() {
    let p = hostile();
    let err = attempt(&p, "alloc");
    match &err {
        PolicyError::MemoryLimit { func: "mounts", limit, asked, .. } => {
            assert_eq!(*limit, 64 << 20);
            assert!(*asked > *limit, "{err}");
        }
        other => panic!("not a memory limit: {other}"),
    }
    assert!(err.to_string().contains("exceeded its memory limit of 67108864 bytes"), "{err}");
}

#[test]
fn a_smaller_memory_limit_is_honoured() {
    let sandbox = Sandbox { memory_bytes: 8 << 20, ..Sandbox::default() };
    let wasm = test_policy(wasmsnap_test_artifacts::HOSTILE);
    let p = load_with("test:hostile", &wasm, &[], &facts(), sandbox).unwrap();
    let err = p.mounts(&labelled(Kind::Active, 1, DO, "alloc")).unwrap_err();
    assert!(matches!(&err, PolicyError::MemoryLimit { limit, .. } if *limit == 8 << 20), "{err}");
}

#[test]
fn a_plan_of_a_megabyte_is_refused() {
    let err = attempt(&hostile(), "huge-plan");
    assert!(
        matches!(&err, PolicyError::InvalidPlan { error, .. } if error.rule() == "too-many-mounts"),
        "{err}"
    );
}

#[test]
fn a_panic_message_reaches_the_error() {
    let err = attempt(&hostile(), "panic");
    assert!(matches!(&err, PolicyError::Trap { .. }), "{err}");
    assert!(err.guest_output().unwrap().contains("hostile policy panics on purpose"), "{err}");
    assert!(err.to_string().contains("hostile policy panics on purpose"), "{err}");
}

#[test]
fn runaway_recursion_is_a_trap() {
    let err = attempt(&hostile(), "recurse");
    // Rust keeps its stack in linear memory: running off its end is an
    // out-of-bounds access, a trap like any other.
    assert!(matches!(&err, PolicyError::Trap { .. }), "{err}");
}

#[test]
fn sleeping_is_refused_not_waited_for() {
    let err = attempt(&hostile(), "sleep");
    assert!(matches!(&err, PolicyError::Trap { .. }), "{err}");
    assert!(err.to_string().contains("a policy may not wait on a clock"), "{err}");
}

/// The act ends in a declared error saying `denied: ...`.
#[track_caller]
fn denied(act: &str) {
    match attempt(&hostile(), act) {
        PolicyError::Declared { error: DeclaredError::Failed(m), .. } => {
            assert!(m.starts_with("denied:"), "{act}: {m}")
        }
        other => panic!("{act}: {other}"),
    }
}

#[test]
fn files_sockets_and_the_environment_are_out_of_reach() {
    denied("open-file");
    denied("list-root");
    denied("open-socket");
    denied("read-env");
}

#[test]
fn a_chatty_policy_still_works_and_its_output_stays_out_of_the_next_error() {
    let p = hostile();
    let err = attempt(&p, "shout");
    assert!(matches!(&err, PolicyError::Declared { .. }), "{err}");
    // The next failing call reports only its own output.
    let err = p.mounts(&labelled(Kind::Active, 1, DO, "panic")).unwrap_err();
    let output = err.guest_output().unwrap();
    assert!(!output.contains("!!!!") && output.contains("panics on purpose"), "{output}");
}

#[test]
fn a_healthy_policy_beside_a_hostile_one_is_unaffected() {
    let healthy = load("builtin:overlay", builtin("overlay").unwrap(), &[]).unwrap();
    let bad = hostile();
    let expected = healthy.mounts(&snapshot(Kind::Active, 3)).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for act in ["loop", "panic", "alloc", "sleep"] {
                assert!(bad.mounts(&labelled(Kind::Active, 1, DO, act)).is_err());
            }
        });
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..200 {
                    assert_eq!(healthy.mounts(&snapshot(Kind::Active, 3)).unwrap(), expected);
                }
            });
        }
    });
}

#[test]
fn concurrent_calls_share_the_pool() {
    let p = load("builtin:overlay", builtin("overlay").unwrap(), &[]).unwrap();
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let p = &p;
            scope.spawn(move || {
                for i in 0..100 {
                    let s = snapshot(if i % 2 == 0 { Kind::Active } else { Kind::View }, t + i % 5);
                    let plans = p.mounts(&s).unwrap();
                    assert_eq!(plans.len(), 1);
                    p.layout(&s).unwrap();
                }
            });
        }
    });
}

#[test]
fn the_pooling_allocator_serves_and_limits_too() {
    let engine = wasmsnap_engine::Engine::pooling(16, 64 << 20).unwrap();
    let overlay = Policy::load(
        &engine,
        "builtin:overlay",
        builtin("overlay").unwrap(),
        &[],
        &facts(),
        Sandbox::default(),
    )
    .unwrap();
    let expected = load("builtin:overlay", builtin("overlay").unwrap(), &[])
        .unwrap()
        .mounts(&snapshot(Kind::Active, 3))
        .unwrap();
    assert_eq!(overlay.mounts(&snapshot(Kind::Active, 3)).unwrap(), expected);
    let wasm = test_policy(wasmsnap_test_artifacts::HOSTILE);
    let bad =
        Policy::load(&engine, "test:hostile", &wasm, &[], &facts(), Sandbox::default()).unwrap();
    let err = bad.mounts(&labelled(Kind::Active, 1, DO, "alloc")).unwrap_err();
    assert!(matches!(&err, PolicyError::MemoryLimit { .. }), "{err}");
    overlay.clear_idle();
    assert_eq!(overlay.idle_instances(), 0);
    assert_eq!(overlay.mounts(&snapshot(Kind::Active, 3)).unwrap(), expected);
    assert_eq!(overlay.idle_instances(), 1);
}
