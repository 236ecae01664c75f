//! containerd's overlayfs snapshotter, as a wasmsnap policy.
//!
//! - no parents: bind the snapshot's own `fs` (read-only for a view);
//! - active with parents: overlay, upper = own `fs`, work = own `work`,
//!   lower = the parents' `fs`, nearest first;
//! - view of one parent: read-only bind of that parent's `fs`;
//! - view of several: read-only overlay of the parents' `fs`.
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
        let lower = s.parent_dirs("fs");
        let mount = match (s.kind, lower.len()) {
            (_, 0) => bind(s.dir("fs"), s.is_view()),
            (Kind::Active, _) => {
                overlay(lower, Some((s.dir("fs"), s.dir("work"))), self.options.clone())
            }
            (_, 1) => bind(lower.into_iter().next().unwrap(), true),
            _ => overlay(lower, None, self.options.clone()),
        };
        Ok(vec![mount])
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
        assert_eq!(plan, vec![bind(DirRef { snapshot: 1, name: "fs".into() }, true)]);
    }

    #[test]
    fn unknown_config_key_is_refused() {
        assert!(matches!(
            testing::init::<Overlay>(&[("mount_option", "x")]),
            Err(PolicyError::InvalidConfig(_))
        ));
    }
}
