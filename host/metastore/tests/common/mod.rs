//! Helpers shared by the metastore's integration tests (real redb files in
//! temp dirs).
#![allow(dead_code)]

use std::collections::BTreeMap;

use tempfile::TempDir;
use wasmsnap_metastore::{Error, Kind, Metastore, Record, SnapshotId, Usage};

pub fn open() -> (TempDir, Metastore) {
    let dir = tempfile::tempdir().unwrap();
    let store = Metastore::open(dir.path()).unwrap();
    (dir, store)
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn create(
    store: &Metastore,
    key: &str,
    kind: Kind,
    parent: Option<&str>,
) -> Result<(Record, Vec<SnapshotId>), Error> {
    store.write(|tx| tx.create(key, kind, parent, BTreeMap::new()))
}

pub fn commit(store: &Metastore, key: &str, name: &str) -> Result<Record, Error> {
    store.write(|tx| tx.commit(key, name, BTreeMap::new(), Usage { size: 4096, inodes: 1 }))
}

/// An active `key` on `parent`, committed as `name`.
pub fn layer(store: &Metastore, name: &str, parent: Option<&str>) -> Record {
    let key = format!("extract {name}");
    create(store, &key, Kind::Active, parent).unwrap();
    commit(store, &key, name).unwrap()
}

/// The error's variant name and message, for asserting both.
pub fn code(err: &Error) -> (&'static str, &str) {
    match err {
        Error::NotFound(m) => ("NotFound", m),
        Error::AlreadyExists(m) => ("AlreadyExists", m),
        Error::FailedPrecondition(m) => ("FailedPrecondition", m),
        Error::InvalidArgument(m) => ("InvalidArgument", m),
        Error::Storage(m) => ("Storage", m),
    }
}

#[track_caller]
pub fn assert_err<T: std::fmt::Debug>(result: Result<T, Error>, want: &str, needles: &[&str]) {
    let err = result.expect_err("expected an error");
    let (got, message) = code(&err);
    assert_eq!(got, want, "{err}");
    for needle in needles {
        assert!(message.contains(needle), "{message:?} should mention {needle:?}");
    }
}
