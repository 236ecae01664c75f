//! # wasmsnap-guest
//!
//! Write a wasmsnap snapshot policy: implement [`Policy`] and export it with
//! one line of [`export_policy!`]. Build for `wasm32-wasip2`; the component
//! implements the `wasmsnap:policy@0.2.0` world in `wit/policy.wit` (with
//! the feature `wit-0-1`, the frozen 0.1.0 world in `wit/0.1.0/`).
//!
//! containerd 2.x's features come as recipes: [`recipes::overlay_mounts`]
//! and [`recipes::overlay_layout`] give a policy parallel unpack (`rebase`)
//! and user namespaces (`remap-ids`); declare them with
//! [`Policy::capabilities`] returning [`recipes::OVERLAY_CAPABILITIES`].
//!
//! ```
//! use wasmsnap_guest::*;
//!
//! struct Mine;
//! impl Policy for Mine {
//!     fn init(_config: &Config, _facts: &HostFacts) -> Result<Self, PolicyError> { Ok(Mine) }
//!     fn layout(&self, _s: &Snapshot) -> Result<Layout, PolicyError> {
//!         Ok(LayoutBuilder::new().mkdir("fs", 0o755).content("fs").build())
//!     }
//!     fn mounts(&self, s: &Snapshot) -> Result<Vec<Mount>, PolicyError> {
//!         Ok(vec![bind(s.dir("fs"), s.kind == Kind::View)])
//!     }
//! }
//! export_policy!(Mine);
//! ```
//!
//! ## Testing a policy
//!
//! Three levels, fastest first:
//!
//! 1. **Unit tests, native**: the policy is plain Rust, and
//!    `export_policy!` exports it only in the wasm build, so `cargo test`
//!    on your machine's target runs your `#[test]`s directly. The helpers
//!    in [`testing`] build the policy as the host would and describe
//!    snapshots as the host numbers them.
//! 2. **Case files**: `wasmsnap policy test my_policy.wasm tests/` loads
//!    the built component into the daemon's own engine and checks TOML
//!    cases: the layout, the rendered mounts, or the failure (declared
//!    error, trap, invalid plan). `--update` records the actual answers.
//! 3. **Mounted**: `wasmsnap policy test --mount ...` (root) creates the
//!    directories with the daemon's executor, mounts each plan and checks
//!    that every layer is visible, the nearest parent wins, writes land in
//!    the snapshot's own directory and views are read-only.
//!
//! `docs/policy-authoring.md` in the repository walks through all three.

mod adapter;
mod plan;
pub mod recipes;
pub mod testing;

#[doc(hidden)]
#[cfg(not(feature = "wit-0-1"))]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "snapshot-policy",
        pub_export_macro: true,
        export_macro_name: "__export_snapshot_policy",
        default_bindings_module: "wasmsnap_guest::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

#[doc(hidden)]
#[cfg(feature = "wit-0-1")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/0.1.0",
        world: "snapshot-policy",
        pub_export_macro: true,
        export_macro_name: "__export_snapshot_policy",
        default_bindings_module: "wasmsnap_guest::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

pub use adapter::{Adapter, Policy};
pub use bindings::wasmsnap::policy::types::{
    BindMount, CopyMode, CopyParentStep, DirRef, HostFacts, Kind, LayoutStep, MkdirStep, Mount,
    OtherMount, OverlayMount, PolicyError, Snapshot, SnapshotId, SnapshotLayout as Layout,
};
#[cfg(not(feature = "wit-0-1"))]
pub use bindings::wasmsnap::policy::types::{Capabilities, IdMap, IdRange};
pub use plan::{Config, LayoutBuilder, PARENT_CHAIN_ID_LABEL, bind, overlay};
#[cfg(not(feature = "wit-0-1"))]
pub use plan::{extraction, id_mapped};

/// Export a [`Policy`] implementation as the component's `policy` interface.
///
/// Use it once per policy crate: `export_policy!(MyPolicy);`
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        // Exported only in the wasm build: a native build (for `cargo test`)
        // cannot link the component model's export names.
        #[doc(hidden)]
        #[allow(dead_code)]
        type __WasmsnapExportedPolicy = $crate::Adapter<$policy>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_snapshot_policy!(__WasmsnapExportedPolicy with_types_in $crate::bindings);
    };
}
