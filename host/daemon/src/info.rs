//! What the core's API hands out and takes in about a snapshot:
//! containerd's `Info`, `Usage` and the Update request, as the core's own
//! types. The wire layer converts these, and never sees how the metastore
//! stores a record.

use std::collections::BTreeMap;

pub use wasmsnap_plan::{Kind, Mount};

pub type Labels = BTreeMap<String, String>;

/// A point in time as containerd sends it: seconds since the epoch and
/// nanoseconds within the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// A snapshot as Stat, Update and List answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub kind: Kind,
    pub parent: Option<String>,
    pub labels: Labels,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// Disk usage of a snapshot's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// An Update request: which snapshot, and the fields the mask names.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct InfoUpdate {
    pub name: String,
    /// Only checked if the mask names it (only labels can change).
    pub kind: Option<Kind>,
    pub parent: Option<String>,
    pub labels: Labels,
}

impl From<wasmsnap_metastore::Record> for Info {
    fn from(r: wasmsnap_metastore::Record) -> Self {
        Info {
            name: r.name,
            kind: r.kind,
            parent: r.parent,
            labels: r.labels,
            created: r.created.into(),
            updated: r.updated.into(),
        }
    }
}

impl From<wasmsnap_metastore::Timestamp> for Timestamp {
    fn from(t: wasmsnap_metastore::Timestamp) -> Self {
        Timestamp { secs: t.secs, nanos: t.nanos }
    }
}

impl From<wasmsnap_metastore::Usage> for Usage {
    fn from(u: wasmsnap_metastore::Usage) -> Self {
        Usage { size: u.size, inodes: u.inodes }
    }
}

impl From<Usage> for wasmsnap_metastore::Usage {
    fn from(u: Usage) -> Self {
        wasmsnap_metastore::Usage { size: u.size, inodes: u.inodes }
    }
}

impl From<wasmsnap_fs::Usage> for Usage {
    fn from(u: wasmsnap_fs::Usage) -> Self {
        Usage { size: u.size, inodes: u.inodes }
    }
}

impl From<InfoUpdate> for wasmsnap_metastore::UpdateInfo {
    fn from(u: InfoUpdate) -> Self {
        wasmsnap_metastore::UpdateInfo {
            name: u.name,
            kind: u.kind,
            parent: u.parent,
            labels: u.labels,
        }
    }
}
