//! Shared by the engine's integration tests: one engine per test binary,
//! the test policies `wasmsnap-test-artifacts` built, snapshots by shape.

#![allow(dead_code)]

use std::sync::OnceLock;

use wasmsnap_engine::{Engine, Policy, PolicyError, Sandbox};
use wasmsnap_plan::{HostFacts, Kind, Snapshot};

pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().expect("create the engine"))
}

/// The bytes of a component `wasmsnap-test-artifacts` built (one of its
/// path constants).
pub fn test_policy(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Facts of a host with overlay and the index parameter, no userxattr.
pub fn facts() -> HostFacts {
    HostFacts {
        overlay: true,
        userxattr: false,
        index_param: true,
        reflink: false,
        page_size: 4096,
    }
}

pub fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn load(label: &str, wasm: &[u8], pairs: &[(&str, &str)]) -> Result<Policy, PolicyError> {
    load_with(label, wasm, pairs, &facts(), Sandbox::default())
}

pub fn load_with(
    label: &str,
    wasm: &[u8],
    pairs: &[(&str, &str)],
    facts: &HostFacts,
    sandbox: Sandbox,
) -> Result<Policy, PolicyError> {
    Policy::load(engine(), label, wasm, &config(pairs), facts, sandbox)
}

/// Snapshot `parents + 1` on parents `parents, ..., 1` (nearest first).
pub fn snapshot(kind: Kind, parents: u64) -> Snapshot {
    Snapshot {
        id: parents + 1,
        kind,
        parent_ids: (1..=parents).rev().collect(),
        labels: vec![],
        id_map: None,
    }
}

pub fn labelled(kind: Kind, parents: u64, key: &str, value: &str) -> Snapshot {
    Snapshot { labels: vec![(key.to_string(), value.to_string())], ..snapshot(kind, parents) }
}
