//! The redb tables and what each holds. Bump [`SCHEMA_VERSION`] on any change
//! to a table or to the record encoding.

use redb::TableDefinition;

/// The schema version this build writes and understands; stored in the
/// database, and a newer one is refused at open.
pub const SCHEMA_VERSION: u64 = 1;

/// key -> encoded record (see `codec`).
pub(crate) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// id -> (parent id or 0, key). Walks parent chains by id without decoding
/// records, and finds the key of an id (Cleanup, error messages).
pub(crate) const IDS: TableDefinition<u64, (u64, &str)> = TableDefinition::new("ids");
/// (parent id, child id) -> (). Keyed by ids, which Commit keeps, so a
/// commit renames nothing here.
pub(crate) const CHILDREN: TableDefinition<(u64, u64), ()> = TableDefinition::new("children");
/// Schema version, the next id to allocate, the redo log's id and the last
/// redo log entry a durable commit holds (see `redo_log`).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_NEXT_ID: &str = "next_id";
pub(crate) const META_LOG_ID: &str = "redo_log_id";
pub(crate) const META_REDO_APPLIED: &str = "redo_applied";

/// Id 0 is never allocated: in [`IDS`] it means "no parent".
pub(crate) const NO_PARENT: u64 = 0;
