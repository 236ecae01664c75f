//! Build the test guests and the example policy for wasm32-wasip2 and name
//! each component's path in one `pub const`. Nothing built here is
//! committed.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Constant name -> cargo package.
const GUESTS: &[(&str, &str)] = &[
    ("EXAMPLE_EPHEMERAL", "wasmsnap-policy-example-ephemeral"),
    ("MISBEHAVE", "wasmsnap-test-policy-misbehave"),
    ("BAD_PLANS", "wasmsnap-test-policy-bad-plans"),
    ("HOSTILE", "wasmsnap-test-policy-hostile"),
    ("WRONG_VERSION", "wasmsnap-test-policy-wrong-version"),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest.parent().unwrap().parent().unwrap().to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    // A target dir of its own: the outer cargo holds the lock on ours.
    let target_dir = repo.join("target").join("policies");
    build(&repo, &target_dir);

    let wasm_dir = target_dir.join("wasm32-wasip2").join("policy");
    let mut code = String::new();
    for (name, package) in GUESTS {
        let path = wasm_dir.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(path.is_file(), "{} was not built", path.display());
        code.push_str(&format!(
            "/// The component of `{package}`.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    // The example built against the frozen contract 0.1.0: a workspace of
    // its own, so the SDK's feature `wit-0-1` reaches no other policy.
    let v0_1_target = repo.join("target").join("policies-v0_1");
    run(policy_build(&repo.join("tests").join("policies").join("example-v0_1"), &v0_1_target));
    let path = v0_1_target
        .join("wasm32-wasip2")
        .join("policy")
        .join("wasmsnap_test_policy_example_v0_1.wasm");
    assert!(path.is_file(), "{} was not built", path.display());
    code.push_str(&format!(
        "/// The example policy built for wasmsnap:policy@0.1.0 (tests/policies/example-v0_1).\npub const EXAMPLE_V0_1: &str = {:?};\n",
        path.display().to_string()
    ));
    std::fs::write(out.join("artifacts.rs"), code).unwrap();
    for dir in ["guest-sdk", "plugins/examples", "wit", "tests/policies"] {
        println!("cargo:rerun-if-changed={}", repo.join(dir).display());
    }
}

fn build(repo: &Path, target_dir: &Path) {
    let mut cmd = policy_build(repo, target_dir);
    for (_, package) in GUESTS {
        cmd.args(["-p", package]);
    }
    run(cmd);
}

/// `cargo build` of policies in the workspace at `dir`, for wasm32-wasip2.
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
    let status = cmd.status().expect("run cargo to build the test policies");
    assert!(
        status.success(),
        "building the test policies for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );
}
