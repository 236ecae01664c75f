//! The bridge between the generated `Guest` trait (static functions) and the
//! author's [`Policy`] (a value built once by `init`).

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::bindings::exports::wasmsnap::policy::policy::Guest;
use crate::{Config, HostFacts, Layout, Mount, PolicyError, Snapshot};

/// A snapshot policy: a pure function from a snapshot to a plan.
///
/// `init` runs once per instance, with the operator's config and the host's
/// facts; the value it returns answers every later call.
pub trait Policy: Sized + 'static {
    /// Build the policy from the operator's config. Return
    /// [`PolicyError::InvalidConfig`] for a bad key or value.
    fn init(config: &Config, facts: &HostFacts) -> Result<Self, PolicyError>;

    /// What to create for a new snapshot (Prepare or View).
    fn layout(&self, snapshot: &Snapshot) -> Result<Layout, PolicyError>;

    /// How to mount a snapshot.
    fn mounts(&self, snapshot: &Snapshot) -> Result<Vec<Mount>, PolicyError>;

    /// What the policy supports beyond the basics (contract 0.2): `rebase`
    /// (containerd's parallel unpack) and `remap-ids` (user namespaces).
    /// None by default; the overlay recipes support both
    /// ([`recipes::OVERLAY_CAPABILITIES`](crate::recipes::OVERLAY_CAPABILITIES)).
    #[cfg(not(feature = "wit-0-1"))]
    fn capabilities(&self) -> crate::Capabilities {
        crate::Capabilities::empty()
    }
}

/// Implements the generated `Guest` trait for any [`Policy`]. Used by
/// [`export_policy!`](crate::export_policy); authors never name it.
pub struct Adapter<P>(PhantomData<P>);

thread_local! {
    // A component instance is single-threaded: one slot holds the policy.
    static INSTANCE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

fn with_policy<P: Policy, R>(
    f: impl FnOnce(&P) -> Result<R, PolicyError>,
) -> Result<R, PolicyError> {
    INSTANCE.with(|slot| {
        let slot = slot.borrow();
        match slot.as_ref().and_then(|p| p.downcast_ref::<P>()) {
            Some(policy) => f(policy),
            None => Err(PolicyError::Failed("the host called the policy before init".into())),
        }
    })
}

impl<P: Policy> Guest for Adapter<P> {
    #[cfg(not(feature = "wit-0-1"))]
    fn init(
        config: Vec<(String, String)>,
        facts: HostFacts,
    ) -> Result<crate::Capabilities, PolicyError> {
        let policy = P::init(&Config::new(config), &facts)?;
        let capabilities = policy.capabilities();
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(policy)));
        Ok(capabilities)
    }

    #[cfg(feature = "wit-0-1")]
    fn init(config: Vec<(String, String)>, facts: HostFacts) -> Result<(), PolicyError> {
        let policy = P::init(&Config::new(config), &facts)?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(policy)));
        Ok(())
    }

    fn layout(snapshot: Snapshot) -> Result<Layout, PolicyError> {
        with_policy::<P, _>(|p| p.layout(&snapshot))
    }

    fn mounts(snapshot: Snapshot) -> Result<Vec<Mount>, PolicyError> {
        with_policy::<P, _>(|p| p.mounts(&snapshot))
    }
}
