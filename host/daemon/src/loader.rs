//! From config to served snapshotters: read each policy's component
//! (built in or from a file), check its sha256 pin, probe the host facts on
//! its root and load it into the engine.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use wasmsnap_engine::{Engine, Policy};
pub use wasmsnap_engine::{read_policy, sha256_hex};

use crate::config::{Config, SnapshotterConfig};
use crate::snapshotter::Snapshotter;

/// Where compiled policies are kept under the root (see
/// `wasmsnap_engine::DiskCache`). A snapshotter name cannot start with `.`,
/// so this never meets a snapshotter's directory.
pub fn policy_cache_dir(root: &Path) -> PathBuf {
    root.join(".cache").join("policies")
}

/// Load the policy of snapshotter `name`, whose data lives under `root`.
pub fn load_policy(
    engine: &Engine,
    name: &str,
    cfg: &SnapshotterConfig,
    root: &Path,
) -> anyhow::Result<Policy> {
    let wasm = read_policy(&cfg.policy).with_context(|| format!("snapshotter {name:?}"))?;
    load_policy_bytes(engine, name, cfg, root, &wasm)
}

/// [`load_policy`] of component bytes already read.
pub fn load_policy_bytes(
    engine: &Engine,
    name: &str,
    cfg: &SnapshotterConfig,
    root: &Path,
    wasm: &[u8],
) -> anyhow::Result<Policy> {
    if let Some(pin) = &cfg.sha256 {
        let actual = sha256_hex(wasm);
        if !pin.eq_ignore_ascii_case(&actual) {
            bail!(
                "snapshotter {name:?}: policy {} has sha256 {actual}, but the config pins {pin}",
                cfg.policy
            );
        }
    }
    std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
    let facts = wasmsnap_engine::probe_facts(root);
    let config: Vec<(String, String)> =
        cfg.config.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    Policy::load(engine, &cfg.policy, wasm, &config, &facts, cfg.limits.sandbox())
        .map_err(|e| anyhow::anyhow!("snapshotter {name:?}: {}", one_line(&e.to_string())))
}

/// wasmtime prints some parse errors over several lines (byte arrays in
/// debug format); logs and `config check` want one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every configured snapshotter, opened under `<root>/<name>`.
pub fn open_snapshotters(engine: &Engine, config: &Config) -> anyhow::Result<Vec<Snapshotter>> {
    config
        .snapshotters
        .iter()
        .map(|(name, cfg)| {
            let root = config.root.join(name);
            let policy = load_policy(engine, name, cfg, &root)?;
            Snapshotter::open(name, &root, policy)
                .with_context(|| format!("open snapshotter {name:?} at {}", root.display()))
        })
        .collect()
}
