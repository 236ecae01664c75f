//! Unit test policy logic natively with `cargo test`: no wasm build, no
//! host, no engine. A [`Policy`] is plain Rust; these helpers build it the
//! way the host would ([`init`], with typical host [`facts`]) and describe
//! snapshots the way the host numbers them ([`snapshot`]: a chain whose
//! ids count up from 1, the snapshot itself on top).
//!
//! ```
//! use wasmsnap_guest::*;
//!
//! struct Mine;
//! impl Policy for Mine {
//!     fn init(config: &Config, _facts: &HostFacts) -> Result<Self, PolicyError> {
//!         config.only(&[])?;
//!         Ok(Mine)
//!     }
//!     fn layout(&self, _s: &Snapshot) -> Result<Layout, PolicyError> {
//!         Ok(LayoutBuilder::new().mkdir("fs", 0o755).content("fs").build())
//!     }
//!     fn mounts(&self, s: &Snapshot) -> Result<Vec<Mount>, PolicyError> {
//!         Ok(vec![bind(s.dir("fs"), s.is_view())])
//!     }
//! }
//!
//! use wasmsnap_guest::testing;
//! let policy = testing::init::<Mine>(&[]).unwrap();
//! // Snapshot 4, active, on parents 3, 2, 1 (nearest first).
//! let s = testing::snapshot(Kind::Active, 3);
//! assert_eq!(s.parent_ids, [3, 2, 1]);
//! assert_eq!(policy.mounts(&s).unwrap(), vec![bind(testing::dir(4, "fs"), false)]);
//! // A bad config key is refused, as the host's load would be.
//! assert!(matches!(testing::init::<Mine>(&[("colour", "blue")]), Err(PolicyError::InvalidConfig(_))));
//! ```
//!
//! What these tests cannot see: the host's validation of the plan (names,
//! references, options carrying paths), the rendering to host paths, and
//! the real mounts. For those, build the component and run case files
//! with `wasmsnap policy test` (and `--mount`); see
//! `docs/policy-authoring.md`.

use crate::{Config, DirRef, HostFacts, Kind, Policy, PolicyError, Snapshot, SnapshotId};

/// Host facts of a typical host: overlay present, no userxattr, the `index`
/// parameter present, no reflink, 4 KiB pages. The same facts
/// `wasmsnap policy test` uses unless a case says otherwise.
pub fn facts() -> HostFacts {
    HostFacts {
        overlay: true,
        userxattr: false,
        index_param: true,
        reflink: false,
        page_size: 4096,
    }
}

/// `P::init` with `config` and [`facts`].
pub fn init<P: Policy>(config: &[(&str, &str)]) -> Result<P, PolicyError> {
    init_with::<P>(config, &facts())
}

/// `P::init` with `config` and the given facts.
pub fn init_with<P: Policy>(config: &[(&str, &str)], facts: &HostFacts) -> Result<P, PolicyError> {
    P::init(&self::config(config), facts)
}

/// A [`Config`] from `key, value` pairs, as the host passes the operator's table.
pub fn config(entries: &[(&str, &str)]) -> Config {
    Config::new(entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// A snapshot with id `parents + 1` whose parents are `parents, ..., 1`
/// (nearest first), as the host numbers a chain.
pub fn snapshot(kind: Kind, parents: u64) -> Snapshot {
    Snapshot::new(parents + 1, kind, (1..=parents).rev().collect(), Vec::new())
}

/// [`snapshot`] with the id map containerd's CRI asks for: container ids
/// 0..65536 are host ids `uid_host..` and `gid_host..`, with the labels
/// that carry it.
#[cfg(not(feature = "wit-0-1"))]
pub fn id_mapped(kind: Kind, parents: u64, uid_host: u32, gid_host: u32) -> Snapshot {
    let range = |host| vec![crate::IdRange { container: 0, host, size: 65536 }];
    let mut s = labelled(
        kind,
        parents,
        &[
            ("containerd.io/snapshot/uidmapping", &format!("0:{uid_host}:65536")),
            ("containerd.io/snapshot/gidmapping", &format!("0:{gid_host}:65536")),
        ],
    );
    s.id_map = Some(crate::IdMap { uid: range(uid_host), gid: range(gid_host) });
    s
}

/// A snapshot with explicit ids: `id` on `parent_ids` (nearest first).
pub fn snapshot_with(id: SnapshotId, kind: Kind, parent_ids: &[SnapshotId]) -> Snapshot {
    Snapshot::new(id, kind, parent_ids.to_vec(), Vec::new())
}

/// [`snapshot`] with labels.
pub fn labelled(kind: Kind, parents: u64, labels: &[(&str, &str)]) -> Snapshot {
    let mut s = snapshot(kind, parents);
    s.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s
}

/// A reference to directory `name` of snapshot `snapshot`, for expected plans.
pub fn dir(snapshot: SnapshotId, name: &str) -> DirRef {
    DirRef { snapshot, name: name.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_numbered_from_the_bottom() {
        let s = snapshot(Kind::View, 2);
        assert_eq!((s.id, s.parent_ids.clone()), (3, vec![2, 1]));
        assert_eq!(snapshot_with(9, Kind::Active, &[7, 5]).parent_ids, [7, 5]);
        assert_eq!(
            labelled(Kind::Active, 0, &[("a", "b")]).labels,
            [("a".to_string(), "b".to_string())]
        );
    }

    #[test]
    fn config_keeps_the_hosts_order() {
        let c = config(&[("a", "1"), ("b", "2")]);
        assert_eq!(c.get("b"), Some("2"));
        assert_eq!(c.entries()[0].0, "a");
    }
}
