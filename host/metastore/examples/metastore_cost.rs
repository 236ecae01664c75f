//! What a metastore transaction costs: `cargo run -p wasmsnap-metastore
//! --release --example metastore_cost [DIR]` (DIR: where to put the database,
//! default a temp dir; put it on the disk the daemon will use, since a write
//! is one fsync).

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use wasmsnap_metastore::{Filter, Kind, Metastore, Reads, Usage, parse_filters};

const RECORDS: usize = 1000;
const CHAIN: usize = 128;
const WRITERS: usize = 8;

fn main() {
    let dir = match std::env::args().nth(1) {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let store = Arc::new(Metastore::open(dir.path()).unwrap());
    println!("metastore at {}", store.path().display());
    println!("{:<44} {:>7} {:>10} {:>10} {:>10}", "operation", "n", "mean µs", "p50 µs", "p99 µs");

    // A chain of committed layers, as an unpack leaves them.
    let mut parent: Option<String> = None;
    let write_samples = measure(CHAIN, |i| {
        let key = format!("k8s.io/1/extract-{i} sha256:{i:064x}");
        let name = format!("k8s.io/1/sha256:{i:064x}");
        let labels = labels(i);
        // As the daemon writes: the id reserved first, the content with it.
        let id = store.reserve_id().unwrap();
        store
            .write(|tx| {
                let (parent, fs) = (parent.as_deref(), Some("fs".into()));
                tx.create_reserved(id, &key, Kind::Active, parent, labels.clone(), fs)?;
                tx.commit(&key, &name, labels, Usage { size: 4096, inodes: 1 })
            })
            .unwrap();
        parent = Some(name);
    });
    report("write tx: create+commit (1 writer, fsync)", &write_samples);
    let top = parent.unwrap();

    let writes = measure(RECORDS - CHAIN, |i| {
        store
            .write(|tx| {
                tx.create(&format!("k8s.io/1/container-{i}"), Kind::Active, Some(&top), labels(i))
            })
            .unwrap();
    });
    report("write tx: create (1 writer, fsync)", &writes);

    let key = "k8s.io/1/container-500";
    report("read tx: get", &measure(10_000, |_| drop(store.read(|tx| tx.get(key)).unwrap())));
    report(
        &format!("read tx: get + parent_ids ({CHAIN} parents)"),
        &measure(2_000, |_| {
            store.read(|tx| tx.parent_ids(&tx.get(key)?)).unwrap();
        }),
    );
    let all = Filter::all();
    report(
        &format!("read tx: list all ({RECORDS} records)"),
        &measure(200, |_| store.read(|tx| tx.list(&all, |_| Ok(()))).unwrap()),
    );
    let lookup = parse_filters(&[format!(
        r#"labels."containerd.io/snapshot.ref"==sha256:{:064x},parent=="{top}""#,
        7
    )])
    .unwrap();
    report(
        "read tx: list with a remote-snapshot filter",
        &measure(200, |_| store.read(|tx| tx.list(&lookup, |_| Ok(()))).unwrap()),
    );
    report(
        "filter: parse the remote-snapshot filter",
        &measure(10_000, |_| {
            parse_filters(&[
                r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="sha256:def""#.into(),
            ])
            .unwrap();
        }),
    );

    // Concurrent writers: group commit shares fsyncs among them.
    let before = store.commit_stats();
    let per_writer = 100;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let start = Instant::now();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier, top) = (store.clone(), barrier.clone(), top.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..per_writer)
                    .map(|i| {
                        let key = format!("churn-{w}-{i}");
                        let t = Instant::now();
                        store
                            .write(|tx| tx.create(&key, Kind::Active, Some(&top), BTreeMap::new()))
                            .unwrap();
                        store.write(|tx| tx.remove(&key)).unwrap();
                        t.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let samples: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = start.elapsed();
    report(&format!("write tx x2: create+remove ({WRITERS} writers)"), &samples);
    let after = store.commit_stats();
    let commits = after.commits - before.commits;
    let fsyncs = after.durable - before.durable;
    println!(
        "  {WRITERS} writers: {:.0} write tx/s, {commits} commits shared {fsyncs} fsyncs ({:.1} per fsync)",
        commits as f64 / elapsed.as_secs_f64(),
        commits as f64 / fsyncs.max(1) as f64
    );
}

fn labels(i: usize) -> BTreeMap<String, String> {
    [("containerd.io/snapshot.ref".to_string(), format!("sha256:{i:064x}"))].into_iter().collect()
}

fn measure(n: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect()
}

fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = sorted.iter().map(|d| us(*d)).sum::<f64>() / sorted.len() as f64;
    let pct = |p: f64| us(sorted[((sorted.len() - 1) as f64 * p) as usize]);
    println!("{what:<44} {:>7} {mean:>10.1} {:>10.1} {:>10.1}", sorted.len(), pct(0.5), pct(0.99));
}
