//! A read transaction: a consistent snapshot of the metastore.

use std::sync::Arc;

use redb::{ReadOnlyTable, ReadTransaction};

use crate::chain_cache::ChainCache;
use crate::error::Error;
use crate::reads::{Tables, delegate_reads};
use crate::tables::{CHILDREN, IDS, RECORDS};

type ReadTables = Tables<
    ReadOnlyTable<&'static str, &'static [u8]>,
    ReadOnlyTable<u64, (u64, &'static str)>,
    ReadOnlyTable<(u64, u64), ()>,
>;

/// Reads only; see [`Reads`](crate::Reads) for what it offers.
pub struct ReadTx {
    pub(crate) tables: ReadTables,
}

impl ReadTx {
    pub(crate) fn open(txn: &ReadTransaction, chains: &Arc<ChainCache>) -> Result<ReadTx, Error> {
        Ok(ReadTx {
            tables: Tables {
                records: txn.open_table(RECORDS)?,
                ids: txn.open_table(IDS)?,
                children: txn.open_table(CHILDREN)?,
                chains: Some(chains.clone()),
            },
        })
    }
}

delegate_reads!(ReadTx);
