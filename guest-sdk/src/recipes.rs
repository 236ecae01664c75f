//! Whole plans that several policies share.

use crate::{CopyMode, Kind, Layout, LayoutBuilder, Mount, Snapshot, bind};

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
