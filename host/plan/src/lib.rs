//! The plan model shared by the policy engine, the filesystem executor and
//! the snapshotter: what a policy returned, after conversion from the WIT
//! types of whichever contract version it speaks.
//!
//! - [`model`]: snapshots, layouts, mount plans (dir-refs, never paths);
//! - [`validate`]: the host's rules every plan must pass before use;
//! - [`render`]: dir-refs to `<root>/snapshots/<id>/<name>` mounts;
//! - [`idmap`]: the id map of containerd's uid/gid mapping labels, checked.
//! - [`untrusted`]: a policy's text, escaped and capped for statuses and logs.

pub mod idmap;
pub mod model;
pub mod render;
pub mod untrusted;
pub mod validate;

pub use idmap::IdMapError;
pub use model::*;
pub use render::{Mount, check_snapshotter_name, render_mounts, snapshot_dir};
pub use untrusted::{MAX_POLICY_TEXT, untrusted, untrusted_tail};
pub use validate::{
    Limits, NotAChain, ValidationError, check_chain, validate_layout, validate_mounts,
    validate_plan,
};
