//! wasmsnap's metastore: the snapshot records of one snapshotter, in redb
//! (`<root>/metadata.redb`), with containerd's storage semantics
//! (`snapshots/storage/bolt.go`), and containerd's filter language for List.
//!
//! - [`Metastore`]: open, then [`read`](Metastore::read) and
//!   [`write`](Metastore::write) transactions; a write is durable when
//!   `write` returns, and concurrent writes share one fsync (group commit).
//! - [`ReadTx`] / [`WriteTx`]: the reads of [`Reads`] on both; `create`,
//!   `set_content`, `commit`, `remove`, `update` on the write side.
//! - [`filter`]: [`parse_filters`] and [`Filter::matches`].
//!
//! One deliberate difference from containerd: creating on top of a parent
//! that exists but is not committed is FailedPrecondition (containerd says
//! InvalidArgument).

mod codec;
mod error;
pub mod filter;
mod group_commit;
mod read_tx;
mod reads;
mod record;
mod store;
mod tables;
mod validate;
mod write_tx;

pub use error::Error;
pub use filter::{Filter, FilterError, parse_filters};
pub use group_commit::CommitStats;
pub use read_tx::ReadTx;
pub use reads::Reads;
pub use record::{Kind, Record, SnapshotId, Timestamp, UpdateInfo, Usage};
pub use store::{FILE_NAME, Metastore};
pub use tables::SCHEMA_VERSION;
pub use validate::MAX_LABEL_BYTES;
pub use write_tx::WriteTx;
