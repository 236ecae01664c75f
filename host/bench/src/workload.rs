//! The fixed workload, driven over gRPC against one snapshotter: what an
//! image unpack, a container start and the garbage collector ask of it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

use super::client::Client;
use super::stats::Samples;
use wasmsnap_daemon::wire::proto::snapshots as api;

/// How big the workload is.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Layers in the prepare+commit chain.
    pub depth: usize,
    /// Concurrent workers in the churn phase.
    pub workers: usize,
    /// Prepare+remove pairs each churn worker does.
    pub churn_per_worker: usize,
}

impl Shape {
    /// Views made on top of the chain (and later removed).
    pub fn views(&self) -> usize {
        self.depth.clamp(1, 32)
    }

    /// Passes over the layers for Stat, so that p99 has samples behind it.
    fn stat_passes(&self) -> usize {
        (500 / self.depth.max(1)).max(1)
    }

    fn mounts_passes(&self) -> usize {
        (500 / self.views()).max(1)
    }

    fn list_repeats(&self) -> usize {
        50
    }
}

/// The operations of the workload, in the order they run (and rows of the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Prepare then Commit of one layer (the pair, as an unpack does it).
    PrepareCommit,
    /// The Prepare half of it.
    Prepare,
    /// The Commit half of it.
    Commit,
    Stat,
    List,
    View,
    Mounts,
    RemoveView,
    /// One Prepare+Remove pair on top of the chain, by concurrent workers.
    Churn,
    RemoveChain,
}

impl Op {
    pub const ALL: [Op; 10] = [
        Op::PrepareCommit,
        Op::Prepare,
        Op::Commit,
        Op::Stat,
        Op::List,
        Op::View,
        Op::Mounts,
        Op::RemoveView,
        Op::Churn,
        Op::RemoveChain,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Op::PrepareCommit => "prepare+commit (chain)",
            Op::Prepare => "  prepare",
            Op::Commit => "  commit",
            Op::Stat => "stat (every layer)",
            Op::List => "list all",
            Op::View => "view on top",
            Op::Mounts => "mounts (views)",
            Op::RemoveView => "remove views",
            Op::Churn => "churn prepare+remove",
            Op::RemoveChain => "remove chain",
        }
    }
}

/// Every operation's samples of one run.
pub type RunSamples = HashMap<Op, Samples>;

