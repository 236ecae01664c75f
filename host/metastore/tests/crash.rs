//! Kill -9 while concurrent writers commit: after reopening, every write
//! whose `write` call had returned, and every record a read had returned,
//! is there. The child is this test binary
//! re-run with an environment variable naming the metastore root.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use wasmsnap_metastore::{Error, Kind, Metastore, Reads, Usage};

const CHILD_ROOT: &str = "WASMSNAP_METASTORE_CRASH_CHILD_ROOT";
const WRITERS: usize = 6;

/// The child: writers commit layers forever, printing each acknowledged one.
#[test]
fn crash_child() {
    let Ok(root) = std::env::var(CHILD_ROOT) else { return };
    let store = Arc::new(Metastore::open(root.as_ref()).unwrap());
    let run: String = std::env::var("WASMSNAP_METASTORE_CRASH_RUN").unwrap();
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let store = store.clone();
            let run = run.clone();
            std::thread::spawn(move || {
                let mut parent: Option<String> = None;
                for i in 0.. {
                    let key = format!("run{run}/t{t}/extract-{i}");
                    let name = format!("run{run}/t{t}/layer-{i}");
                    let rec = store
                        .write(|tx| {
                            tx.create(&key, Kind::Active, parent.as_deref(), BTreeMap::new())?;
                            tx.commit(&key, &name, BTreeMap::new(), Usage { size: i, inodes: 1 })
                        })
                        .unwrap();
                    // Every fourth layer a view is made and removed again.
                    if i % 4 == 0 {
                        let view = format!("{name}/view");
                        store
                            .write(|tx| tx.create(&view, Kind::View, Some(&name), BTreeMap::new()))
                            .unwrap();
                        store.write(|tx| tx.remove(&view)).unwrap();
                    }
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {name} {}", rec.id).unwrap();
                    out.flush().unwrap();
                    parent = Some(name);
                }
            })
        })
        .collect();
    // A reader reports what it saw: a read reply must not show anything a
    // crash could still take back.
    let reader = std::thread::spawn(move || {
        let filter = wasmsnap_metastore::parse_filters(&["kind==committed".into()]).unwrap();
        let mut reported = std::collections::HashSet::new();
        loop {
            let seen = store
                .read(|tx| {
                    let mut seen = Vec::new();
                    tx.list(&filter, |rec| {
                        seen.push((rec.name, rec.id));
                        Ok(())
                    })?;
                    Ok(seen)
                })
                .unwrap();
            let mut out = std::io::stdout().lock();
            for (name, id) in seen {
                if reported.insert(id) {
                    writeln!(out, "seen {name} {id}").unwrap();
                }
            }
            out.flush().unwrap();
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    reader.join().unwrap();
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if std::env::var(CHILD_ROOT).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(String, u64)> = Vec::new();
    for run in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ROOT, dir.path())
            .env("WASMSNAP_METASTORE_CRASH_RUN", run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 40 + run * 37;
        let mut seen = 0;
        while seen < kill_after {
            let line = lines.next().expect("child ended early").unwrap();
            if let Some((name, id)) = acknowledged(&line) {
                acked.push((name, id));
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines already in the pipe were acknowledged before the kill.
        acked.extend(lines.filter_map(|line| acknowledged(&line.unwrap())));
        acked.sort();
        acked.dedup();

        let store = Metastore::open(dir.path()).unwrap();
        store
            .read(|tx| {
                for (name, id) in &acked {
                    let rec = tx
                        .get(name)
                        .map_err(|e| Error::Storage(format!("acknowledged {name} lost: {e}")))?;
                    assert_eq!(rec.id, *id);
                    assert_eq!(rec.kind, Kind::Committed);
                    // Each chain is intact: parents precede children.
                    let ids = tx.parent_ids(&rec)?;
                    assert!(ids.windows(2).all(|w| w[0] > w[1]) && ids.iter().all(|p| *p < rec.id));
                }
                let all = tx.ids()?;
                assert!(acked.iter().all(|(_, id)| all.contains(id)));
                Ok(())
            })
            .unwrap();
        let max_id = acked.iter().map(|(_, id)| *id).max().unwrap();
        let (fresh, _) = store
            .write(|tx| tx.create(&format!("probe{run}"), Kind::View, None, BTreeMap::new()))
            .unwrap();
        assert!(fresh.id > max_id, "ids are not reused after a crash");
    }
}

/// An `ack <name> <id>` (a write returned) or `seen <name> <id>` (a read
/// returned it) line of the child.
fn acknowledged(line: &str) -> Option<(String, u64)> {
    let rest = line.strip_prefix("ack ").or_else(|| line.strip_prefix("seen "))?;
    let (name, id) = rest.rsplit_once(' ')?;
    Some((name.to_owned(), id.parse().ok()?))
}
