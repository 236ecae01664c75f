//! Reads shared by read and write transactions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use redb::ReadableTable;

use crate::chain_cache::ChainCache;
use crate::codec;
use crate::error::{Error, quoted};
use crate::filter::Filter;
use crate::record::{Kind, Record, SnapshotId, kind_name};
use crate::tables::NO_PARENT;
use crate::validate;

/// What both [`ReadTx`](crate::ReadTx) and [`WriteTx`](crate::WriteTx) can
/// read. A write transaction reads its own uncommitted writes.
pub trait Reads {
    /// The record of `key`; NotFound names the key; an empty key is InvalidArgument.
    fn get(&self, key: &str) -> Result<Record, Error>;
    /// The record of `key`, or `None`.
    fn find(&self, key: &str) -> Result<Option<Record>, Error>;
    /// The ids of `rec`'s ancestors, nearest first.
    fn parent_ids(&self, rec: &Record) -> Result<Vec<SnapshotId>, Error>;
    /// The records of `rec`'s ancestors, nearest first.
    fn parent_chain(&self, rec: &Record) -> Result<Vec<Record>, Error>;
    /// Calls `f` with every record that `filter` matches, in key order.
    fn list(
        &self,
        filter: &Filter,
        f: impl FnMut(Record) -> Result<(), Error>,
    ) -> Result<(), Error>;
    /// Every allocated id still in use (for Cleanup).
    fn ids(&self) -> Result<HashSet<SnapshotId>, Error>;
    /// Whether any snapshot names `key` as its parent.
    fn has_children(&self, key: &str) -> Result<bool, Error>;
    /// The key of the snapshot with storage id `id`.
    fn key_of(&self, id: SnapshotId) -> Result<Option<String>, Error>;
    /// Whether [`WriteTx::create`](crate::WriteTx::create) of these
    /// arguments would succeed now, without writing: the same checks in the
    /// same order, the same error. Ok with the committed parent's record
    /// (`None` without a parent). Lets a caller do costly work before the
    /// write transaction only for a request that can succeed.
    fn check_create(
        &self,
        key: &str,
        kind: Kind,
        parent: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<Record>, Error>;
}

/// The three tables every read needs, over either transaction's table type.
pub(crate) struct Tables<R, I, C> {
    pub records: R,
    pub ids: I,
    pub children: C,
    /// Known chains of committed snapshots (read transactions only).
    pub chains: Option<Arc<ChainCache>>,
}

impl<R, I, C> Tables<R, I, C>
where
    R: ReadableTable<&'static str, &'static [u8]>,
    I: ReadableTable<u64, (u64, &'static str)>,
    C: ReadableTable<(u64, u64), ()>,
{
    pub fn find(&self, key: &str) -> Result<Option<Record>, Error> {
        match self.records.get(key)? {
            None => Ok(None),
            Some(bytes) => decode(key, bytes.value()).map(Some),
        }
    }

    pub fn get(&self, key: &str) -> Result<Record, Error> {
        validate::key("snapshot key", key)?;
        self.find(key)?
            .ok_or_else(|| Error::NotFound(format!("snapshot {} does not exist", quoted(key))))
    }

    pub fn contains(&self, key: &str) -> Result<bool, Error> {
        Ok(self.records.get(key)?.is_some())
    }

    /// The parent id of `id` as the ids table records it.
    pub fn parent_id_of(&self, id: SnapshotId) -> Result<Option<SnapshotId>, Error> {
        let entry = self
            .ids
            .get(id)?
            .ok_or_else(|| Error::NotFound(format!("snapshot id {id} is not in the metastore")))?;
        let (parent, _) = entry.value();
        Ok((parent != NO_PARENT).then_some(parent))
    }

    pub fn parent_ids(&self, rec: &Record) -> Result<Vec<SnapshotId>, Error> {
        let mut chain = Vec::new();
        let mut child = rec.id;
        // The nearest parent's chain was known already.
        let mut nearest_known = false;
        while let Some(parent) = self.parent_id_of(child)? {
            // A chain never comes back to a snapshot it passed (a rebase
            // checks that); one that does is corruption and would loop
            // forever. Ids need not fall along it: a layer of a parallel
            // unpack is created before the parent it is committed onto.
            // Quadratic, but chains are at most a few hundred long.
            if parent == rec.id || chain.contains(&parent) {
                return Err(Error::Storage(format!(
                    "corrupt parent chain of {}: id {child} names parent id {parent}",
                    quoted(&rec.name)
                )));
            }
            chain.push(parent);
            if let Some(known) = self.chains.as_ref().and_then(|c| c.get(parent)) {
                // Checked when it was walked; only the join is new.
                if let Some(&id) = known.iter().find(|id| **id == rec.id || chain.contains(id)) {
                    return Err(Error::Storage(format!(
                        "corrupt parent chain of {}: the chain of id {parent} comes back to id {id}",
                        quoted(&rec.name)
                    )));
                }
                chain.extend_from_slice(&known);
                nearest_known = chain.len() == known.len() + 1;
                break;
            }
            child = parent;
        }
        if let Some(chains) = &self.chains {
            if let Some((&parent, ancestors)) = chain.split_first().filter(|_| !nearest_known) {
                chains.put(parent, ancestors);
            }
            // Committed as this transaction sees it, not as the caller's
            // copy of the record says.
            if rec.kind == Kind::Committed
                && chains.get(rec.id).is_none()
                && self
                    .find(&rec.name)?
                    .is_some_and(|r| r.id == rec.id && r.kind == Kind::Committed)
            {
                chains.put(rec.id, &chain);
            }
        }
        Ok(chain)
    }

    pub fn parent_chain(&self, rec: &Record) -> Result<Vec<Record>, Error> {
        self.parent_ids(rec)?
            .into_iter()
            .map(|id| {
                let key = self.key_of(id)?.ok_or_else(|| {
                    Error::Storage(format!("parent id {id} of {} has no key", quoted(&rec.name)))
                })?;
                self.get(&key)
            })
            .collect()
    }

    pub fn list(
        &self,
        filter: &Filter,
        mut f: impl FnMut(Record) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for entry in self.records.iter()? {
            let (key, bytes) = entry?;
            let rec = decode(key.value(), bytes.value())?;
            if filter.matches(&rec) {
                f(rec)?;
            }
        }
        Ok(())
    }

    pub fn ids(&self) -> Result<HashSet<SnapshotId>, Error> {
        let mut ids = HashSet::new();
        for entry in self.ids.iter()? {
            ids.insert(entry?.0.value());
        }
        Ok(ids)
    }

    /// The id of one child of `id`, if it has any.
    pub fn first_child(&self, id: SnapshotId) -> Result<Option<SnapshotId>, Error> {
        let mut children = self.children.range((id, 0)..=(id, u64::MAX))?;
        match children.next() {
            None => Ok(None),
            Some(entry) => Ok(Some(entry?.0.value().1)),
        }
    }

    pub fn has_children(&self, key: &str) -> Result<bool, Error> {
        let rec = self.get(key)?;
        Ok(self.first_child(rec.id)?.is_some())
    }

    pub fn key_of(&self, id: SnapshotId) -> Result<Option<String>, Error> {
        Ok(self.ids.get(id)?.map(|entry| entry.value().1.to_owned()))
    }

    pub fn check_create(
        &self,
        key: &str,
        kind: Kind,
        parent: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<Record>, Error> {
        validate::key("snapshot key", key)?;
        if kind == Kind::Committed {
            return Err(Error::InvalidArgument(format!(
                "cannot create snapshot {} as committed: only active and view snapshots are created",
                quoted(key)
            )));
        }
        validate::labels(key, labels)?;
        let parent = match parent.filter(|p| !p.is_empty()) {
            None => None,
            Some(name) => Some(self.committed_parent(key, name)?),
        };
        if self.contains(key)? {
            return Err(Error::AlreadyExists(format!("snapshot {} already exists", quoted(key))));
        }
        Ok(parent)
    }

    pub(crate) fn committed_parent(&self, key: &str, parent: &str) -> Result<Record, Error> {
        let rec = self.find(parent)?.ok_or_else(|| {
            Error::NotFound(format!(
                "parent snapshot {} of {} does not exist",
                quoted(parent),
                quoted(key)
            ))
        })?;
        if rec.kind != Kind::Committed {
            return Err(Error::FailedPrecondition(format!(
                "parent snapshot {} of {} is {}, not committed",
                quoted(parent),
                quoted(key),
                kind_name(rec.kind)
            )));
        }
        Ok(rec)
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, Error> {
    codec::decode(key, bytes).map_err(|what| {
        Error::Storage(format!("corrupt record of snapshot {}: {what}", quoted(key)))
    })
}

/// Implements [`Reads`] for a transaction type by delegating to its `tables`.
macro_rules! delegate_reads {
    ($ty:ty) => {
        impl $crate::reads::Reads for $ty {
            fn get(&self, key: &str) -> Result<$crate::Record, $crate::Error> {
                self.tables.get(key)
            }
            fn find(&self, key: &str) -> Result<Option<$crate::Record>, $crate::Error> {
                self.tables.find(key)
            }
            fn parent_ids(
                &self,
                rec: &$crate::Record,
            ) -> Result<Vec<$crate::SnapshotId>, $crate::Error> {
                self.tables.parent_ids(rec)
            }
            fn parent_chain(
                &self,
                rec: &$crate::Record,
            ) -> Result<Vec<$crate::Record>, $crate::Error> {
                self.tables.parent_chain(rec)
            }
            fn list(
                &self,
                filter: &$crate::Filter,
                f: impl FnMut($crate::Record) -> Result<(), $crate::Error>,
            ) -> Result<(), $crate::Error> {
                self.tables.list(filter, f)
            }
            fn ids(&self) -> Result<std::collections::HashSet<$crate::SnapshotId>, $crate::Error> {
                self.tables.ids()
            }
            fn has_children(&self, key: &str) -> Result<bool, $crate::Error> {
                self.tables.has_children(key)
            }
            fn key_of(&self, id: $crate::SnapshotId) -> Result<Option<String>, $crate::Error> {
                self.tables.key_of(id)
            }
            fn check_create(
                &self,
                key: &str,
                kind: $crate::Kind,
                parent: Option<&str>,
                labels: &std::collections::BTreeMap<String, String>,
            ) -> Result<Option<$crate::Record>, $crate::Error> {
                self.tables.check_create(key, kind, parent, labels)
            }
        }
    };
}
pub(crate) use delegate_reads;
