//! Concurrency soak: 32 clients, each on its own connection, doing mixed
//! operations on shared parents for a bounded time. No error but the
//! expected conflicts, no deadlock (an overall deadline), and the daemon's
//! memory, open file descriptors and threads are flat: measured at a quiet
//! point after warm-up and again at the end.
//!
//! `WASMSNAP_SOAK_SECS` sets the duration (default 20), `WASMSNAP_SOAK_SEED`
//! repeats a run's choices.

use crate::common;
use crate::stress;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, api};
use stress::*;
use tokio::sync::RwLock;
use tonic::{Code, Status};

const CLIENTS: usize = 32;
/// Shared committed parents: a chain in each snapshotter.
const CHAIN: [&str; 3] = ["layer-0", "layer-1", "layer-2"];
const SNAPSHOTTERS: [&str; 2] = ["overlay", "native"];
/// Keys every client tries to create: all but one get AlreadyExists.
const CONTESTED: usize = 4;

#[derive(Default, Debug)]
struct Tally {
    ops: u64,
    already_exists: u64,
    has_children: u64,
    unexpected: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
    threads: usize,
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_clients_on_shared_parents() {
    let secs: u64 = std::env::var("WASMSNAP_SOAK_SECS")
        .ok()
        .map_or(20, |v| v.parse().expect("WASMSNAP_SOAK_SECS"));
    let seed = Rng::seed_from_env("WASMSNAP_SOAK_SEED");
    let d = Daemon::start();
    let pid = d.pid().unwrap();
    let mut c = d.client().await;
    for s in SNAPSHOTTERS {
        let mut parent = String::new();
        for name in CHAIN {
            let key = format!("extract-{name}");
            let m = c.prepare(prepare(s, &key, &parent)).await.unwrap().into_inner().mounts;
            std::fs::write(writable_dir(&m).unwrap().join(name), name.repeat(1000)).unwrap();
            c.commit(commit(s, name, &key)).await.unwrap();
            parent = name.to_string();
        }
    }

    let idle = quiet_sample(&d, &RwLock::new(()), pid).await;

    // Clients hold `pause` for reading during each operation; the sampler
    // takes it for writing to measure a quiet daemon.
    let pause = Arc::new(RwLock::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut rng = Rng::new(seed);
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (socket, pause, stop, seed) =
            (d.socket.clone(), pause.clone(), stop.clone(), rng.next());
        clients
            .push(tokio::spawn(async move { run_client(client, socket, pause, stop, seed).await }));
    }

    let overall = Duration::from_secs(secs + 120);
    let started = Instant::now();
    let outcome = tokio::time::timeout(overall, async {
        tokio::time::sleep(Duration::from_secs(secs) / 4).await;
        let warm = quiet_sample(&d, &pause, pid).await;
        tokio::time::sleep(Duration::from_secs(secs).saturating_sub(started.elapsed())).await;
        stop.store(true, Ordering::SeqCst);
        let mut tally = Tally::default();
        let mut connections = Vec::new();
        for client in clients {
            let (t, connection) = client.await.expect("client task");
            tally.ops += t.ops;
            tally.already_exists += t.already_exists;
            tally.has_children += t.has_children;
            tally.unexpected.extend(t.unexpected);
            connections.push(connection);
        }
        // Still connected, as at warm-up.
        let end = quiet_sample(&d, &pause, pid).await;
        drop(connections);
        let disconnected = quiet_sample(&d, &pause, pid).await;
        (warm, end, disconnected, tally)
    })
    .await;
    let Ok((warm, end, disconnected, tally)) = outcome else {
        panic!(
            "deadlock? the soak did not finish within {overall:?} (seed {seed})\n{}",
            tail(&d.logs())
        );
    };
    eprintln!(
        "{CLIENTS} clients, {:.1?}, seed {seed}: {} operations ({:.0}/s), {} AlreadyExists and {} remove-with-children \
         conflicts (expected); daemon idle {idle:?}, after warm-up {warm:?}, at the end {end:?}, \
         clients gone {disconnected:?}",
        started.elapsed(),
        tally.ops,
        tally.ops as f64 / secs as f64,
        tally.already_exists,
        tally.has_children,
    );
    assert!(
        tally.unexpected.is_empty(),
        "unexpected errors (seed {seed}):\n{}",
        tally.unexpected.join("\n")
    );
    assert!(
        tally.already_exists > 0 && tally.has_children > 0,
        "the expected conflicts never happened: {tally:?}"
    );

    // Flat: the end of the run holds no more than warm-up did, within
    // allocator slack. A leak of one fd or a few KiB per operation would
    // show over these thousands of operations.
    let rss_slack = (warm.rss_kib / 4).max(24 << 10);
    assert!(end.rss_kib <= warm.rss_kib + rss_slack, "memory grew: {warm:?} -> {end:?}");
    assert!(end.fds <= warm.fds + 4, "file descriptors grew: {warm:?} -> {end:?}");
    // tokio's blocking pool grows with the busiest moment and shrinks after 10 s idle.
    assert!(end.threads <= warm.threads + 16, "threads grew: {warm:?} -> {end:?}");
    // The clients' connections are closed with them.
    assert!(
        disconnected.fds <= idle.fds + 4,
        "file descriptors outlive the clients: {idle:?} -> {disconnected:?}"
    );

    // Nothing was left behind: only the shared chains remain, each with
    // its directory, and nothing else on disk.
    let mut c = d.client().await;
    for s in SNAPSHOTTERS {
        c.cleanup(cleanup(s)).await.unwrap();
        let names: Vec<String> =
            list(&mut c, s, &[]).await.unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, CHAIN, "{s}: left behind");
        assert_eq!(entries(&d.snapshots_dir(s)).len(), CHAIN.len(), "{s}: directories left behind");
    }
}

