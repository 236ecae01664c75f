//! Whole plans that several policies share.

use crate::{
    Config, CopyMode, HostFacts, Kind, Layout, LayoutBuilder, Mount, PolicyError, Snapshot, bind,
};

/// The layout of a bind-mount snapshotter (containerd's native): a view of
/// a parent creates nothing; anything else gets its own `fs`, filled from
/// the nearest parent by `mode` when there is one.
pub fn copied_fs_layout(s: &Snapshot, mode: CopyMode) -> Layout {
    match (s.kind, s.parent()) {
        (Kind::View, Some(_)) => LayoutBuilder::new().build(),
        (_, Some(_)) => LayoutBuilder::new().copy_parent("fs", mode).content("fs").build(),
        (_, None) => LayoutBuilder::new().mkdir("fs", 0o755).content("fs").build(),
    }
}

/// The mounts that go with [`copied_fs_layout`]: a view of a parent binds
/// that parent's `fs` read-only; anything else binds its own `fs`.
pub fn copied_fs_mounts(s: &Snapshot) -> Vec<Mount> {
    match (s.kind, s.parent_dirs("fs").into_iter().next()) {
        (Kind::View, Some(parent)) => vec![bind(parent, true)],
        _ => vec![bind(s.dir("fs"), s.is_view())],
    }
}

/// [`copied_fs_mounts`] carrying the snapshot's id map (`remap-ids`):
/// containerd idmaps the bind source, so a copied or cloned tree needs no
/// chown; a file owned by 0 in the layer reads as the mapped root.
#[cfg(not(feature = "wit-0-1"))]
pub fn copied_fs_mounts_id_mapped(s: &Snapshot) -> Vec<Mount> {
    copied_fs_mounts(s).into_iter().map(crate::id_mapped).collect()
}

/// What containerd's overlayfs snapshotter supports and the overlay
/// recipes ([`overlay_layout`], [`overlay_mounts`]) implement.
#[cfg(not(feature = "wit-0-1"))]
pub const OVERLAY_CAPABILITIES: crate::Capabilities =
    crate::Capabilities::REBASE.union(crate::Capabilities::REMAP_IDS);

/// containerd's overlayfs plan, with its containerd 2.x features:
/// - no parents: bind the snapshot's own `fs` (read-only for a view), but
///   an extraction snapshot of parallel unpack (parentless, labelled with
///   the parent's chain id) gets the extraction plan, `upperdir=` of its
///   `fs` alone, so the applier keeps the layer's whiteouts;
/// - active with parents: overlay, upper `fs`, work `work`, the parents'
///   `fs` as lowers, nearest first;
/// - view of one parent: read-only bind of that parent's `fs`;
/// - view of several: read-only overlay of the parents.
///
/// Binds and overlays carry the snapshot's id map (nothing without one).
#[cfg(not(feature = "wit-0-1"))]
pub fn overlay_mounts(s: &Snapshot, options: &[String]) -> Vec<Mount> {
    let lower = s.parent_dirs("fs");
    let mount = match (s.kind, lower.len()) {
        _ if s.is_parallel_extraction() => crate::extraction(s.dir("fs"), options.to_vec()),
        (_, 0) => bind(s.dir("fs"), s.is_view()),
        (Kind::Active, _) => {
            crate::overlay(lower, Some((s.dir("fs"), s.dir("work"))), options.to_vec())
        }
        (_, 1) => bind(lower.into_iter().next().expect("one parent"), true),
        _ => crate::overlay(lower, None, options.to_vec()),
    };
    vec![crate::id_mapped(mount)]
}

/// The options containerd's overlayfs snapshotter puts on every overlay
/// mount: `index=off` where the kernel has the `index` parameter (unless the
/// operator chose an `index=` of their own), `userxattr` where the host
/// needs it, then the operator's comma-separated `mount_options`. Refuses a
/// host without overlayfs.
pub fn overlay_options(config: &Config, facts: &HostFacts) -> Result<Vec<String>, PolicyError> {
    if !facts.overlay {
        return Err(PolicyError::Unsupported("the kernel has no overlayfs".into()));
    }
    let extra: Vec<String> = config
        .get("mount_options")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(String::from)
        .collect();
    let mut options = Vec::new();
    if facts.index_param && !extra.iter().any(|o| o.starts_with("index=")) {
        options.push("index=off".to_string());
    }
    if facts.userxattr {
        options.push("userxattr".to_string());
    }
    options.extend(extra);
    Ok(options)
}

/// containerd's overlayfs layout: `fs` (0755) always, `work` (0711) for an
/// active snapshot, `fs` owned by the mapped root when the snapshot has an
/// id map (the upper layer is not idmapped: its owner must be the host's
/// view of container root), else like the nearest parent's content.
pub fn overlay_layout(s: &Snapshot) -> Layout {
    let mut layout = LayoutBuilder::new().mkdir("fs", 0o755);
    if s.kind == Kind::Active {
        layout = layout.mkdir("work", 0o711);
    }
    #[cfg(not(feature = "wit-0-1"))]
    if s.id_map.is_some() {
        return layout.chown_to_mapped_root("fs").content("fs").build();
    }
    layout.chown_like_parent("fs").content("fs").build()
}
