//! wasmsnap-daemon: the core of the wasmsnap daemon, a WebAssembly-pluggable
//! snapshotter for containerd.
//!
//! Layers, top to bottom (see `docs/architecture.md`):
//! - [`wire`]: containerd's gRPC API over a unix socket (tonic);
//! - [`service`]: the snapshotters served, by name;
//! - [`snapshotter`]: the transaction of each operation (its types in
//!   [`info`]), over the
//!   metastore (`wasmsnap-metastore`), the policy engine (`wasmsnap-engine`)
//!   and the filesystem executor (`wasmsnap-fs`).
//!
//! Around them: [`config`] and [`loader`] (config file to snapshotters),
//! [`daemon`] (signals, shutdown, the reactor; `spin`: its spin before it
//! sleeps; `hot_worker`: where writes run off it), [`socket`] (appears only
//! when it accepts), [`notify`] (systemd readiness), [`reload`] (SIGHUP),
//! [`recovery`] (at open, and the rebuild of trees a power loss took),
//! [`cancel`] (a caller that went away).

mod background;
mod cancel;
pub mod capabilities;
pub mod config;
pub mod daemon;
mod error;
mod hot_worker;
mod info;
pub mod loader;
pub mod metrics;
mod mount_cache;
mod notify;
mod rebase;
mod recovery;
pub mod reload;
mod service;
mod snapshotter;
mod socket;
mod spin;
pub mod wire;
