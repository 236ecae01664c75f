//! The sandbox against a hostile component: every escape attempt fails,
//! every runaway call is stopped and reported for what it was, and the
//! policy (and a healthy one beside it) goes on answering.

mod common;

use std::sync::Arc;
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

/// A plan bigger than HOSTCALL_FUEL is not copied out of the guest at all:
/// the call traps while lifting, before validation would refuse it. (With
/// wasmtime's default fuel, 128 MiB, the 8 MiB option was lifted and then
/// refused as option-too-long.)
#[test]
fn a_plan_over_the_hostcall_fuel_is_not_lifted() {
    let err = attempt(&hostile(), "huge-string");
    assert!(matches!(&err, PolicyError::Trap { func: "mounts", .. }), "{err}");
    assert!(err.to_string().contains("hostcall"), "{err}");
    assert!(err.is_unavailable());
}

/// A declared error of 3 MiB with terminal escapes and a forged log line
/// reaches the host escaped and cut to 1 KiB.
#[test]
fn a_declared_error_is_escaped_and_capped() {
    let err = attempt(&hostile(), "declare-huge");
    let PolicyError::Declared { error: DeclaredError::Failed(m), .. } = &err else {
        panic!("not a declared error: {err}")
    };
    assert!(m.starts_with("\\u{1b}[2J\\u{1b}[31mhostile\\nlevel=ERROR"), "{m}");
    let total: usize =
        m.rsplit_once("(truncated, ").unwrap().1.trim_end_matches(" bytes)").parse().unwrap();
    assert!(total > 3 << 20, "{m}");
    assert!(m.len() < 1100, "{} bytes", m.len());
    assert!(!err.to_string().chars().any(|c| c.is_control()), "{err}");
}

/// A panic message (the guest's stderr) with escapes reaches the error escaped.
#[test]
fn guest_output_is_escaped() {
    let err = attempt(&hostile(), "panic-escape");
    let output = err.guest_output().unwrap();
    assert!(output.contains("\\u{1b}[2J\\u{1b}[31mhostile | level=ERROR"), "{output}");
    assert!(!err.to_string().chars().any(|c| c.is_control()), "{err}");
}

/// N threads calling at once make at most `max_calls` instances: a policy
/// that grows to its memory limit in every call holds at most
/// `max_calls x memory_bytes`, not N times it. Seen from outside: 8 calls
/// that each spin to a 200 ms deadline take 4 rounds with 2 turns (without
/// turns they all spin at once and end together after ~200 ms).
#[test]
fn concurrent_calls_wait_for_a_turn() {
    let sandbox =
        Sandbox { max_calls: 2, call_timeout: Duration::from_millis(200), ..Sandbox::default() };
    let wasm = test_policy(wasmsnap_test_artifacts::HOSTILE);
    let p = load_with("test:hostile", &wasm, &[], &facts(), sandbox).unwrap();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let err = p.mounts(&labelled(Kind::Active, 1, DO, "loop")).unwrap_err();
                assert!(matches!(&err, PolicyError::Timeout { .. }), "{err}");
            });
        }
    });
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(790), "8 calls of 200 ms in 2 turns took {took:?}");
    p.mounts(&snapshot(Kind::Active, 1)).unwrap();
    // Instances kept for reuse are bounded by the turns too.
    assert!(p.idle_instances() <= 2, "{} idle", p.idle_instances());
}

/// Layout then mounts, quickly, as the daemon's reactor asks them.
fn plan_quick(p: &Policy, s: &wasmsnap_plan::Snapshot) -> Result<bool, PolicyError> {
    Ok(p.layout_quick(s)?.is_some() && p.mounts_quick(s)?.is_some())
}

#[test]
fn a_quick_call_gives_up_on_a_slow_policy_within_its_deadline_and_it_is_never_asked_quickly_again()
{
    let p = hostile();
    assert!(plan_quick(&p, &snapshot(Kind::Active, 1)).unwrap(), "an answer in µs");
    let started = Instant::now();
    let answered = plan_quick(&p, &labelled(Kind::Active, 1, DO, "loop")).unwrap();
    let took = started.elapsed();
    assert!(!answered, "a loop is no answer");
    // The quick deadline is 10 to 20 ms; the patient one is 1 s.
    assert!(took < Duration::from_millis(500), "gave up after {took:?}");
    // Quickly never again, even where it would answer; patiently it does.
    assert!(!plan_quick(&p, &snapshot(Kind::Active, 1)).unwrap());
    assert!(p.plan(&snapshot(Kind::Active, 1)).is_ok());
    // Its own errors stay errors: a quick call is no way around them.
    let fresh = hostile();
    let err = fresh.layout_quick(&labelled(Kind::Active, 1, DO, "panic")).unwrap_err();
    assert!(matches!(&err, PolicyError::Trap { func: "layout", .. }), "{err}");
}

#[test]
fn a_quick_call_neither_starts_an_instance_nor_waits() {
    let p = load("builtin:overlay", builtin("overlay").unwrap(), &[]).unwrap();
    let s = snapshot(Kind::Active, 3);
    p.clear_idle();
    assert_eq!(p.mounts_quick(&s).unwrap(), None, "no idle instance");
    assert_eq!(p.idle_instances(), 0, "a quick call starts none");
    let patient = p.mounts(&s).unwrap();
    assert_eq!(p.idle_instances(), 1, "a patient call starts one and keeps it");
    assert_eq!(p.mounts_quick(&s).unwrap(), Some(patient));
}

/// As on the daemon's reactor: inside a tokio runtime, where wasmtime-wasi's
/// sync bindings cannot `block_on` (writing to stderr does).
#[tokio::test(flavor = "current_thread")]
async fn a_quick_call_inside_a_runtime_that_writes_to_stderr_is_handed_on_not_a_crash() {
    let p = Arc::new(hostile());
    let shout = labelled(Kind::Active, 1, DO, "shout");
    assert_eq!(p.layout_quick(&shout).unwrap(), None, "handed on");
    // Never quickly again; patiently (off the runtime) it runs to its end:
    // 1 MiB written, then its declared answer.
    assert!(!plan_quick(&p, &snapshot(Kind::Active, 1)).unwrap());
    let patient = {
        let p = p.clone();
        tokio::task::spawn_blocking(move || p.layout(&shout)).await.unwrap()
    };
    let err = patient.unwrap_err();
    assert!(matches!(&err, PolicyError::Declared { func: "layout", .. }), "{err}");
    assert!(err.to_string().contains("shouted"), "{err}");
}
