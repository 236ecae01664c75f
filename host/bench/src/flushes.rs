//! Flushes per operation, per server (issue 15's "flush floor"): after the
//! timed runs, so that tracing slows none of them, strace counts the flush
//! syscalls each server makes while an untimed chain of prepare+commit runs
//! against it, then while the chain is removed (top first). Every thread of
//! the server counts, background ones included: work a request leaves to
//! a background thread is part of what that request costs the disk.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::Target;
use super::client::Client;
use super::strace::{Counts, FLUSHES, Tracer};
use wasmsnap_daemon::wire::proto::snapshots as api;

/// Quiet time before tracing starts, so that work left from the timed runs
/// (deletions after the churn) is not counted.
const IDLE_BEFORE: Duration = Duration::from_secs(1);
/// Time after the last reply for the work it started in the background.
const SETTLE_AFTER: Duration = Duration::from_secs(1);

/// The fewest operations per chain, so that one background flush more or
/// less moves the average little.
pub const MIN_CHAIN: usize = 10;

/// One operation's flushes on one target.
pub struct Row {
    title: String,
    snapshotter: String,
    op: &'static str,
    n: usize,
    counts: Counts,
}

pub enum Report {
    /// strace is not installed.
    Skipped,
    Rows(Vec<Row>),
}

/// Counts the flushes of a chain of `n` prepare+commit, then of `n`
/// removes, on each target in turn.
pub async fn count(targets: &[Target], clients: &[Client], n: usize) -> anyhow::Result<Report> {
    if !super::strace::available()? {
        return Ok(Report::Skipped);
    }
    let files = tempfile::tempdir().context("temp dir for strace's output")?;
    let mut rows = Vec::new();
    for (target, client) in targets.iter().zip(clients) {
        let pid = match target.pid {
            Some(pid) => pid,
            None => listener_pid(&target.socket).await?,
        };
        let what = format!("{} {}", target.title, target.snapshotter);
        let chain = Chain {
            client: client.clone(),
            snapshotter: target.snapshotter.clone(),
            prefix: format!("flushes-{}", std::process::id()),
            n,
        };
        tokio::time::sleep(IDLE_BEFORE).await;
        let tracer = Tracer::attach(pid, files.path()).await?;
        chain.prepare_commit().await.with_context(|| format!("{what}: prepare+commit chain"))?;
        tokio::time::sleep(SETTLE_AFTER).await;
        let counts = tracer.stop().await?;
        rows.push(row(target, "prepare+commit", n, counts));

        let tracer = Tracer::attach(pid, files.path()).await?;
        chain.remove().await.with_context(|| format!("{what}: remove chain"))?;
        tokio::time::sleep(SETTLE_AFTER).await;
        let counts = tracer.stop().await?;
        rows.push(row(target, "remove", n, counts));
        chain.cleanup().await.with_context(|| format!("{what}: cleanup"))?;
    }
    Ok(Report::Rows(rows))
}

fn row(target: &Target, op: &'static str, n: usize, counts: Counts) -> Row {
    Row { title: target.title.clone(), snapshotter: target.snapshotter.clone(), op, n, counts }
}

/// The process that listens on `socket` (from the connection's peer credentials).
async fn listener_pid(socket: &Path) -> anyhow::Result<u32> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connect to {}", socket.display()))?;
    let credentials =
        stream.peer_cred().with_context(|| format!("peer credentials of {}", socket.display()))?;
    credentials.pid().and_then(|pid| u32::try_from(pid).ok()).filter(|&pid| pid > 0).with_context(
        || format!("{} is served from another pid namespace: no pid to trace", socket.display()),
    )
}

/// The table: per target and operation, flushes per operation, in all and by syscall.
pub fn render(report: &Report) -> String {
    let rows = match report {
        Report::Skipped => {
            return "flush count skipped: strace is not installed\n".to_string();
        }
        Report::Rows(rows) => rows,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flushes per operation: calls of {} by the server, every thread (strace -f), \
         during untimed chains after the timed runs",
        FLUSHES.join(", ").replace("msync", "msync(MS_SYNC)")
    );
    let _ = write!(
        out,
        "{:<12} {:<12} {:<15} {:>4} {:>10} |",
        "server", "snapshotter", "operation", "n", "flushes/op"
    );
    for name in FLUSHES {
        let _ = write!(out, " {name:>w$}", w = column_width(name));
    }
    out.push('\n');
    for row in rows {
        let per_op = |calls: u64| calls as f64 / row.n as f64;
        let total: u64 = row.counts.values().sum();
        let _ = write!(
            out,
            "{:<12} {:<12} {:<15} {:>4} {:>10.2} |",
            row.title,
            row.snapshotter,
            row.op,
            row.n,
            per_op(total)
        );
        for name in FLUSHES {
            let _ = write!(out, " {:>w$.2}", per_op(row.counts[name]), w = column_width(name));
        }
        out.push('\n');
    }
    out
}

fn column_width(syscall: &str) -> usize {
    syscall.len().max(9)
}

/// The untimed chain: the same requests as the workload's unpack.
struct Chain {
    client: Client,
    snapshotter: String,
    prefix: String,
    n: usize,
}

impl Chain {
    fn layer(&self, i: usize) -> String {
        format!("{}/sha256:{i:064x}", self.prefix)
    }

    async fn prepare_commit(&self) -> anyhow::Result<()> {
        let mut c = self.client.clone();
        for i in 0..self.n {
            let key = format!("{}/extract-{i} sha256:{i:064x}", self.prefix);
            let labels = HashMap::from([(
                "containerd.io/snapshot.ref".to_string(),
                format!("sha256:{i:064x}"),
            )]);
            c.prepare(api::PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.clone(),
                parent: if i == 0 { String::new() } else { self.layer(i - 1) },
                labels: labels.clone(),
            })
            .await
            .with_context(|| format!("prepare {key}"))?;
            c.commit(api::CommitSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                name: self.layer(i),
                key: key.clone(),
                labels,
                parent: String::new(),
            })
            .await
            .with_context(|| format!("commit {key}"))?;
        }
        Ok(())
    }

    async fn remove(&self) -> anyhow::Result<()> {
        let mut c = self.client.clone();
        for i in (0..self.n).rev() {
            let key = self.layer(i);
            c.remove(api::RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.clone(),
            })
            .await
            .with_context(|| format!("remove {key}"))?;
        }
        Ok(())
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        let request = api::CleanupRequest { snapshotter: self.snapshotter.clone() };
        match self.client.clone().cleanup(request).await {
            // containerd's native snapshotter has no Cleanup (its Remove deletes).
            Err(status) if status.code() != tonic::Code::Unimplemented => Err(status.into()),
            _ => Ok(()),
        }
    }
}
