//! Build the built-in policies for wasm32-wasip2 and embed them in the
//! engine. The policies only tests load are built by the dev-only
//! `wasmsnap-test-artifacts` crate (`tests/artifacts`). Nothing built here
//! is committed.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in policies, embedded in the binary: name -> cargo package.
const BUILTIN: &[(&str, &str)] = &[
    ("overlay", "wasmsnap-policy-overlay"),
    ("native", "wasmsnap-policy-native"),
    ("bind", "wasmsnap-policy-bind"),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest.parent().unwrap().parent().unwrap().to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    // A target dir of its own: the outer cargo holds the lock on ours.
    let target_dir = repo.join("target").join("policies");
    build(&repo, &target_dir, BUILTIN.iter());

    let wasm_dir = target_dir.join("wasm32-wasip2").join("policy");
    let mut code = String::from(
        "/// Built-in policies, built from `plugins/` by build.rs: name -> component bytes.\npub const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, package) in BUILTIN {
        let dst = out.join(wasm_file(package));
        std::fs::copy(wasm_dir.join(wasm_file(package)), &dst).expect("copy built policy");
        // Named from OUT_DIR when the engine compiles, not by this run's
        // absolute path: a target dir moved elsewhere still builds.
        code.push_str(&format!(
            "    ({name:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), {:?}))),\n",
            format!("/{}", wasm_file(package))
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("builtin.rs"), code).unwrap();

    for dir in ["guest-sdk", "plugins", "wit"] {
        println!("cargo:rerun-if-changed={}", repo.join(dir).display());
    }
}

fn wasm_file(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

fn build<'a>(
    repo: &Path,
    target_dir: &Path,
    policies: impl Iterator<Item = &'a (&'a str, &'a str)>,
) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo)
        .args(["build", "--profile", "policy", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(target_dir);
    for (_, package) in policies {
        cmd.args(["-p", package]);
    }
    // The outer build's settings are for the host target, not for wasm.
    for (key, _) in env::vars() {
        let outer = key.starts_with("CARGO_") && key != "CARGO_HOME";
        if outer || key == "RUSTFLAGS" || key == "RUSTC_WRAPPER" || key == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("run cargo to build the policies");
    assert!(
        status.success(),
        "building the policies for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );
}
