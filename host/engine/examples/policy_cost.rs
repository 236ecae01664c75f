//! What one policy call costs: `mounts` of the built-in overlay policy on
//! a reused (pooled) instance and on a fresh one (instantiate + init +
//! call), with wasmtime's on-demand and pooling allocators, plus the host's
//! own validation and rendering; on 3 parents and on 100 (the benchmark's
//! chain: the plan grows with the chain). Prints numbers; asserts nothing.
//!
//! `cargo run -p wasmsnap-engine --release --example policy_cost`

use std::path::Path;
use std::time::{Duration, Instant};

use wasmsnap_engine::{Engine, Policy, Sandbox, builtin, builtin_names};
use wasmsnap_plan::{HostFacts, Kind, Limits, Snapshot, render_mounts, validate_mounts};

fn main() -> anyhow::Result<()> {
    let facts = HostFacts {
        overlay: true,
        userxattr: false,
        index_param: true,
        reflink: false,
        page_size: 4096,
    };
    let chain = |parents: u64| Snapshot {
        id: parents + 1,
        kind: Kind::Active,
        parent_ids: (1..=parents).rev().collect(),
        labels: vec![],
        id_map: None,
    };
    let (s, deep) = (chain(3), chain(100));
    let wasm = builtin("overlay").expect("overlay is built in");

    println!("component sizes:");
    for name in builtin_names() {
        println!("  builtin:{name:<10} {:>7} bytes", builtin(name).unwrap().len());
    }

    for (allocator, engine) in
        [("on-demand", Engine::new()?), ("pooling", Engine::pooling(64, 64 << 20)?)]
    {
        let started = Instant::now();
        let policy =
            Policy::load(&engine, "builtin:overlay", wasm, &[], &facts, Sandbox::default())?;
        println!(
            "\n{allocator} allocator: load (compile + instantiate + init) {:?}",
            started.elapsed()
        );

        let reused = per_call(20_000, || {
            policy.mounts(&s).unwrap();
        });
        println!("  mounts, reused instance:  {}", micros(reused));
        let layout = per_call(20_000, || {
            policy.layout(&s).unwrap();
        });
        println!("  layout, reused instance:  {}", micros(layout));
        let plan = per_call(20_000, || {
            policy.plan(&deep).unwrap();
        });
        println!("  layout + mounts + checks, 100 parents, reused instance: {}", micros(plan));
        let fresh = per_call(2_000, || {
            policy.clear_idle();
            policy.mounts(&s).unwrap();
        });
        println!(
            "  mounts, fresh instance:   {}  (instantiate + init + call + drop)",
            micros(fresh)
        );
    }

    let policy =
        Policy::load(&Engine::new()?, "builtin:overlay", wasm, &[], &facts, Sandbox::default())?;
    let limits = Limits::default();
    for s in [&s, &deep] {
        let plans = policy.mounts(s)?;
        let validate = per_call(200_000, || validate_mounts(s, &plans, &limits).unwrap());
        let render = per_call(200_000, || {
            std::hint::black_box(render_mounts(Path::new("/var/lib/wasmsnap"), &plans, None));
        });
        let parents = s.parent_ids.len();
        println!(
            "\nhost side, {parents} parents: validate {}, render {}",
            micros(validate),
            micros(render)
        );
    }
    Ok(())
}

/// Mean time of `f` over `n` runs, after a warm-up.
fn per_call(n: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..n / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed() / n
}

fn micros(d: Duration) -> String {
    format!("{:>8.2} us", d.as_secs_f64() * 1e6)
}
