//! Build every policy component the engine needs for wasm32-wasip2: the
//! built-in policies (embedded in the binary) and the small policies the
//! tests load. Nothing built here is committed.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in policies, embedded in the binary: name -> cargo package.
const BUILTIN: &[(&str, &str)] = &[
    ("overlay", "wasmsnap-policy-overlay"),
    ("native", "wasmsnap-policy-native"),
    ("bind", "wasmsnap-policy-bind"),
];

/// Policies built for tests and examples (not embedded): name -> package.
const EXTRA: &[(&str, &str)] = &[
    ("example-ephemeral", "wasmsnap-policy-example-ephemeral"),
    ("test-misbehave", "wasmsnap-test-policy-misbehave"),
    ("test-bad-plans", "wasmsnap-test-policy-bad-plans"),
    ("test-hostile", "wasmsnap-test-policy-hostile"),
    ("test-wrong-version", "wasmsnap-test-policy-wrong-version"),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest.parent().unwrap().parent().unwrap().to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    // A target dir of its own: the outer cargo holds the lock on ours.
    let target_dir = repo.join("target").join("policies");
    build(&repo, &target_dir, BUILTIN.iter().chain(EXTRA));
    let wasm_dir = target_dir.join("wasm32-wasip2").join("policy");

    // The example built against the frozen contract 0.1.0: a workspace of
    // its own (the SDK's `wit-0-1` feature must not reach the others).
    let v0_1 = repo.join("tests").join("policies").join("example-v0_1");
    let v0_1_target = repo.join("target").join("policies-v0_1");
    build_manifest(&v0_1, &v0_1_target);
    let v0_1_wasm = wasm_file(V0_1_EXAMPLE);
    std::fs::copy(v0_1_target.join("wasm32-wasip2").join("policy").join(&v0_1_wasm), wasm_dir.join(&v0_1_wasm))
        .expect("copy the 0.1 example");

    let mut code = String::from(
        "/// Built-in policies, built from `plugins/` by build.rs: name -> component bytes.\npub const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, package) in BUILTIN {
        let dst = out.join(wasm_file(package));
        std::fs::copy(wasm_dir.join(wasm_file(package)), &dst).expect("copy built policy");
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            dst.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("builtin.rs"), code).unwrap();
    // Tests and examples find their components here.
    println!("cargo:rustc-env=WASMSNAP_POLICY_DIR={}", wasm_dir.display());

    for dir in ["guest-sdk", "plugins", "wit", "tests/policies"] {
        println!("cargo:rerun-if-changed={}", repo.join(dir).display());
    }
}

/// The example policy built for contract 0.1.0 (tests/policies/example-v0_1).
const V0_1_EXAMPLE: &str = "wasmsnap-test-policy-example-v0-1";

fn wasm_file(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

fn build<'a>(
    repo: &Path,
    target_dir: &Path,
    policies: impl Iterator<Item = &'a (&'a str, &'a str)>,
) {
    let mut cmd = policy_build(repo, target_dir);
    for (_, package) in policies {
        cmd.args(["-p", package]);
    }
    run(cmd);
}

/// Build the package of its own workspace at `dir`.
fn build_manifest(dir: &Path, target_dir: &Path) {
    run(policy_build(dir, target_dir));
}

/// `cargo build` of policies in `dir`, for wasm32-wasip2.
fn policy_build(dir: &Path, target_dir: &Path) -> Command {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--profile", "policy", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(target_dir);
    // The outer build's settings are for the host target, not for wasm.
    for (key, _) in env::vars() {
        let outer = key.starts_with("CARGO_") && key != "CARGO_HOME";
        if outer || key == "RUSTFLAGS" || key == "RUSTC_WRAPPER" || key == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run(mut cmd: Command) {
    let status = cmd.status().expect("run cargo to build the policies");
    assert!(
        status.success(),
        "building the policies for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );
}
