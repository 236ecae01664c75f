//! The containerd snapshotter capabilities (`rebase`, `remap-ids`, ...)
//! that a snapshotter served with a given policy supports: what its
//! `[proxy_plugins.NAME] capabilities` in containerd's config may list.
//! `wasmsnap doctor` checks containerd's config against this, and it is
//! where the daemon's start-up log and `config check` get their line.

use std::collections::BTreeSet;

use wasmsnap_engine::Policy;

/// The capabilities a snapshotter running `policy` supports: what its
/// `init` declared (a 0.1.0 policy declares none).
pub fn supported(policy: &Policy) -> BTreeSet<String> {
    policy.capabilities().names().into_iter().map(String::from).collect()
}

/// The line for `[proxy_plugins.NAME]` in containerd's config (1.7.23+,
/// 2.x) that tells containerd what the policy supports: without it
/// containerd neither unpacks in parallel nor hands over id maps.
pub fn line(c: &wasmsnap_plan::Capabilities) -> String {
    let names: Vec<String> = c.names().iter().map(|n| format!("{n:?}")).collect();
    format!("capabilities = [{}]", names.join(", "))
}