/// Runs the workload once against `snapshotter` behind `client`; every key
/// starts with `prefix` so runs do not collide. Leaves nothing behind
/// except what the snapshotter's own Remove leaves (a Cleanup follows,
/// untimed).
pub async fn run(
    client: &Client,
    snapshotter: &str,
    prefix: &str,
    shape: Shape,
) -> anyhow::Result<RunSamples> {
    let mut out = RunSamples::new();
    let c = &mut client.clone();
    let layer = |i: usize| format!("{prefix}/sha256:{i:064x}");
    let labels = |i: usize| {
        HashMap::from([("containerd.io/snapshot.ref".to_string(), format!("sha256:{i:064x}"))])
    };

    // An unpack: prepare on top of the previous layer, commit it.
    let (mut pairs, mut prepares, mut commits) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..shape.depth {
        let key = format!("{prefix}/extract-{i} sha256:{i:064x}");
        let parent = if i == 0 { String::new() } else { layer(i - 1) };
        let started = Instant::now();
        c.prepare(api::PrepareSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.clone(),
            parent,
            labels: labels(i),
        })
        .await
        .with_context(|| format!("prepare {key}"))?;
        let prepared = Instant::now();
        c.commit(api::CommitSnapshotRequest {
            snapshotter: snapshotter.into(),
            name: layer(i),
            key: key.clone(),
            labels: labels(i),
            parent: String::new(),
        })
        .await
        .with_context(|| format!("commit {key}"))?;
        let done = Instant::now();
        prepares.latencies.push(prepared - started);
        commits.latencies.push(done - prepared);
        pairs.latencies.push(done - started);
    }
    let chain_wall: Duration = pairs.latencies.iter().sum();
    prepares.wall = prepares.latencies.iter().sum();
    commits.wall = commits.latencies.iter().sum();
    pairs.wall = chain_wall;
    out.insert(Op::PrepareCommit, pairs);
    out.insert(Op::Prepare, prepares);
    out.insert(Op::Commit, commits);
    let top = layer(shape.depth - 1);

    out.insert(
        Op::Stat,
        sequential(shape.stat_passes() * shape.depth, |n| {
            let (mut c, key) = (client.clone(), layer(n % shape.depth));
            async move {
                c.stat(api::StatSnapshotRequest {
                    snapshotter: snapshotter.into(),
                    key: key.clone(),
                })
                .await
                .with_context(|| format!("stat {key}"))?;
                Ok(())
            }
        })
        .await?,
    );

    let expected = shape.depth;
    out.insert(
        Op::List,
        sequential(shape.list_repeats(), |_| {
            let mut c = client.clone();
            async move {
                let mut stream = c
                    .list(api::ListSnapshotsRequest {
                        snapshotter: snapshotter.into(),
                        filters: vec![],
                    })
                    .await
                    .context("list")?
                    .into_inner();
                let mut seen = 0;
                while let Some(batch) = stream.message().await.context("list stream")? {
                    seen += batch.info.len();
                }
                anyhow::ensure!(
                    seen >= expected,
                    "list returned {seen} snapshots, expected at least {expected}"
                );
                Ok(())
            }
        })
        .await?,
    );

    let view = |j: usize| format!("{prefix}/view-{j}");
    out.insert(
        Op::View,
        sequential(shape.views(), |j| {
            let (mut c, key, parent) = (client.clone(), view(j), top.clone());
            async move {
                c.view(api::ViewSnapshotRequest {
                    snapshotter: snapshotter.into(),
                    key: key.clone(),
                    parent,
                    labels: HashMap::new(),
                })
                .await
                .with_context(|| format!("view {key}"))?;
                Ok(())
            }
        })
        .await?,
    );

    out.insert(
        Op::Mounts,
        sequential(shape.mounts_passes() * shape.views(), |n| {
            let (mut c, key) = (client.clone(), view(n % shape.views()));
            async move {
                let reply = c
                    .mounts(api::MountsRequest {
                        snapshotter: snapshotter.into(),
                        key: key.clone(),
                    })
                    .await
                    .with_context(|| format!("mounts {key}"))?;
                anyhow::ensure!(!reply.into_inner().mounts.is_empty(), "mounts of {key}: none");
                Ok(())
            }
        })
        .await?,
    );

    out.insert(
        Op::RemoveView,
        sequential(shape.views(), |j| remove(client.clone(), snapshotter, view(j))).await?,
    );

    out.insert(Op::Churn, churn(client, snapshotter, prefix, &top, shape).await?);

    out.insert(
        Op::RemoveChain,
        sequential(shape.depth, |n| {
            remove(client.clone(), snapshotter, layer(shape.depth - 1 - n))
        })
        .await?,
    );

    // containerd's native snapshotter has no Cleanup (its Remove deletes).
    match client.clone().cleanup(api::CleanupRequest { snapshotter: snapshotter.into() }).await {
        Err(status) if status.code() != tonic::Code::Unimplemented => {
            return Err(anyhow::Error::new(status).context("cleanup after the run"));
        }
        _ => {}
    }
    Ok(out)
}

/// `n` calls one after the other, each timed.
async fn sequential<F, Fut>(n: usize, mut call: F) -> anyhow::Result<Samples>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut samples = Samples { latencies: Vec::with_capacity(n), wall: Duration::ZERO };
    let phase = Instant::now();
    for i in 0..n {
        let started = Instant::now();
        call(i).await?;
        samples.latencies.push(started.elapsed());
    }
    samples.wall = phase.elapsed();
    Ok(samples)
}

async fn remove(mut c: Client, snapshotter: &str, key: String) -> anyhow::Result<()> {
    c.remove(api::RemoveSnapshotRequest { snapshotter: snapshotter.into(), key: key.clone() })
        .await
        .with_context(|| format!("remove {key}"))?;
    Ok(())
}

/// `workers` tasks, each doing Prepare+Remove pairs on top of the chain
/// (containers starting and going away) over the one shared connection.
async fn churn(
    client: &Client,
    snapshotter: &str,
    prefix: &str,
    top: &str,
    shape: Shape,
) -> anyhow::Result<Samples> {
    let mut tasks = JoinSet::new();
    let phase = Instant::now();
    for w in 0..shape.workers {
        let (mut c, snapshotter, prefix, top) =
            (client.clone(), snapshotter.to_string(), prefix.to_string(), top.to_string());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(shape.churn_per_worker);
            for i in 0..shape.churn_per_worker {
                let key = format!("{prefix}/churn-{w}-{i}");
                let started = Instant::now();
                c.prepare(api::PrepareSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: key.clone(),
                    parent: top.clone(),
                    labels: HashMap::new(),
                })
                .await
                .with_context(|| format!("churn prepare {key}"))?;
                remove(c.clone(), &snapshotter, key).await?;
                latencies.push(started.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut samples = Samples::default();
    while let Some(done) = tasks.join_next().await {
        samples.latencies.extend(done.context("churn worker")??);
    }
    samples.wall = phase.elapsed();
    Ok(samples)
}
