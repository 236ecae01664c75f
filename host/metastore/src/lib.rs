//! wasmsnap's metastore: the snapshot records of one snapshotter, in redb
//! (`<root>/metadata.redb`), with containerd's storage semantics
//! (`snapshots/storage/bolt.go`), and containerd's filter language for List.
//!
//! - [`Metastore`]: open, then [`read`](Metastore::read) and
//!   [`write`](Metastore::write) (or [`write_long`](Metastore::write_long))
//!   transactions; a write is durable when `write` returns (its redo log
//!   entry flushed: `<root>/metadata.redo`, see the `redo_log` module),
//!   concurrent writes share one flush (group commit), and a read never
//!   reports what a crash could still take back.
//! - [`ReadTx`] / [`WriteTx`]: the reads of the [`Reads`] trait (import it)
//!   on both; `create`, `set_content`, `commit`, `remove`, `update` on the
//!   write side. The daemon reserves the id first (the policy names the
//!   content directory only once the id is known) and writes the record
//!   with it in one go (`create_reserved`).
//! - [`filter`]: [`parse_filters`] and [`Filter::matches`].
//!
//! Ids start at 1 and are never reused while a record has them or had them:
//! not after Remove, not after reopening. Within a process an id is handed
//! out once, even if its transaction aborts or a reserved id
//! ([`Metastore::reserve_id`]) is never used; after a restart such an id,
//! one no committed record ever had, can come again (recovery removes any
//! directory it left first). The stored next id runs up to 1024 ahead of the
//! ids in use, so that most creates leave the meta table alone: a restart
//! skips the rest of that block.
//!
//! Deliberate differences from containerd: creating on top of a parent that
//! exists but is not committed is FailedPrecondition (containerd says
//! InvalidArgument); an empty key is InvalidArgument everywhere; an invalid
//! regular expression in a filter is an error (see [`filter`]); a key is at
//! most [`MAX_KEY_BYTES`] (bolt's own limit) and one snapshot's labels at most
//! [`MAX_LABELS_TOTAL_BYTES`] in all, so every record fits in a gRPC message.

mod chain_cache;
mod codec;
mod error;
pub mod filter;
mod group_commit;
mod read_tx;
mod reads;
mod record;
mod redo_log;
mod store;
mod tables;
mod validate;
mod write_tx;

pub use error::Error;
pub use filter::{Filter, FilterError, parse_filters};
pub use group_commit::{CommitObserver, CommitStats};
pub use read_tx::ReadTx;
pub use reads::Reads;
pub use record::{Kind, Record, SnapshotId, Timestamp, UpdateInfo, Usage};
pub use redo_log::FILE_NAME as REDO_LOG_FILE_NAME;
pub use store::{FILE_NAME, Metastore};
pub use tables::SCHEMA_VERSION;
pub use validate::{MAX_KEY_BYTES, MAX_LABEL_BYTES, MAX_LABELS_TOTAL_BYTES, check_commit};
pub use write_tx::WriteTx;
