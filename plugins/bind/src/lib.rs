//! Bind mounts only, like `native`, but the parent is cloned
//! (`clone-or-copy`): on XFS or btrfs a Prepare costs metadata, not bytes.
//!
//! Capability `remap-ids`: its bind mounts carry the snapshot's id map, and
//! containerd idmaps the bind source, so a clone needs no chown. No
//! `rebase`: a snapshot holds its parent's full tree, not a diff.
//!
//! Config: `require_reflink = "true"` refuses to load where the root's
//! filesystem cannot clone (the host facts say so).

use wasmsnap_guest::*;

pub struct Bind;

impl Policy for Bind {
    fn init(config: &Config, facts: &HostFacts) -> Result<Self, PolicyError> {
        config.only(&["require_reflink"])?;
        if config.get_bool("require_reflink", false)? && !facts.reflink {
            return Err(PolicyError::Unsupported(
                "require_reflink is set, but the snapshotter root's filesystem cannot clone files (no reflink); \
                 put the root on XFS (reflink=1) or btrfs, or use the native policy, which copies"
                    .into(),
            ));
        }
        Ok(Bind)
    }

    fn layout(&self, s: &Snapshot) -> Result<Layout, PolicyError> {
        Ok(recipes::copied_fs_layout(s, CopyMode::CloneOrCopy))
    }

    fn mounts(&self, s: &Snapshot) -> Result<Vec<Mount>, PolicyError> {
        Ok(recipes::copied_fs_mounts_id_mapped(s))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::REMAP_IDS
    }
}

export_policy!(Bind);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmsnap_guest::testing;

    #[test]
    fn active_clones_the_parent() {
        let p = testing::init::<Bind>(&[]).unwrap();
        let l = p.layout(&testing::snapshot(Kind::Active, 1)).unwrap();
        assert_eq!(
            l,
            LayoutBuilder::new().copy_parent("fs", CopyMode::CloneOrCopy).content("fs").build()
        );
    }

    #[test]
    fn require_reflink_refuses_without_reflink_and_names_native() {
        let err = testing::init::<Bind>(&[("require_reflink", "true")]).err().unwrap();
        let PolicyError::Unsupported(m) = err else { panic!("{err:?}") };
        assert!(m.contains("native"), "{m}");
        let mut facts = testing::facts();
        facts.reflink = true;
        assert!(testing::init_with::<Bind>(&[("require_reflink", "true")], &facts).is_ok());
        assert!(testing::init::<Bind>(&[("require_reflink", "maybe")]).is_err());
    }
}
