//! A write transaction: containerd's storage operations (`snapshots/storage`),
//! each checking everything before it writes anything.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableTable, Table, WriteTransaction};

use crate::codec;
use crate::error::{Error, quoted};
use crate::reads::{Tables, delegate_reads};
use crate::record::{Kind, Record, SnapshotId, Timestamp, UpdateInfo, Usage, kind_name};
use crate::redo_log::Change;
use crate::tables::{CHILDREN, IDS, META, META_NEXT_ID, NO_PARENT, RECORDS};
use crate::validate;

type WriteTables<'txn> = Tables<
    Table<'txn, &'static str, &'static [u8]>,
    Table<'txn, u64, (u64, &'static str)>,
    Table<'txn, (u64, u64), ()>,
>;

/// Reads (see [`Reads`](crate::Reads)) and writes; everything done through
/// one `WriteTx` commits or aborts together. Every row written goes through
/// the `put_*`/`delete_*` methods below, which also note it for the redo log.
pub struct WriteTx<'txn> {
    pub(crate) tables: WriteTables<'txn>,
    meta: Table<'txn, &'static str, u64>,
    /// The rows changed so far, with their new values: this transaction's
    /// redo log entry.
    changes: Vec<Change>,
    /// The lowest id this process may still hand out: ids of aborted
    /// transactions are not handed out again either.
    id_floor: &'txn AtomicU64,
}

