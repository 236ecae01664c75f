//! Transactions: durability across reopen, ids, schema versions, aborts,
//! panics, nesting, and concurrent writers sharing fsyncs.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Barrier};

use common::*;
use wasmsnap_metastore::{Error, FILE_NAME, Filter, Kind, Metastore, Reads, SCHEMA_VERSION, Usage};

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (base, child, view) = {
        let store = Metastore::open(dir.path()).unwrap();
        let base = layer(&store, "base", None);
        let child = store
            .write(|tx| {
                tx.create("child", Kind::Active, Some("base"), labels(&[("l", "v")]))?;
                tx.set_content("child", Some("fs".into()))?;
                tx.commit(
                    "child",
                    "sha256:child",
                    labels(&[("c", "d")]),
                    Usage { size: 1 << 40, inodes: 3 },
                )
            })
            .unwrap();
        let (view, _) = create(&store, "view", Kind::View, Some("sha256:child")).unwrap();
        (base, child, view)
    };
    assert!(dir.path().join(FILE_NAME).is_file());

    let store = Metastore::open(dir.path()).unwrap();
    store
        .read(|tx| {
            assert_eq!(tx.get("base")?, base);
            assert_eq!(tx.get("sha256:child")?, child);
            assert_eq!(tx.get("view")?, view);
            assert_ne!(child.created.nanos % 1000, 1000, "nanoseconds kept");
            assert!(tx.has_children("base")? && tx.has_children("sha256:child")?);
            assert_eq!(tx.parent_ids(&view)?, [child.id, base.id]);
            assert_eq!(tx.ids()?, [base.id, child.id, view.id].into_iter().collect());
            Ok(())
        })
        .unwrap();
    // The stored next id ran a block of 1024 ahead of id 1: a reopen skips
    // the rest of the block.
    let (next, _) = create(&store, "next", Kind::Active, None).unwrap();
    assert_eq!(next.id, 1025);
}

#[test]
fn ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Metastore::open(dir.path()).unwrap();
        create(&store, "a", Kind::Active, None).unwrap();
        create(&store, "b", Kind::Active, None).unwrap();
        store.write(|tx| tx.remove("b")).unwrap();
        store.write(|tx| tx.remove("a")).unwrap();
        // Not even the id of an aborted transaction (its directory may exist).
        let aborted = store.write(|tx| {
            let (rec, _) = tx.create("c", Kind::Active, None, BTreeMap::new())?;
            Err::<(), _>(Error::Storage(format!("abort after allocating {}", rec.id)))
        });
        assert_eq!(aborted, Err(Error::Storage("abort after allocating 3".into())));
        assert_eq!(create(&store, "d", Kind::Active, None).unwrap().0.id, 4);
    }
    // Above every id handed out before, the aborted one too (the stored next
    // id runs a block of 1024 ahead).
    let store = Metastore::open(dir.path()).unwrap();
    assert_eq!(create(&store, "e", Kind::Active, None).unwrap().0.id, 1025);
}

#[test]
fn a_newer_or_older_schema_is_refused() {
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    for (version, needle) in [(SCHEMA_VERSION + 1, "newer"), (0, "older")] {
        let dir = tempfile::tempdir().unwrap();
        drop(Metastore::open(dir.path()).unwrap());
        {
            let db = redb::Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema_version", version).unwrap();
            txn.commit().unwrap();
        }
        let err = Metastore::open(dir.path()).err().expect("refused");
        let (code, message) = code(&err);
        assert_eq!(code, "Storage");
        assert!(
            message.contains(needle) && message.contains(&format!("version {version}")),
            "{message}"
        );
    }
}

#[test]
fn a_root_is_opened_by_one_metastore_at_a_time() {
    let (dir, _store) = open();
    let err = Metastore::open(dir.path()).err().expect("second open refused");
    assert_err::<()>(Err(err), "Storage", &["already open", FILE_NAME]);
}

#[test]
fn open_creates_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/overlay");
    Metastore::open(&root).unwrap();
    assert!(root.join(FILE_NAME).is_file());
}

#[test]
fn an_error_or_a_panic_aborts_everything_the_transaction_did() {
    let (_dir, store) = open();
    layer(&store, "base", None);
    let err = store
        .write(|tx| {
            tx.create("x", Kind::Active, Some("base"), BTreeMap::new())?;
            tx.remove("base").map(drop)
        })
        .unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)));

    let panicked = catch_unwind(AssertUnwindSafe(|| {
        store.write(|tx| {
            tx.create("y", Kind::Active, None, BTreeMap::new())?;
            tx.update(
                wasmsnap_metastore::UpdateInfo { name: "base".into(), ..Default::default() },
                &[],
            )?;
            panic!("daemon bug");
            #[allow(unreachable_code)]
            Ok::<(), Error>(())
        })
    }));
    assert!(panicked.is_err());

    store
        .read(|tx| {
            assert_eq!(tx.find("x")?, None);
            assert_eq!(tx.find("y")?, None);
            assert!(!tx.has_children("base")?);
            Ok(())
        })
        .unwrap();
    // Still usable after the panic.
    create(&store, "z", Kind::Active, Some("base")).unwrap();
}

