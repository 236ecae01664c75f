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
/// active snapshot, `fs` owned like the nearest parent's content.
pub fn overlay_layout(s: &Snapshot) -> Layout {
    let mut layout = LayoutBuilder::new().mkdir("fs", 0o755);
    if s.kind == Kind::Active {
        layout = layout.mkdir("work", 0o711);
    }
    layout.chown_like_parent("fs").content("fs").build()
}
