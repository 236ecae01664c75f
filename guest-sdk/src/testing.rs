//! Helpers for unit testing policy logic natively with `cargo test`: no wasm
//! build, no host. Build a policy with [`init`], describe snapshots with
//! [`snapshot`], and compare the plans it returns.
//!
//! ```ignore
//! use wasmsnap_guest::{testing, Kind};
//! let policy = testing::init::<MyPolicy>(&[("mount_options", "volatile")]).unwrap();
//! let plan = policy.mounts(&testing::snapshot(Kind::Active, 3)).unwrap();
//! ```

use crate::{Config, HostFacts, Kind, Policy, PolicyError, Snapshot};

/// Host facts of a typical host: overlay present, no userxattr, the `index`
/// parameter present, no reflink, 4 KiB pages.
pub fn facts() -> HostFacts {
    HostFacts { overlay: true, userxattr: false, index_param: true, reflink: false, page_size: 4096 }
}

/// `P::init` with `config` and [`facts`].
pub fn init<P: Policy>(config: &[(&str, &str)]) -> Result<P, PolicyError> {
    init_with::<P>(config, &facts())
}

/// `P::init` with `config` and the given facts.
pub fn init_with<P: Policy>(config: &[(&str, &str)], facts: &HostFacts) -> Result<P, PolicyError> {
    let entries = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    P::init(&Config::new(entries), facts)
}

/// A snapshot with id `parents + 1` whose parents are `parents, ..., 1`
/// (nearest first), as the host numbers a chain.
pub fn snapshot(kind: Kind, parents: u64) -> Snapshot {
    Snapshot { id: parents + 1, kind, parent_ids: (1..=parents).rev().collect(), labels: Vec::new() }
}

/// [`snapshot`] with labels.
pub fn labelled(kind: Kind, parents: u64, labels: &[(&str, &str)]) -> Snapshot {
    let mut s = snapshot(kind, parents);
    s.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s
}
