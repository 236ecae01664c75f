//! Contract `wasmsnap:policy@0.2.0` (`wit/policy.wit`): its bindings, and
//! conversions between its types and the plan model. 0.2 adds the id map,
//! `chown-to-mapped-root`, id-mapped mounts, extraction plans and the
//! capabilities `init` declares.

use wasmsnap_plan as model;
use wasmtime::Store;

use crate::contract::Outcome;
use crate::error::DeclaredError;
use crate::sandbox::HostState;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "snapshot-policy",
    });
}

use bindings::wasmsnap::policy::types as wit;
pub(crate) use bindings::{SnapshotPolicy, SnapshotPolicyPre};

impl wit::Host for HostState {}

pub(crate) fn init(
    b: &SnapshotPolicy,
    store: &mut Store<HostState>,
    config: &[(String, String)],
    f: &model::HostFacts,
) -> Outcome<model::Capabilities> {
    let result = b.wasmsnap_policy_policy().call_init(store, config, facts(f))?;
    Ok(result
        .map(|c| model::Capabilities {
            rebase: c.contains(wit::Capabilities::REBASE),
            remap_ids: c.contains(wit::Capabilities::REMAP_IDS),
        })
        .map_err(declared))
}

pub(crate) fn layout(
    b: &SnapshotPolicy,
    store: &mut Store<HostState>,
    s: &model::Snapshot,
) -> Outcome<model::Layout> {
    let result = b.wasmsnap_policy_policy().call_layout(store, &snapshot(s))?;
    Ok(result.map(layout_of).map_err(declared))
}

pub(crate) fn mounts(
    b: &SnapshotPolicy,
    store: &mut Store<HostState>,
    s: &model::Snapshot,
) -> Outcome<Vec<model::MountPlan>> {
    let result = b.wasmsnap_policy_policy().call_mounts(store, &snapshot(s))?;
    Ok(result.map(|m| m.into_iter().map(mount).collect()).map_err(declared))
}

fn snapshot(s: &model::Snapshot) -> wit::Snapshot {
    wit::Snapshot {
        id: s.id,
        kind: match s.kind {
            model::Kind::View => wit::Kind::View,
            model::Kind::Active => wit::Kind::Active,
            model::Kind::Committed => wit::Kind::Committed,
        },
        parent_ids: s.parent_ids.clone(),
        labels: s.labels.clone(),
        id_map: s.id_map.as_ref().map(|m| wit::IdMap { uid: ranges(&m.uid), gid: ranges(&m.gid) }),
    }
}

fn ranges(r: &[model::IdRange]) -> Vec<wit::IdRange> {
    r.iter().map(|r| wit::IdRange { container: r.container, host: r.host, size: r.size }).collect()
}

fn facts(f: &model::HostFacts) -> wit::HostFacts {
    wit::HostFacts {
        overlay: f.overlay,
        userxattr: f.userxattr,
        index_param: f.index_param,
        reflink: f.reflink,
        page_size: f.page_size,
    }
}

fn layout_of(l: wit::SnapshotLayout) -> model::Layout {
    model::Layout { steps: l.steps.into_iter().map(step).collect(), content: l.content }
}

fn step(s: wit::LayoutStep) -> model::Step {
    match s {
        wit::LayoutStep::Mkdir(m) => model::Step::Mkdir { name: m.name, mode: m.mode },
        wit::LayoutStep::CopyParent(c) => model::Step::CopyParent {
            name: c.name,
            mode: match c.mode {
                wit::CopyMode::Copy => model::CopyMode::Copy,
                wit::CopyMode::CloneOrCopy => model::CopyMode::CloneOrCopy,
            },
        },
        wit::LayoutStep::ChownLikeParent(name) => model::Step::ChownLikeParent { name },
        wit::LayoutStep::ChownToMappedRoot(name) => model::Step::ChownToMappedRoot { name },
    }
}

fn mount(m: wit::Mount) -> model::MountPlan {
    match m {
        wit::Mount::Bind(b) => model::MountPlan::Bind {
            source: dir(b.source),
            readonly: b.readonly,
            options: b.options,
            id_mapped: b.id_mapped,
        },
        wit::Mount::Overlay(o) => model::MountPlan::Overlay {
            lower: o.lower.into_iter().map(dir).collect(),
            upper: o.upper.map(dir),
            work: o.work.map(dir),
            options: o.options,
            id_mapped: o.id_mapped,
        },
        wit::Mount::Other(o) => {
            model::MountPlan::Other { fs_type: o.type_, source: o.source, options: o.options }
        }
    }
}

fn dir(d: wit::DirRef) -> model::DirRef {
    model::DirRef { snapshot: d.snapshot, name: d.name }
}

fn declared(e: wit::PolicyError) -> DeclaredError {
    match e {
        wit::PolicyError::InvalidConfig(m) => DeclaredError::InvalidConfig(m),
        wit::PolicyError::Unsupported(m) => DeclaredError::Unsupported(m),
        wit::PolicyError::Failed(m) => DeclaredError::Failed(m),
    }
}