/// Stops the clients between operations, lets the background deletions
/// finish (Cleanup waits for them), and measures the daemon.
async fn quiet_sample(d: &Daemon, pause: &RwLock<()>, pid: u32) -> Sample {
    let _quiet = pause.write().await;
    let mut c = d.client().await;
    for s in SNAPSHOTTERS {
        c.cleanup(cleanup(s)).await.unwrap();
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Sample { rss_kib: vm_rss_kib(pid), fds: fd_count(pid), threads: thread_count(pid) }
}

/// Runs until `stop`; returns its tally and its (still open) connection.
async fn run_client(
    client: usize,
    socket: std::path::PathBuf,
    pause: Arc<RwLock<()>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> (Tally, Client) {
    let mut c = common::connect(&socket).await;
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let _running = pause.read().await;
        n += 1;
        let s = *rng.pick(&SNAPSHOTTERS).unwrap();
        let parent = *rng.pick(&CHAIN).unwrap();
        let key = format!("c{client}-{n}");
        let result = match rng.below(100) {
            0..=34 => layer_on_top(&mut c, s, parent, &key, &mut rng).await,
            35..=49 => view_and_read(&mut c, s, parent, &key).await,
            50..=64 => active_with_usage(&mut c, s, parent, &key, &mut rng).await,
            65..=74 => contested(&mut c, s, n, &mut tally).await,
            75..=84 => remove_shared(&mut c, s, parent, &mut tally).await,
            85..=94 => label_shared(&mut c, s, parent, client, n).await,
            _ => c.cleanup(cleanup(s)).await.map(drop),
        };
        tally.ops += 1;
        if let Err(e) = result {
            tally.unexpected.push(format!(
                "client {client}, op {n} on {s}: {:?}: {}",
                e.code(),
                e.message()
            ));
        }
    }
    (tally, c)
}

/// Prepare on a shared parent, write, commit, prepare on top, clean up.
async fn layer_on_top(
    c: &mut Client,
    s: &str,
    parent: &str,
    key: &str,
    rng: &mut Rng,
) -> Result<(), Status> {
    let m = c.prepare(prepare(s, key, parent)).await?.into_inner().mounts;
    let len = rng.below(16 << 10) as usize;
    std::fs::write(writable_dir(&m).unwrap().join("data"), rng.bytes(len)).unwrap();
    let name = format!("{key}-committed");
    let mut req = commit(s, &name, key);
    req.labels = labels(&[("containerd.io/snapshot.ref", &name)]);
    c.commit(req).await?;
    let top = format!("{key}-top");
    c.prepare(prepare(s, &top, &name)).await?;
    let usage = c.usage(usage(s, &name)).await?.into_inner();
    if usage.size < len as i64 {
        return Err(Status::internal(format!(
            "usage of {name} is {usage:?}, {len} bytes were written"
        )));
    }
    c.remove(remove(s, &top)).await?;
    c.remove(remove(s, &name)).await?;
    Ok(())
}

async fn view_and_read(c: &mut Client, s: &str, parent: &str, key: &str) -> Result<(), Status> {
    c.view(view(s, key, parent)).await?;
    let m = c.mounts(mounts(s, key)).await?.into_inner().mounts;
    if m.is_empty() {
        return Err(Status::internal(format!("view {key} has no mounts")));
    }
    let info = c.stat(stat(s, key)).await?.into_inner().info.unwrap();
    if info.parent != parent || info.kind != api::Kind::View as i32 {
        return Err(Status::internal(format!("view {key} is {info:?}: not a view of {parent}")));
    }
    let children = list(c, s, &[&format!("parent=={parent},kind==view")]).await?;
    if !children.iter().any(|i| i.name == key) {
        return Err(Status::internal(format!("view {key} not listed among the views of {parent}")));
    }
    c.remove(remove(s, key)).await.map(drop)
}

async fn active_with_usage(
    c: &mut Client,
    s: &str,
    parent: &str,
    key: &str,
    rng: &mut Rng,
) -> Result<(), Status> {
    let mut req = prepare(s, key, parent);
    req.labels = labels(&[("containerd.io/gc.root", "soak")]);
    let m = c.prepare(req).await?.into_inner().mounts;
    let len = rng.below(8 << 10) as usize;
    std::fs::write(writable_dir(&m).unwrap().join("data"), rng.bytes(len)).unwrap();
    c.usage(usage(s, key)).await?;
    c.update(update(s, key, labels(&[("touched", "yes")]), &["labels.touched"])).await?;
    c.remove(remove(s, key)).await.map(drop)
}

/// Everyone prepares the same few keys: exactly one wins each time.
async fn contested(c: &mut Client, s: &str, n: u64, tally: &mut Tally) -> Result<(), Status> {
    let key = format!("contested-{}", n as usize % CONTESTED);
    match c.prepare(prepare(s, &key, "")).await {
        Ok(_) => c.remove(remove(s, &key)).await.map(drop),
        Err(e) if e.code() == Code::AlreadyExists && e.message().contains(&key) => {
            tally.already_exists += 1;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The shared layers always have children (the chain itself), so their
/// removal is refused.
async fn remove_shared(
    c: &mut Client,
    s: &str,
    parent: &str,
    tally: &mut Tally,
) -> Result<(), Status> {
    let target = if parent == CHAIN[2] { CHAIN[1] } else { parent };
    match c.remove(remove(s, target)).await {
        Ok(_) => {
            Err(Status::internal(format!("removed shared parent {target}, which has children")))
        }
        Err(e)
            if e.code() == Code::FailedPrecondition
                && e.message().contains("cannot remove snapshot with child") =>
        {
            tally.has_children += 1;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Many writers on the same record: last writer wins, nobody fails.
async fn label_shared(
    c: &mut Client,
    s: &str,
    parent: &str,
    client: usize,
    n: u64,
) -> Result<(), Status> {
    let label = format!("soak/client-{}", client % 8);
    let value = if n.is_multiple_of(5) { String::new() } else { format!("{n}") };
    let path = format!("labels.{label}");
    let info = c
        .update(update(
            s,
            parent,
            BTreeMap::from([(label.clone(), value.clone())]).into_iter().collect(),
            &[&path],
        ))
        .await?;
    let got = info.into_inner().info.unwrap().labels.get(&label).cloned().unwrap_or_default();
    if got != value {
        return Err(Status::internal(format!(
            "update of {parent} set {label}={value:?}, replied {got:?}"
        )));
    }
    Ok(())
}

fn tail(log: &str) -> &str {
    &log[log.len().saturating_sub(20_000)..]
}
