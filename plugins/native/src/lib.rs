//! containerd's native snapshotter, as a wasmsnap policy.
//!
//! - an active snapshot (or one with no parent) gets its own `fs`, filled
//!   with a byte copy of the nearest parent's content;
//! - a view with a parent creates nothing and binds that parent's `fs`
//!   read-only;
//! - mounts are `bind` with `rbind` and `rw`/`ro`.
//!
//! No capabilities, as containerd's native: no `rebase` (a snapshot holds
//! its parent's full tree, not a diff that could be re-parented) and no
//! `remap-ids` (containerd then chowns a `<key>-remap` copy itself).

use wasmsnap_guest::*;

pub struct Native;

impl Policy for Native {
    fn init(config: &Config, _facts: &HostFacts) -> Result<Self, PolicyError> {
        config.only(&[])?;
        Ok(Native)
    }

    fn layout(&self, s: &Snapshot) -> Result<Layout, PolicyError> {
        Ok(recipes::copied_fs_layout(s, CopyMode::Copy))
    }

    fn mounts(&self, s: &Snapshot) -> Result<Vec<Mount>, PolicyError> {
        Ok(recipes::copied_fs_mounts(s))
    }
}

export_policy!(Native);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmsnap_guest::testing;

    #[test]
    fn active_copies_the_nearest_parent() {
        let p = testing::init::<Native>(&[]).unwrap();
        let l = p.layout(&testing::snapshot(Kind::Active, 2)).unwrap();
        assert_eq!(l, LayoutBuilder::new().copy_parent("fs", CopyMode::Copy).content("fs").build());
        assert_eq!(
            p.mounts(&testing::snapshot(Kind::Active, 2)).unwrap(),
            vec![bind(DirRef { snapshot: 3, name: "fs".into() }, false)]
        );
    }

    #[test]
    fn view_binds_the_parent_and_creates_nothing() {
        let p = testing::init::<Native>(&[]).unwrap();
        let s = testing::snapshot(Kind::View, 2);
        assert!(p.layout(&s).unwrap().steps.is_empty());
        assert_eq!(
            p.mounts(&s).unwrap(),
            vec![bind(DirRef { snapshot: 2, name: "fs".into() }, true)]
        );
    }

    #[test]
    fn parentless_view_is_its_own_read_only_fs() {
        let p = testing::init::<Native>(&[]).unwrap();
        let s = testing::snapshot(Kind::View, 0);
        assert_eq!(p.layout(&s).unwrap().content.as_deref(), Some("fs"));
        assert_eq!(
            p.mounts(&s).unwrap(),
            vec![bind(DirRef { snapshot: 1, name: "fs".into() }, true)]
        );
    }
}
