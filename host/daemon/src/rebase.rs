//! Commit with a parent: containerd 2.2+'s parallel unpack prepares every
//! layer without a parent, applies them at once, and commits each onto the
//! layer below (`CommitSnapshotRequest.parent`). The record is re-parented
//! in the commit's own transaction: all or nothing.
//!
//! Only a policy that declares `rebase` allows it: its content must be a
//! diff that stacks on any parent (overlay's upper layer). A policy whose
//! snapshots hold a full tree (native and bind copy their parent's) would
//! silently drop what the parent holds, so the host refuses, saying why.

use wasmsnap_engine::Policy;
use wasmsnap_metastore::{Record, WriteTx};

use crate::error::{Error, Result};
use crate::snapshotter::Snapshotter;

impl Snapshotter {
    /// Re-parent `active` onto `parent` inside the commit's transaction
    /// `tx`, if the policy supports it. The same parent as now is no rebase
    /// and always allowed.
    pub(crate) fn rebase(
        &self,
        tx: &mut WriteTx,
        policy: &Policy,
        active: &Record,
        parent: &str,
    ) -> Result<()> {
        let moves = active.parent.as_deref() != Some(parent);
        if moves && active.parent.is_none() && !policy.capabilities().rebase {
            return Err(Error::FailedPrecondition(format!(
                "snapshotter {:?}: commit of {:?} onto parent {parent:?} needs a rebase, which policy {} does not support: \
                 its snapshots hold a full copy of their parent's tree, not a diff that can be stacked on another parent; \
                 do not list \"rebase\" in containerd's capabilities for this snapshotter",
                self.name(),
                active.name,
                policy.info().label
            )));
        }
        Ok(tx.rebase(&active.name, parent)?)
    }
}
