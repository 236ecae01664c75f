//! A policy built against `wasmsnap:policy@0.3.0`: the contract's WIT
//! copied with another version (`wit/policy.wit`), bound with wit-bindgen
//! directly (the SDK speaks 0.2). A host of 0.1 and 0.2 must refuse it at load,
//! naming both versions. Otherwise it is a plain bind policy.

wit_bindgen::generate!({
    path: "wit",
    world: "snapshot-policy",
});

use exports::wasmsnap::policy::policy::Guest;
use wasmsnap::policy::types::{
    BindMount, DirRef, HostFacts, Kind, Mount, PolicyError, Snapshot, SnapshotLayout,
};

struct WrongVersion;

impl Guest for WrongVersion {
    fn init(_config: Vec<(String, String)>, _facts: HostFacts) -> Result<(), PolicyError> {
        Ok(())
    }

    fn layout(_snapshot: Snapshot) -> Result<SnapshotLayout, PolicyError> {
        Err(PolicyError::Unsupported("a 0.3 policy answers only a 0.3 host".into()))
    }

    fn mounts(s: Snapshot) -> Result<Vec<Mount>, PolicyError> {
        let source = DirRef { snapshot: s.id, name: "fs".into() };
        Ok(vec![Mount::Bind(BindMount { source, readonly: s.kind == Kind::View, options: vec![] })])
    }
}

// Exported only in the wasm build: a native `cargo test --workspace` cannot
// link the component model's export names.
#[cfg(target_arch = "wasm32")]
export!(WrongVersion);
