//! Small helpers for building plans and reading config.

use crate::{
    BindMount, CopyMode, CopyParentStep, DirRef, Kind, Layout, LayoutStep, MkdirStep, Mount,
    OverlayMount, PolicyError, Snapshot, SnapshotId,
};

/// The operator's config for this snapshotter: string keys and values, in
/// the order the host gave them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Config { entries }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `key` as a boolean (`true`/`false`), `default` when unset.
    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool, PolicyError> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(PolicyError::InvalidConfig(format!(
                "{key} must be \"true\" or \"false\", got {other:?}"
            ))),
        }
    }

    /// Refuse keys this policy does not know, naming the first one.
    pub fn only(&self, known: &[&str]) -> Result<(), PolicyError> {
        match self.entries.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some((k, _)) => Err(PolicyError::InvalidConfig(format!(
                "unknown key {k:?} (known: {})",
                known.join(", ")
            ))),
        }
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}

impl Snapshot {
    /// A reference to this snapshot's directory `name`.
    pub fn dir(&self, name: &str) -> DirRef {
        dir_ref(self.id, name)
    }

    /// References to every parent's directory `name`, nearest first.
    pub fn parent_dirs(&self, name: &str) -> Vec<DirRef> {
        self.parent_ids.iter().map(|&id| dir_ref(id, name)).collect()
    }

    /// The nearest parent's id.
    pub fn parent(&self) -> Option<SnapshotId> {
        self.parent_ids.first().copied()
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn is_view(&self) -> bool {
        self.kind == Kind::View
    }

    /// A snapshot as the host describes it, without an id map.
    pub fn new(
        id: SnapshotId,
        kind: Kind,
        parent_ids: Vec<SnapshotId>,
        labels: Vec<(String, String)>,
    ) -> Snapshot {
        #[cfg(not(feature = "wit-0-1"))]
        return Snapshot { id, kind, parent_ids, labels, id_map: None };
        #[cfg(feature = "wit-0-1")]
        return Snapshot { id, kind, parent_ids, labels };
    }

    /// Whether this is an extraction snapshot of a later layer in
    /// containerd's parallel unpack: active, prepared without a parent,
    /// labelled with the parent's chain id (it is re-parented at Commit).
    pub fn is_parallel_extraction(&self) -> bool {
        self.kind == Kind::Active
            && self.parent_ids.is_empty()
            && self.label(PARENT_CHAIN_ID_LABEL).is_some()
    }
}

/// The label containerd's unpacker puts on every layer but the first: the
/// chain id of the layer below.
pub const PARENT_CHAIN_ID_LABEL: &str = "containerd.io/snapshot/parent-chain-id";

fn dir_ref(snapshot: SnapshotId, name: &str) -> DirRef {
    DirRef { snapshot, name: name.to_string() }
}

/// A bind mount of `source`, read-only or read-write.
pub fn bind(source: DirRef, readonly: bool) -> Mount {
    #[cfg(not(feature = "wit-0-1"))]
    return Mount::Bind(BindMount { source, readonly, options: Vec::new(), id_mapped: false });
    #[cfg(feature = "wit-0-1")]
    return Mount::Bind(BindMount { source, readonly, options: Vec::new() });
}

/// An overlay mount: `lower` top first; `upper_work` for a writable overlay.
pub fn overlay(
    lower: Vec<DirRef>,
    upper_work: Option<(DirRef, DirRef)>,
    options: Vec<String>,
) -> Mount {
    let (upper, work) = match upper_work {
        Some((u, w)) => (Some(u), Some(w)),
        None => (None, None),
    };
    #[cfg(not(feature = "wit-0-1"))]
    return Mount::Overlay(OverlayMount { lower, upper, work, options, id_mapped: false });
    #[cfg(feature = "wit-0-1")]
    return Mount::Overlay(OverlayMount { lower, upper, work, options });
}

/// `mount` asking for the snapshot's id map (`uidmap=`/`gidmap=`, rendered
/// by the host; nothing for a snapshot without one). `other` mounts have
/// no id map: returned as they are.
#[cfg(not(feature = "wit-0-1"))]
pub fn id_mapped(mut mount: Mount) -> Mount {
    match &mut mount {
        Mount::Bind(b) => b.id_mapped = true,
        Mount::Overlay(o) => o.id_mapped = true,
        Mount::Other(_) => {}
    }
    mount
}

/// An extraction plan: an overlay of `upper` alone, which the host renders
/// as `upperdir=` for containerd's applier (it turns the layer's whiteouts
/// into overlay whiteouts there); for [`Snapshot::is_parallel_extraction`].
#[cfg(not(feature = "wit-0-1"))]
pub fn extraction(upper: DirRef, options: Vec<String>) -> Mount {
    Mount::Overlay(OverlayMount {
        lower: Vec::new(),
        upper: Some(upper),
        work: None,
        options,
        id_mapped: false,
    })
}

/// Builds a [`Layout`] step by step.
#[derive(Default)]
pub struct LayoutBuilder {
    steps: Vec<LayoutStep>,
    content: Option<String>,
}

impl LayoutBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Create directory `name` with permission bits `mode`.
    pub fn mkdir(mut self, name: &str, mode: u32) -> Self {
        self.steps.push(LayoutStep::Mkdir(MkdirStep { name: name.into(), mode }));
        self
    }

    /// Fill `name` with the nearest parent's content.
    pub fn copy_parent(mut self, name: &str, mode: CopyMode) -> Self {
        self.steps.push(LayoutStep::CopyParent(CopyParentStep { name: name.into(), mode }));
        self
    }

    /// Give `name` the owner of the nearest parent's content.
    pub fn chown_like_parent(mut self, name: &str) -> Self {
        self.steps.push(LayoutStep::ChownLikeParent(name.into()));
        self
    }

    /// Give `name` the owner of the mapped root (the host ids container
    /// root maps to in the snapshot's id map; the host refuses it for a
    /// snapshot without one).
    #[cfg(not(feature = "wit-0-1"))]
    pub fn chown_to_mapped_root(mut self, name: &str) -> Self {
        self.steps.push(LayoutStep::ChownToMappedRoot(name.into()));
        self
    }

    /// Mark `name` as the snapshot's own content.
    pub fn content(mut self, name: &str) -> Self {
        self.content = Some(name.into());
        self
    }

    pub fn build(self) -> Layout {
        Layout { steps: self.steps, content: self.content }
    }
}
