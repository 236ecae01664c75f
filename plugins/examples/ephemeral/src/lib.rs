//! An example custom policy: why policies are pluggable.
//!
//! It is the overlay policy with two changes an operator may want for
//! short-lived containers (CI jobs, build steps) without patching the host:
//!
//! - an active snapshot labelled `containerd.io/snapshot/wasmsnap.ephemeral=true`
//!   mounts its overlay with `volatile`: the kernel skips every sync of the
//!   upper layer, so writes are faster, and a crash may lose them (which an
//!   ephemeral container does not mind);
//! - a view creates no directory of its own: a view of one committed parent
//!   is a read-only bind of that parent's `fs` (all such views share it), a
//!   view of several is a read-only overlay of the parents.
//!
//! Config: `mount_options` (comma-separated), appended to overlay mounts.
//! A label value other than `true` or `false` is refused with an error
//! naming the label.

use wasmsnap_guest::*;

/// The label that marks a snapshot as ephemeral.
pub const EPHEMERAL_LABEL: &str = "containerd.io/snapshot/wasmsnap.ephemeral";

pub struct Ephemeral {
    /// Options every overlay mount carries, host facts first.
    options: Vec<String>,
}

impl Policy for Ephemeral {
    fn init(config: &Config, facts: &HostFacts) -> Result<Self, PolicyError> {
        config.only(&["mount_options"])?;
        let options = recipes::overlay_options(config, facts)?;
        Ok(Ephemeral { options })
    }

    fn layout(&self, s: &Snapshot) -> Result<Layout, PolicyError> {
        if s.is_view() && s.parent().is_some() {
            // Nothing to create: the view mounts its parents read-only.
            return Ok(LayoutBuilder::new().build());
        }
        Ok(recipes::overlay_layout(s))
    }

    fn mounts(&self, s: &Snapshot) -> Result<Vec<Mount>, PolicyError> {
        let lower = s.parent_dirs("fs");
        let mount = match (s.kind, lower.len()) {
            (_, 0) => bind(s.dir("fs"), s.is_view()),
            (Kind::Active, _) => {
                let mut options = self.options.clone();
                if is_ephemeral(s)? {
                    options.push("volatile".to_string());
                }
                overlay(lower, Some((s.dir("fs"), s.dir("work"))), options)
            }
            (_, 1) => bind(lower.into_iter().next().expect("one parent"), true),
            _ => overlay(lower, None, self.options.clone()),
        };
        Ok(vec![mount])
    }
}

/// Whether `s` carries the ephemeral label set to `true`.
fn is_ephemeral(s: &Snapshot) -> Result<bool, PolicyError> {
    match s.label(EPHEMERAL_LABEL) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(PolicyError::Failed(format!(
            "label {EPHEMERAL_LABEL} must be \"true\" or \"false\", got {other:?}"
        ))),
    }
}

export_policy!(Ephemeral);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmsnap_guest::testing;

    fn ephemeral(kind: Kind, parents: u64) -> Snapshot {
        testing::labelled(kind, parents, &[(EPHEMERAL_LABEL, "true")])
    }

    #[test]
    fn labelled_active_gets_volatile_after_the_host_options() {
        let p = testing::init::<Ephemeral>(&[("mount_options", "metacopy=off")]).unwrap();
        let plan = p.mounts(&ephemeral(Kind::Active, 2)).unwrap();
        let Mount::Overlay(o) = &plan[0] else { panic!("{plan:?}") };
        assert_eq!(o.options, ["index=off", "metacopy=off", "volatile"]);
        assert_eq!(o.upper, Some(DirRef { snapshot: 3, name: "fs".into() }));
    }

    #[test]
    fn unlabelled_active_is_plain_overlay() {
        let p = testing::init::<Ephemeral>(&[]).unwrap();
        let plan = p.mounts(&testing::snapshot(Kind::Active, 2)).unwrap();
        let Mount::Overlay(o) = &plan[0] else { panic!("{plan:?}") };
        assert_eq!(o.options, ["index=off"]);
        let explicit_false = testing::labelled(Kind::Active, 2, &[(EPHEMERAL_LABEL, "false")]);
        assert_eq!(p.mounts(&explicit_false).unwrap(), plan);
    }

    #[test]
    fn views_of_one_parent_create_nothing_and_share_its_bind() {
        let p = testing::init::<Ephemeral>(&[]).unwrap();
        let first = Snapshot { id: 7, ..testing::snapshot(Kind::View, 1) };
        let second = Snapshot { id: 8, ..testing::snapshot(Kind::View, 1) };
        for view in [&first, &second] {
            assert_eq!(p.layout(view).unwrap(), LayoutBuilder::new().build());
        }
        let shared = vec![bind(DirRef { snapshot: 1, name: "fs".into() }, true)];
        assert_eq!(p.mounts(&first).unwrap(), shared);
        assert_eq!(p.mounts(&second).unwrap(), shared);
    }

    #[test]
    fn view_of_several_is_a_read_only_overlay_without_volatile() {
        let p = testing::init::<Ephemeral>(&[]).unwrap();
        let plan = p.mounts(&ephemeral(Kind::View, 3)).unwrap();
        let Mount::Overlay(o) = &plan[0] else { panic!("{plan:?}") };
        assert_eq!((o.upper.as_ref(), o.work.as_ref()), (None, None));
        assert_eq!(o.lower.len(), 3);
        assert!(!o.options.contains(&"volatile".to_string()));
    }

    #[test]
    fn parentless_active_has_its_own_fs_and_work() {
        let p = testing::init::<Ephemeral>(&[]).unwrap();
        let s = testing::snapshot(Kind::Active, 0);
        let expected = LayoutBuilder::new()
            .mkdir("fs", 0o755)
            .mkdir("work", 0o711)
            .chown_like_parent("fs")
            .content("fs")
            .build();
        assert_eq!(p.layout(&s).unwrap(), expected);
        assert_eq!(p.mounts(&s).unwrap(), vec![bind(s.dir("fs"), false)]);
    }

    #[test]
    fn a_bad_label_value_is_a_declared_error_naming_the_label() {
        let p = testing::init::<Ephemeral>(&[]).unwrap();
        let s = testing::labelled(Kind::Active, 1, &[(EPHEMERAL_LABEL, "yes")]);
        let err = p.mounts(&s).unwrap_err();
        let PolicyError::Failed(m) = err else { panic!("{err:?}") };
        assert!(m.contains(EPHEMERAL_LABEL) && m.contains("\"yes\""), "{m}");
    }

    #[test]
    fn host_facts_shape_the_options() {
        let mut facts = testing::facts();
        facts.index_param = false;
        facts.userxattr = true;
        let p = testing::init_with::<Ephemeral>(&[], &facts).unwrap();
        let plan = p.mounts(&ephemeral(Kind::Active, 1)).unwrap();
        let Mount::Overlay(o) = &plan[0] else { panic!("{plan:?}") };
        assert_eq!(o.options, ["userxattr", "volatile"]);
        facts.overlay = false;
        assert!(matches!(
            testing::init_with::<Ephemeral>(&[], &facts),
            Err(PolicyError::Unsupported(_))
        ));
    }
}