delegate_reads!(WriteTx<'_>);

impl<'txn> WriteTx<'txn> {
    pub(crate) fn open(
        txn: &'txn WriteTransaction,
        id_floor: &'txn AtomicU64,
    ) -> Result<WriteTx<'txn>, Error> {
        Ok(WriteTx {
            tables: Tables {
                records: txn.open_table(RECORDS)?,
                ids: txn.open_table(IDS)?,
                children: txn.open_table(CHILDREN)?,
                // What this transaction sees may still roll back.
                chains: None,
            },
            meta: txn.open_table(META)?,
            changes: Vec::new(),
            id_floor,
        })
    }

    /// The rows this transaction changed (its tables close).
    pub(crate) fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    /// Inserts an active or view snapshot on top of the committed `parent`
    /// (`None` or `""`: no parent). Returns the record and its parents' ids,
    /// nearest first. The content directory is set later, with
    /// [`set_content`](Self::set_content) (or given to
    /// [`create_reserved`](Self::create_reserved)).
    ///
    /// Errors as containerd's `CreateSnapshot`, checked in its order: missing
    /// parent NotFound, then key taken AlreadyExists; except that a parent
    /// that is not committed is FailedPrecondition here (InvalidArgument there).
    /// [`Reads::check_create`](crate::Reads::check_create) runs the same
    /// checks without writing.
    pub fn create(
        &mut self,
        key: &str,
        kind: Kind,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<(Record, Vec<SnapshotId>), Error> {
        let (rec, parent) = self.create_with(None, key, kind, parent, labels, None)?;
        let mut parent_ids = Vec::new();
        if let Some(parent) = &parent {
            parent_ids.push(parent.id);
            parent_ids.extend(self.tables.parent_ids(parent)?);
        }
        Ok((rec, parent_ids))
    }

    /// [`create`](Self::create) with an id taken earlier from
    /// [`Metastore::reserve_id`](crate::Metastore::reserve_id), so that the
    /// caller could build the snapshot's directory before this transaction
    /// (and outside the write lock), and with its content directory known.
    /// A Storage error if the id has a record.
    ///
    /// Returns the parent's id rather than the chain: a committed
    /// snapshot's parent never changes and ids are never reused, so the
    /// caller that read the chain before compares the ids alone (a walk of
    /// a deep chain costs tens of µs).
    pub fn create_reserved(
        &mut self,
        id: SnapshotId,
        key: &str,
        kind: Kind,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        content: Option<String>,
    ) -> Result<(Record, Option<SnapshotId>), Error> {
        let (rec, parent) = self.create_with(Some(id), key, kind, parent, labels, content)?;
        Ok((rec, parent.map(|p| p.id)))
    }

    /// The record made, and its parent's.
    fn create_with(
        &mut self,
        reserved: Option<SnapshotId>,
        key: &str,
        kind: Kind,
        parent: Option<&str>,
        mut labels: BTreeMap<String, String>,
        content: Option<String>,
    ) -> Result<(Record, Option<Record>), Error> {
        let parent = self.tables.check_create(key, kind, parent, &labels)?;
        let id = match reserved {
            Some(id) => self.use_reserved_id(id)?,
            None => self.allocate_id()?,
        };
        let now = Timestamp::now();
        validate::drop_empty_values(&mut labels);
        let rec = Record {
            id,
            name: key.to_owned(),
            kind,
            parent: parent.as_ref().map(|p| p.name.clone()),
            labels,
            created: now,
            updated: now,
            usage: None,
            content,
        };
        self.put(&rec)?;
        let parent_id = parent.as_ref().map_or(NO_PARENT, |p| p.id);
        self.put_id(id, parent_id, key)?;
        if let Some(parent) = &parent {
            self.put_child(parent.id, id)?;
        }
        Ok((rec, parent))
    }

    /// Records which directory holds the snapshot's content (`None` clears it).
    pub fn set_content(&mut self, key: &str, content: Option<String>) -> Result<(), Error> {
        validate::key("snapshot key", key)?;
        let mut rec = self.tables.get(key)?;
        rec.content = content;
        self.put(&rec)
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`:
    /// same id and parent, fresh created == updated, `labels` replacing the
    /// old ones, `usage` stored. Errors in containerd's order: `name` taken
    /// AlreadyExists, `key` missing NotFound, `key` not active FailedPrecondition.
    pub fn commit(
        &mut self,
        key: &str,
        name: &str,
        mut labels: BTreeMap<String, String>,
        usage: Usage,
    ) -> Result<Record, Error> {
        validate::key("snapshot key", key)?;
        validate::key("committed name", name)?;
        validate::labels(name, &labels)?;
        if self.tables.contains(name)? {
            return Err(Error::AlreadyExists(format!(
                "cannot commit {} as {}: snapshot {} already exists",
                quoted(key),
                quoted(name),
                quoted(name)
            )));
        }
        let active = self.tables.get(key)?;
        if active.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {} is {}, not active: only an active snapshot can be committed",
                quoted(key),
                kind_name(active.kind)
            )));
        }
        let parent_id = self.tables.parent_id_of(active.id)?.unwrap_or(NO_PARENT);

        let now = Timestamp::now();
        validate::drop_empty_values(&mut labels);
        let committed = Record {
            name: name.to_owned(),
            kind: Kind::Committed,
            labels,
            created: now,
            updated: now,
            usage: Some(usage),
            ..active
        };
        self.delete_record(key)?;
        self.put(&committed)?;
        self.put_id(committed.id, parent_id, name)?;
        Ok(committed)
    }

    /// Re-parents the active snapshot `key`, created without a parent, onto
    /// the committed snapshot `parent`, as containerd's `CommitActive` does
    /// with a parent (2.2+, its parallel unpack); the caller commits it in
    /// the same transaction, so the two happen together or not at all.
    /// `parent` equal to the current parent changes nothing.
    ///
    /// Errors, as containerd's: `key` missing NotFound, not active
    /// FailedPrecondition, already on another parent InvalidArgument,
    /// `parent` missing NotFound, not committed FailedPrecondition; and a
    /// parent whose chain reaches `key` (a cycle) FailedPrecondition.
    pub fn rebase(&mut self, key: &str, parent: &str) -> Result<(), Error> {
        validate::key("snapshot key", key)?;
        validate::key("parent", parent)?;
        let mut active = self.tables.get(key)?;
        if active.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {} is {}, not active: only an active snapshot can be committed",
                quoted(key),
                kind_name(active.kind)
            )));
        }
        match active.parent.as_deref() {
            Some(current) if current == parent => return Ok(()),
            Some(current) => {
                return Err(Error::InvalidArgument(format!(
                    "cannot change parent of active snapshot {} on commit: its parent is {}, not {}",
                    quoted(key),
                    quoted(current),
                    quoted(parent)
                )));
            }
            None => {}
        }
        let new_parent = self.tables.committed_parent(key, parent)?;
        if new_parent.id == active.id || self.tables.parent_ids(&new_parent)?.contains(&active.id) {
            return Err(Error::FailedPrecondition(format!(
                "cannot commit {} onto parent {}: {} is in that parent's own chain (a cycle)",
                quoted(key),
                quoted(parent),
                quoted(key)
            )));
        }
        active.parent = Some(new_parent.name.clone());
        self.put(&active)?;
        self.put_id(active.id, new_parent.id, key)?;
        self.put_child(new_parent.id, active.id)?;
        Ok(())
    }

    /// Deletes the record of `key` and returns it. A snapshot that is the
    /// parent of another is FailedPrecondition ("cannot remove snapshot with
    /// child", as containerd says it).
    pub fn remove(&mut self, key: &str) -> Result<Record, Error> {
        validate::key("snapshot key", key)?;
        let rec = self.tables.get(key)?;
        if let Some(child) = self.tables.first_child(rec.id)? {
            let child_key = self.tables.key_of(child)?.unwrap_or_else(|| format!("id {child}"));
            return Err(Error::FailedPrecondition(format!(
                "cannot remove snapshot with child: {} is the parent of {}",
                quoted(key),
                quoted(&child_key)
            )));
        }
        let parent_id = self.tables.parent_id_of(rec.id)?;
        self.delete_record(key)?;
        self.delete_id(rec.id)?;
        if let Some(parent_id) = parent_id {
            self.delete_child(parent_id, rec.id)?;
        }
        Ok(rec)
    }

    /// containerd's `UpdateInfo`: only labels change. An empty `fieldpaths`
    /// replaces all labels; `labels` replaces all labels; `labels.<key>` sets
    /// that one label from `info.labels` or deletes it when absent or empty.
    /// Any other path (`name`, `kind`, `parent`, ...) is InvalidArgument.
    /// `updated` becomes now.
    pub fn update(&mut self, info: UpdateInfo, fieldpaths: &[String]) -> Result<Record, Error> {
        validate::key("snapshot name", &info.name)?;
        let mut rec = self.tables.get(&info.name)?;
        let mut labels =
            if fieldpaths.is_empty() { info.labels.clone() } else { rec.labels.clone() };
        for path in fieldpaths {
            if let Some(label) = path.strip_prefix("labels.") {
                let value = info.labels.get(label).cloned().unwrap_or_default();
                labels.insert(label.to_owned(), value);
            } else if path == "labels" {
                labels = info.labels.clone();
            } else {
                return Err(Error::InvalidArgument(format!(
                    "cannot update {} field on snapshot {}: only \"labels\" and \"labels.<key>\" can be updated",
                    quoted(path),
                    quoted(&info.name)
                )));
            }
        }
        validate::labels(&info.name, &labels)?;
        validate::drop_empty_values(&mut labels);
        rec.labels = labels;
        rec.updated = Timestamp::now();
        self.put(&rec)?;
        Ok(rec)
    }

    fn put(&mut self, rec: &Record) -> Result<(), Error> {
        let value = codec::encode(rec);
        self.tables.records.insert(rec.name.as_str(), value.as_slice())?;
        self.changes.push(Change::PutRecord(rec.name.clone(), value));
        Ok(())
    }

    fn delete_record(&mut self, key: &str) -> Result<(), Error> {
        self.tables.records.remove(key)?;
        self.changes.push(Change::DeleteRecord(key.to_owned()));
        Ok(())
    }

    fn put_id(&mut self, id: SnapshotId, parent_id: SnapshotId, key: &str) -> Result<(), Error> {
        self.tables.ids.insert(id, (parent_id, key))?;
        self.changes.push(Change::PutId(id, parent_id, key.to_owned()));
        Ok(())
    }

    fn delete_id(&mut self, id: SnapshotId) -> Result<(), Error> {
        self.tables.ids.remove(id)?;
        self.changes.push(Change::DeleteId(id));
        Ok(())
    }

    fn put_child(&mut self, parent_id: SnapshotId, id: SnapshotId) -> Result<(), Error> {
        self.tables.children.insert((parent_id, id), ())?;
        self.changes.push(Change::PutChild(parent_id, id));
        Ok(())
    }

    fn delete_child(&mut self, parent_id: SnapshotId, id: SnapshotId) -> Result<(), Error> {
        self.tables.children.remove((parent_id, id))?;
        self.changes.push(Change::DeleteChild(parent_id, id));
        Ok(())
    }

    /// The next id: persisted and increasing; within this process not
    /// handed out again even if this transaction aborts (the daemon may
    /// have made its directory already). See the crate's note on ids.
    fn allocate_id(&mut self) -> Result<SnapshotId, Error> {
        // The floor starts at the stored next id when the store opens and
        // only rises; the stored one runs a block ahead of it.
        let id = take_id(self.id_floor)?;
        self.cover_id(id)?;
        Ok(id)
    }

    /// Records that `id` (reserved outside this transaction) is used, so the
    /// stored next id stays above every id that has a record.
    fn use_reserved_id(&mut self, id: SnapshotId) -> Result<SnapshotId, Error> {
        if id == NO_PARENT || self.tables.ids.get(id)?.is_some() {
            return Err(Error::Storage(format!("reserved snapshot id {id} is not free")));
        }
        self.cover_id(id)?;
        Ok(id)
    }

    /// Raises the stored next id past `id` when it is not already: by a
    /// block of [`ID_BLOCK`] ids, so that only one create in a block writes
    /// the meta table (one page less per commit for the others). The ids
    /// a restart skips are never used; ids are 64 bits.
    fn cover_id(&mut self, id: SnapshotId) -> Result<(), Error> {
        if id >= self.stored_next_id()? {
            let next = id
                .checked_add(ID_BLOCK)
                .ok_or_else(|| Error::Storage("snapshot ids exhausted".into()))?;
            self.meta.insert(META_NEXT_ID, next)?;
            self.changes.push(Change::PutMeta(META_NEXT_ID.to_owned(), next));
        }
        Ok(())
    }

    fn stored_next_id(&self) -> Result<SnapshotId, Error> {
        self.meta
            .get(META_NEXT_ID)?
            .map(|v| v.value())
            .filter(|&id| id != NO_PARENT)
            .ok_or_else(|| Error::Storage("meta table has no next id".into()))
    }
}

/// How far ahead of the ids in use the stored next id is set.
const ID_BLOCK: u64 = 1024;

/// Hands out `floor` (the lowest id this process may still hand out: it
/// starts at the stored next id when the store opens; ids of aborted
/// transactions and reserved ids are not handed out again) and raises it
/// past. Atomic: ids are also reserved outside write transactions.
pub(crate) fn take_id(floor: &AtomicU64) -> Result<SnapshotId, Error> {
    floor
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |id| id.checked_add(1))
        .map_err(|_| Error::Storage("snapshot ids exhausted".into()))
}
