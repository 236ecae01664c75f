//! The wire layer: containerd's gRPC API on one side, core calls on the
//! other. It decodes requests, picks the snapshotter by name, runs the
//! (blocking) operation off the reactor and maps errors to gRPC codes.

mod convert;
pub mod proto;
mod server;

pub(crate) use server::SnapshotsApi;
