//! The containerd snapshotter capabilities (`rebase`, `remap-ids`, ...)
//! that a snapshotter served with a given policy supports: what its
//! `[proxy_plugins.NAME] capabilities` in containerd's config may list.
//! `wasmsnap doctor` checks containerd's config against this, and it is
//! the one place to fill when policies gain capabilities.

use std::collections::BTreeSet;

use wasmsnap_engine::Policy;

/// The capabilities a snapshotter running `policy` supports. None yet: no
/// policy can rebase a snapshot or remap ids.
pub fn supported(policy: &Policy) -> BTreeSet<String> {
    let _ = policy;
    BTreeSet::new()
}
