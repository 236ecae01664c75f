//! # wasmsnap-engine
//!
//! Loads snapshot policies (wasm components of the `wasmsnap:policy` world)
//! with wasmtime, runs them in a deny-all sandbox with time and memory
//! limits, and validates every plan they return.
//!
//! ```ignore
//! let engine = Engine::new()?;
//! let wasm = builtin("overlay").unwrap();
//! let facts = probe_facts(root);
//! let policy = Policy::load(&engine, "builtin:overlay", wasm, &[], &facts, Sandbox::default())?;
//! let plans = policy.mounts(&snapshot)?;          // validated
//! let mounts = wasmsnap_plan::render_mounts(root, &plans);
//! ```

mod cache_trust;
mod contract;
mod disk_cache;
mod engine;
mod error;
mod facts;
mod output;
mod permits;
mod policy;
mod quiet_panics;
mod sandbox;
mod source;
mod v0_1;
mod v0_2;
mod version;

pub use cache_trust::Refusal as CacheRefusal;
pub use disk_cache::DiskCache;
pub use engine::Engine;
pub use error::{DeclaredError, Func, PolicyError};
pub use facts::probe_facts;
pub use policy::{Policy, PolicyInfo};
pub use sandbox::{HOSTCALL_FUEL, Sandbox};
pub use source::{read_policy, sha256_hex};
pub use version::SUPPORTED_WIT;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
}

/// The component bytes of built-in policy `name` (`overlay`, ...).
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    builtin::BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, wasm)| *wasm)
}

/// Names of the built-in policies.
pub fn builtin_names() -> Vec<&'static str> {
    builtin::BUILTIN.iter().map(|(n, _)| *n).collect()
}
