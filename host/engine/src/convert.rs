//! Between the generated types of contract 0.1 and the plan model. The
//! model is what the rest of the host uses, whichever contract version a
//! policy speaks; a future 0.2 gets its own conversions next to these.

use wasmsnap_plan as model;

use crate::bindings::wasmsnap::policy::types as wit;
use crate::error::DeclaredError;

pub(crate) fn snapshot(s: &model::Snapshot) -> wit::Snapshot {
    wit::Snapshot {
        id: s.id,
        kind: match s.kind {
            model::Kind::View => wit::Kind::View,
            model::Kind::Active => wit::Kind::Active,
            model::Kind::Committed => wit::Kind::Committed,
        },
        parent_ids: s.parent_ids.clone(),
        labels: s.labels.clone(),
    }
}

pub(crate) fn facts(f: &model::HostFacts) -> wit::HostFacts {
    wit::HostFacts {
        overlay: f.overlay,
        userxattr: f.userxattr,
        index_param: f.index_param,
        reflink: f.reflink,
        page_size: f.page_size,
    }
}

pub(crate) fn layout(l: wit::SnapshotLayout) -> model::Layout {
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
    }
}

pub(crate) fn mounts(m: Vec<wit::Mount>) -> Vec<model::MountPlan> {
    m.into_iter().map(mount).collect()
}

fn mount(m: wit::Mount) -> model::MountPlan {
    match m {
        wit::Mount::Bind(b) => model::MountPlan::Bind {
            source: dir(b.source),
            readonly: b.readonly,
            options: b.options,
        },
        wit::Mount::Overlay(o) => model::MountPlan::Overlay {
            lower: o.lower.into_iter().map(dir).collect(),
            upper: o.upper.map(dir),
            work: o.work.map(dir),
            options: o.options,
        },
        wit::Mount::Other(o) => {
            model::MountPlan::Other { fs_type: o.type_, source: o.source, options: o.options }
        }
    }
}

fn dir(d: wit::DirRef) -> model::DirRef {
    model::DirRef { snapshot: d.snapshot, name: d.name }
}

/// A declared error, its message escaped and capped where it enters the
/// host: it goes on to a gRPC status, a log line and the harness's report.
pub(crate) fn declared(e: wit::PolicyError) -> DeclaredError {
    use model::untrusted;
    match e {
        wit::PolicyError::InvalidConfig(m) => DeclaredError::InvalidConfig(untrusted(&m)),
        wit::PolicyError::Unsupported(m) => DeclaredError::Unsupported(untrusted(&m)),
        wit::PolicyError::Failed(m) => DeclaredError::Failed(untrusted(&m)),
    }
}
