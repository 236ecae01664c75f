//! The wire layer: containerd's gRPC API on one side, core calls on the
//! other. It decodes requests, picks the snapshotter by name, runs the
//! (blocking) operation on or off the reactor (`server` says which) and
//! maps errors to gRPC codes.
//! Beside it, on the same socket, wasmsnap's read-only admin API (`admin`).

mod admin;
mod convert;
pub mod proto;
mod server;

pub(crate) use admin::AdminApi;
pub use admin::client as admin_client;
pub(crate) use server::SnapshotsApi;
