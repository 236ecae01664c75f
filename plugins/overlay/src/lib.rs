//! containerd's overlayfs snapshotter, as a wasmsnap policy.
//!
//! - no parents: bind the snapshot's own `fs` (read-only for a view);
//!   an extraction snapshot of containerd's parallel unpack (parentless,
//!   labelled `containerd.io/snapshot/parent-chain-id`) gets an upper-only
//!   overlay, rendered `upperdir=` alone, so whiteouts are kept;
//! - active with parents: overlay, upper = own `fs`, work = own `work`,
//!   lower = the parents' `fs`, nearest first;
//! - view of one parent: read-only bind of that parent's `fs`;
//! - view of several: read-only overlay of the parents' `fs`.
//!
//! Capabilities, as containerd's overlayfs: `rebase` and `remap-ids` (the
//! new `fs` is owned by the mapped root; mounts carry the id map).
//!
//! Config: `mount_options` (comma-separated) is appended to overlay mounts.

use wasmsnap_guest::*;

pub struct Overlay {
    /// Options every overlay mount carries, host facts first.
    options: Vec<String>,
}

impl Policy for Overlay {
    fn init(config: &Config, facts: &HostFacts) -> Result<Self, PolicyError> {
        config.only(&["mount_options"])?;
        let options = recipes::overlay_options(config, facts)?;
        Ok(Overlay { options })
    }

    fn layout(&self, s: &Snapshot) -> Result<Layout, PolicyError> {
        Ok(recipes::overlay_layout(s))
    }

    fn mounts(&self, s: &Snapshot) -> Result<Vec<Mount>, PolicyError> {
        Ok(recipes::overlay_mounts(s, &self.options))
    }

    fn capabilities(&self) -> Capabilities {
        recipes::OVERLAY_CAPABILITIES
    }
}

export_policy!(Overlay);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmsnap_guest::testing;

    #[test]
    fn active_on_two_parents_is_an_overlay_with_index_off() {
        let p = testing::init::<Overlay>(&[("mount_options", "volatile")]).unwrap();
        let plan = p.mounts(&testing::snapshot(Kind::Active, 2)).unwrap();
        let Mount::Overlay(o) = &plan[0] else { panic!("{plan:?}") };
        assert_eq!(o.lower.iter().map(|d| d.snapshot).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(o.upper.as_ref().unwrap().name, "fs");
        assert_eq!(o.options, vec!["index=off", "volatile"]);
    }

    #[test]
    fn view_of_one_parent_binds_it_read_only() {
        let p = testing::init::<Overlay>(&[]).unwrap();
        let plan = p.mounts(&testing::snapshot(Kind::View, 1)).unwrap();
        assert_eq!(plan, vec![id_mapped(bind(DirRef { snapshot: 1, name: "fs".into() }, true))]);
    }

    #[test]
    fn parallel_extraction_is_upper_only_and_id_maps_are_carried() {
        let p = testing::init::<Overlay>(&[]).unwrap();
        let s = testing::labelled(Kind::Active, 0, &[(PARENT_CHAIN_ID_LABEL, "sha256:x")]);
        assert_eq!(
            p.mounts(&s).unwrap(),
            vec![id_mapped(extraction(s.dir("fs"), vec!["index=off".into()]))]
        );
        // The first layer has no parent chain id: a bind, as before.
        let first = testing::snapshot(Kind::Active, 0);
        assert_eq!(p.mounts(&first).unwrap(), vec![id_mapped(bind(first.dir("fs"), false))]);
        let mapped = testing::id_mapped(Kind::Active, 1, 100000, 200000);
        let l = p.layout(&mapped).unwrap();
        assert_eq!(l.steps.last(), Some(&LayoutStep::ChownToMappedRoot("fs".into())));
        assert_eq!(p.capabilities(), Capabilities::REBASE | Capabilities::REMAP_IDS);
    }

    #[test]
    fn unknown_config_key_is_refused() {
        assert!(matches!(
            testing::init::<Overlay>(&[("mount_option", "x")]),
            Err(PolicyError::InvalidConfig(_))
        ));
    }
}