#[test]
fn caller_errors_pass_through_write() {
    #[derive(Debug, PartialEq)]
    enum DaemonError {
        Meta(Error),
        Mkdir(&'static str),
    }
    impl From<Error> for DaemonError {
        fn from(e: Error) -> Self {
            DaemonError::Meta(e)
        }
    }
    let (_dir, store) = open();
    let out: Result<(), DaemonError> = store.write(|tx| {
        tx.create("x", Kind::Active, None, BTreeMap::new())?;
        Err(DaemonError::Mkdir("no space"))
    });
    assert_eq!(out, Err(DaemonError::Mkdir("no space")));
    let out: Result<(), DaemonError> =
        store.write(|tx| tx.remove("x").map(drop).map_err(Into::into));
    assert!(matches!(out, Err(DaemonError::Meta(Error::NotFound(_)))));
}

#[test]
fn a_nested_write_is_refused_and_a_nested_read_sees_the_committed_state() {
    let (_dir, store) = open();
    create(&store, "a", Kind::Active, None).unwrap();
    store
        .write(|tx| {
            tx.remove("a")?;
            let nested = store.write(|tx| tx.remove("a"));
            assert!(
                matches!(&nested, Err(Error::Storage(m)) if m.contains("nested")),
                "{nested:?}"
            );
            // A read inside the write sees the last commit, not this transaction.
            assert!(store.read(|r| r.find("a"))?.is_some());
            assert!(tx.find("a")?.is_none());
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(store.read(|tx| tx.find("a")).unwrap(), None);
    // Reads nest freely (a Stat inside a List callback).
    store
        .read(|outer| outer.list(&Filter::all(), |_| store.read(|inner| inner.ids().map(drop))))
        .unwrap();
}

/// Many threads writing at once: every acknowledged write is there, ids are
/// unique, and writers that fail or panic in the middle hang nobody.
#[test]
fn concurrent_writers_share_commits_and_never_hang() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Metastore::open(dir.path()).unwrap());
    let observed = Arc::new(Observed::default());
    store.observe_commits(observed.clone());
    layer(&store, "base", None);
    const THREADS: usize = 12;
    const ROUNDS: usize = 40;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut acked = Vec::new();
                for round in 0..ROUNDS {
                    let key = format!("t{t}-r{round}");
                    match round % 10 {
                        // A writer whose work fails after it changed things.
                        3 => {
                            let out = store.write(|tx| {
                                tx.create(&key, Kind::Active, Some("base"), BTreeMap::new())?;
                                Err::<(), _>(Error::Storage("mkdir failed".into()))
                            });
                            assert!(out.is_err());
                        }
                        // A writer that panics.
                        7 => {
                            let out = catch_unwind(AssertUnwindSafe(|| {
                                store.write(|tx| -> Result<(), Error> {
                                    tx.create(&key, Kind::Active, None, BTreeMap::new())?;
                                    panic!("bug");
                                })
                            }));
                            assert!(out.is_err());
                        }
                        _ => {
                            let name = format!("sha256:{key}");
                            let rec = store
                                .write(|tx| {
                                    tx.create(&key, Kind::Active, Some("base"), BTreeMap::new())?;
                                    tx.commit(&key, &name, BTreeMap::new(), Usage::default())
                                })
                                .unwrap();
                            // A read right after sees it.
                            assert_eq!(store.read(|tx| tx.get(&name)).unwrap().id, rec.id);
                            acked.push((name, rec.id));
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let acked: Vec<(String, u64)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(acked.len(), THREADS * ROUNDS * 8 / 10);
    let ids: std::collections::HashSet<u64> = acked.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), acked.len(), "ids are unique");
    let stats = store.commit_stats();
    assert!(stats.durable < stats.commits, "concurrent writers should share fsyncs: {stats:?}");
    // The observer saw each durable commit, and the groups cover every commit.
    let groups = observed.groups.lock().unwrap().clone();
    assert_eq!(groups.len() as u64, stats.durable);
    assert_eq!(groups.iter().sum::<u64>(), stats.commits);
    assert!(groups.iter().any(|g| *g > 1), "{groups:?}");

    drop(store);
    let store = Metastore::open(dir.path()).unwrap();
    store
        .read(|tx| {
            for (name, id) in &acked {
                assert_eq!(tx.get(name)?.id, *id);
            }
            assert_eq!(tx.ids()?.len(), acked.len() + 1);
            Ok(())
        })
        .unwrap();
}

/// Records the group size of each durable commit.
#[derive(Default)]
struct Observed {
    groups: std::sync::Mutex<Vec<u64>>,
}

impl wasmsnap_metastore::CommitObserver for Observed {
    fn durable_commit(&self, took: std::time::Duration, grouped: u64) {
        assert!(took < std::time::Duration::from_secs(60));
        self.groups.lock().unwrap().push(grouped);
    }
}

#[test]
fn try_write_takes_the_lock_only_if_it_is_free_and_flushes_as_write_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = Metastore::open(dir.path()).unwrap();
    assert_eq!(store.flush_cost(), None, "no flush yet");
    let made = store
        .try_write(|tx| tx.create("a", Kind::Active, None, labels(&[])))
        .unwrap()
        .expect("a free lock is taken");
    assert!(store.flush_cost().is_some(), "the write was flushed, and the flush timed");

    // While Cleanup's kind of reader holds writers off, try_write gives up
    // at once without calling its closure; write waits its turn.
    let (held, release) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            store
                .read_holding_writers(|_| {
                    held.wait();
                    release.wait();
                    Ok(())
                })
                .unwrap()
        });
        held.wait();
        let tried = store.try_write(|_| -> Result<(), Error> { panic!("called while held") });
        assert!(tried.unwrap().is_none());
        release.wait();
    });
    assert_eq!(store.read(|tx| tx.get("a")).unwrap(), made.0);
    assert!(store.try_write(|tx| tx.remove("a")).unwrap().is_some());
    // Durable: a reopen sees the removal.
    drop(store);
    let store = Metastore::open(dir.path()).unwrap();
    assert!(matches!(store.read(|tx| tx.get("a")), Err(Error::NotFound(_))));
}
