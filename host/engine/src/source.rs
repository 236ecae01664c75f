//! Where a policy's component comes from: a `policy =` value names either a
//! built-in policy (`builtin:NAME`) or a file. Shared by the daemon's
//! loader and the harness.

use std::borrow::Cow;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// The component bytes a `policy =` value names.
pub fn read_policy(policy: &str) -> anyhow::Result<Cow<'static, [u8]>> {
    match policy.strip_prefix("builtin:") {
        Some(name) => crate::builtin(name).map(Cow::Borrowed).with_context(|| {
            format!("no built-in policy {name:?} (built in: {})", crate::builtin_names().join(", "))
        }),
        None => {
            std::fs::read(policy).map(Cow::Owned).with_context(|| format!("read policy {policy}"))
        }
    }
}

/// The sha256 of a component, in lower-case hex (what `sha256 =` pins).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
