//! wasmsnap's filesystem executor. It runs layouts the host has already
//! validated and never decides anything itself:
//!
//! - [`SnapshotDirs`]: creates `<root>/snapshots/<id>` from a layout
//!   (temp dir, steps, rename; a copy flushed first), rebuilds what a
//!   power loss took, removes it, cleans up orphans;
//! - [`copy`]: the copy engine behind the `copy-parent` step;
//! - [`usage`]: disk usage as containerd counts it;
//! - [`interrupt`]: a cancelled request stops its copy between entries.
//!
//! Every walk of a tree a container can write (usage, copy, remove) goes
//! through `walk`: by directory fd, never following a symlink or leaving
//! the device, never opening a device node.

mod claims;
pub mod copy;
mod dirs;
mod error;
pub mod interrupt;
mod layout;
mod remove;
mod sys;
mod usage;
mod walk;

pub use dirs::{CleanupReport, NewDir, SnapshotDirs};
pub use error::FsError;
pub use usage::{Usage, usage, usage_within};
pub use walk::WalkStats;
