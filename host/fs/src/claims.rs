//! Names under `snapshots/` that an operation of this process is using right
//! now (a temp dir being filled, a new dir awaiting its record, a tree being
//! deleted). Cleanup skips them, so it can run beside Prepare and Remove.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct Claims {
    names: Mutex<HashSet<OsString>>,
}

impl Claims {
    /// Claims `name`, or `None` if another operation holds it.
    pub(crate) fn try_claim(&self, name: &OsStr) -> Option<Claim<'_>> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.insert(name.to_os_string()).then(|| Claim { claims: self, name: name.to_os_string() })
    }
}

/// Held while the name is in use; released on drop.
pub(crate) struct Claim<'a> {
    claims: &'a Claims,
    name: OsString,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claims.names.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_held_until_its_claim_drops() {
        let claims = Claims::default();
        let first = claims.try_claim(OsStr::new("new-1")).expect("free name");
        assert!(claims.try_claim(OsStr::new("new-1")).is_none());
        assert!(claims.try_claim(OsStr::new("new-2")).is_some());
        drop(first);
        assert!(claims.try_claim(OsStr::new("new-1")).is_some());
    }
}
