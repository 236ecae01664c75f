//! One policy, whichever contract version it speaks: the bindings of each
//! supported version behind one interface that speaks the plan model. A
//! version is added as a module (`v0_1`, `v0_2`) and an arm here.

use wasmsnap_plan::{Capabilities, HostFacts, Layout, MountPlan, Snapshot};
use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use crate::error::DeclaredError;
use crate::sandbox::HostState;
use crate::{v0_1, v0_2};

/// A guest call that ran: the sandbox's error (trap, timeout), or what the
/// policy answered.
pub(crate) type Outcome<R> = wasmtime::Result<Result<R, DeclaredError>>;

/// A component linked into the sandbox, ready to instantiate.
pub(crate) enum PolicyPre {
    V0_1(v0_1::SnapshotPolicyPre<HostState>),
    V0_2(v0_2::SnapshotPolicyPre<HostState>),
}

/// An instance's exports.
pub(crate) enum PolicyBindings {
    V0_1(v0_1::SnapshotPolicy),
    V0_2(v0_2::SnapshotPolicy),
}

impl PolicyPre {
    /// `version` is one of [`crate::SUPPORTED_WIT`], read from the component.
    pub(crate) fn new(
        version: &str,
        linker: &Linker<HostState>,
        component: &Component,
    ) -> wasmtime::Result<PolicyPre> {
        let pre = linker.instantiate_pre(component)?;
        Ok(match version {
            "0.1.0" => PolicyPre::V0_1(v0_1::SnapshotPolicyPre::new(pre)?),
            "0.2.0" => PolicyPre::V0_2(v0_2::SnapshotPolicyPre::new(pre)?),
            other => wasmtime::bail!("no bindings for wasmsnap:policy@{other}"),
        })
    }

    pub(crate) fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<PolicyBindings> {
        Ok(match self {
            PolicyPre::V0_1(pre) => PolicyBindings::V0_1(pre.instantiate(store)?),
            PolicyPre::V0_2(pre) => PolicyBindings::V0_2(pre.instantiate(store)?),
        })
    }
}

impl PolicyBindings {
    pub(crate) fn init(
        &self,
        store: &mut Store<HostState>,
        config: &[(String, String)],
        facts: &HostFacts,
    ) -> Outcome<Capabilities> {
        match self {
            PolicyBindings::V0_1(b) => v0_1::init(b, store, config, facts),
            PolicyBindings::V0_2(b) => v0_2::init(b, store, config, facts),
        }
    }

    pub(crate) fn layout(&self, store: &mut Store<HostState>, s: &Snapshot) -> Outcome<Layout> {
        match self {
            PolicyBindings::V0_1(b) => v0_1::layout(b, store, s),
            PolicyBindings::V0_2(b) => v0_2::layout(b, store, s),
        }
    }

    pub(crate) fn mounts(
        &self,
        store: &mut Store<HostState>,
        s: &Snapshot,
    ) -> Outcome<Vec<MountPlan>> {
        match self {
            PolicyBindings::V0_1(b) => v0_1::mounts(b, store, s),
            PolicyBindings::V0_2(b) => v0_2::mounts(b, store, s),
        }
    }
}
