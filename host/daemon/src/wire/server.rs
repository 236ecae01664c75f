//! The tonic implementation of `containerd.services.snapshots.v1.Snapshots`.
//!
//! Each RPC: pick the snapshotter by the request's `snapshotter` field, run
//! the core call, map the result to the wire. Where the call runs is chosen
//! per RPC (see `docs/performance.md`):
//!
//! - **reads** (Stat, List, Mounts of a cached plan, Usage of a committed
//!   snapshot or one measured less than 2 s ago) are answered on the
//!   reactor thread: a few µs of redb work, where handing them to another
//!   thread and back costs tens of µs and two thread switches. A read can
//!   block the reactor for at most one flush (it waits until what it saw
//!   is durable, see the metastore's group commit), and a List for the
//!   time it takes to read every record (about 0.2 ms per thousand);
//! - Remove and Update (a record's write: no policy call, no walk) are
//!   answered there too while the metastore's durable commits are cheaper
//!   than [`SHORT_WRITE`] (tmpfs, a device that flushes for free);
//! - Prepare, View and Commit are tried there while a flush of the
//!   metastore costs less than [`QUICK_FLUSH`] (tmpfs): each does what
//!   stays short (a policy that answers at once, in under 2 ms, or is not
//!   asked there again; no copy; a usage walk of a few hundred names; a free
//!   write lock) or hands itself on unchanged. It cannot be cancelled
//!   midway: it is done or not begun when tonic could drop it;
//! - everything else that writes, walks a tree or calls a policy runs off
//!   the reactor (a cancelled request still completes or rolls back as a
//!   whole): on the hot worker thread when it is idle, else on tokio's
//!   blocking pool (`hot_worker`), so a slow disk never holds up the
//!   reads, a slow policy for 30 ms in all at most (see
//!   `Policy::layout_quick`), and concurrent writers share their flushes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert;
use super::proto::snapshots::{self as api, snapshots_server::Snapshots};
use crate::cancel;
use crate::error::Error;
use crate::info::{Kind, Labels, Mount};
use crate::metrics::RpcTimer;
use crate::service::Service;
use crate::snapshotter::{Pace, Snapshotter};

/// containerd's List batches, as its own snapshot service sends them.
const LIST_BATCH: usize = 100;
/// A batch also ends before it passes this many bytes: a hundred records
/// with long keys and many labels would not fit in one 16 MiB message.
const LIST_BATCH_BYTES: usize = 4 << 20;

/// A Remove or Update runs on the reactor when a durable commit costs less
/// than this: about what the two thread switches it saves cost on a VM
/// (measured on tmpfs: 100 µs a write). Above it, a flush is a device
/// flush or a journal commit, and the write goes off the reactor.
const SHORT_WRITE: Duration = Duration::from_micros(200);

/// A Prepare, View or Commit is tried on the reactor (at `Pace::Quick`: a
/// policy that answers without waiting, no copy, a short usage walk; else
/// it hands itself on, unchanged) when a flush of the metastore's redo log
/// costs less than this: tmpfs (about 1 µs), not a disk (100 µs and more).
/// Where a flush costs nothing, writers on other threads share nothing
/// worth two thread hops; where it costs a device flush they share it
/// (group commit), and the writes stay off the reactor. Measured in
/// `docs/performance.md`.
const QUICK_FLUSH: Duration = Duration::from_micros(20);

pub struct SnapshotsApi {
    service: Service,
}

impl SnapshotsApi {
    pub fn new(service: Service) -> Self {
        SnapshotsApi { service }
    }

    /// Run `f` on the named snapshotter; every RPC is timed here (and only
    /// here) for the metrics.
    async fn call<T, F, Fut>(&self, op: &'static str, snapshotter: &str, f: F) -> Result<T, Status>
    where
        F: FnOnce(Arc<Snapshotter>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let target = self.service.get(snapshotter);
        let timer = RpcTimer::start(op, target.as_ref().ok().and_then(|t| t.meters()));
        let result = match target {
            Ok(target) => f(target).await,
            Err(e) => Err(status(e)),
        };
        timer.finish(match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        });
        result
    }
}

/// The result of a call answered on the reactor thread, to the wire.
fn answered<T>(op: &'static str, key: &str, result: Result<T, Error>) -> Result<T, Status> {
    result.map_err(|e| {
        tracing::debug!(op, key, error = %e.message(), "{op} failed");
        status(e)
    })
}

/// `read` on the reactor; if it has no answer (`None`), `blocking` off it.
async fn read_else_off_reactor<T: Send + 'static>(
    op: &'static str,
    key: &str,
    target: Arc<Snapshotter>,
    read: impl FnOnce(&Snapshotter, &str) -> Result<Option<T>, Error>,
    blocking: impl FnOnce(&Snapshotter, &str) -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    if let Some(answer) = answered(op, key, read(&target, key))? {
        return Ok(answer);
    }
    let owned = key.to_string();
    off_reactor(op, key, target, move |s| blocking(s, &owned)).await
}

/// Whether `s`'s record writes are short enough for the reactor.
fn short_writes(s: &Snapshotter) -> bool {
    s.durable_commit_cost().is_some_and(|cost| cost < SHORT_WRITE)
}

/// Whether `s`'s flushes are so cheap that Prepare, View and Commit are
/// tried on the reactor (see [`QUICK_FLUSH`]).
fn quick_writes(s: &Snapshotter) -> bool {
    s.flush_cost().is_some_and(|cost| cost < QUICK_FLUSH)
}

/// Run `f` off the reactor (`hot_worker`), in a request span.
async fn off_reactor<T: Send + 'static>(
    op: &'static str,
    key: &str,
    target: Arc<Snapshotter>,
    f: impl FnOnce(&Snapshotter) -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    let span = tracing::info_span!("rpc", op, snapshotter = target.name(), key);
    // tonic drops this future when the client goes: the guard then marks
    // the operation cancelled, and it rolls back if not yet committed.
    let token = cancel::Token::default();
    let guard = token.cancel_on_drop();
    // The span is entered on the worker too, so what the call logs (a
    // policy's output, its failure) lands under the request.
    let worker_span = span.clone();
    let job = move || {
        worker_span.in_scope(|| {
            let result = token.run(|| f(&target));
            // Logged here, on the worker: the operator sees a policy's
            // failure (and its output) even when the client went away.
            if let Err(e) = &result {
                log_failure(op, e);
            }
            result
        })
    };
    let result = crate::hot_worker::global()
        .run(job)
        .instrument(span)
        .await
        .map_err(|e| Status::internal(format!("{op}: worker failed: {e}")))?;
    guard.disarm();
    result.map_err(status)
}

/// A Prepare or View: on the reactor where writes are quick and it stays
/// short, else off it.
async fn create(
    op: &'static str,
    kind: Kind,
    key: &str,
    target: Arc<Snapshotter>,
    parent: String,
    labels: Labels,
) -> Result<Vec<Mount>, Status> {
    quick_else_off_reactor(
        op,
        key,
        target,
        (parent, labels),
        |s, key, (parent, labels)| s.create_at(Pace::Quick, kind, key, parent, labels.clone()),
        move |s, key, (parent, labels)| s.create(kind, key, &parent, labels),
    )
    .await
}

/// A Commit: on the reactor where writes are quick and the upper dir is
/// small, else off it.
async fn commit(
    key: &str,
    target: Arc<Snapshotter>,
    name: String,
    parent: String,
    labels: Labels,
) -> Result<(), Status> {
    quick_else_off_reactor(
        "commit",
        key,
        target,
        (name, parent, labels),
        |s, key, (name, parent, labels)| {
            s.commit_at(Pace::Quick, name, key, parent, labels.clone())
        },
        |s, key, (name, parent, labels)| s.commit(&name, key, &parent, labels),
    )
    .await
}

/// `quick` on the reactor where writes are quick (see [`QUICK_FLUSH`]), in
/// a request span (what it logs, a policy's failure, lands under the
/// request as off the reactor); if it hands itself on (`None`), or
/// elsewhere, `patient` off it. Both get the request's `args`.
async fn quick_else_off_reactor<A: Send + 'static, T: Send + 'static>(
    op: &'static str,
    key: &str,
    target: Arc<Snapshotter>,
    args: A,
    quick: impl FnOnce(&Snapshotter, &str, &A) -> Result<Option<T>, Error>,
    patient: impl FnOnce(&Snapshotter, &str, A) -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    if quick_writes(&target) {
        let span = tracing::info_span!("rpc", op, snapshotter = target.name(), key);
        let done = span.in_scope(|| match quick(&target, key, &args) {
            Ok(None) => {
                tracing::debug!("handed off the reactor: it would not stay short");
                Ok(None)
            }
            Ok(done) => Ok(done),
            Err(e) => {
                log_failure(op, &e);
                Err(status(e))
            }
        })?;
        if let Some(done) = done {
            return Ok(done);
        }
    }
    let owned = key.to_string();
    off_reactor(op, key, target, move |s| patient(s, &owned, args)).await
}

fn log_failure(op: &str, e: &Error) {
    if e.is_policy_failure() {
        tracing::warn!(error = %e.message(), "policy failed");
    } else {
        tracing::debug!(error = %e.message(), "{op} failed");
    }
}

/// Core errors to gRPC codes, as containerd's errdefs maps them; the
/// message is the whole chain of causes.
pub fn status(e: Error) -> Status {
    let message = e.message();
    match e {
        Error::NotFound(_) => Status::not_found(message),
        Error::AlreadyExists(_) => Status::already_exists(message),
        Error::FailedPrecondition(_) => Status::failed_precondition(message),
        Error::InvalidArgument(_) => Status::invalid_argument(message),
        Error::Cancelled(_) => Status::cancelled(message),
        // These can pass with a retry (or a reload): containerd's errdefs Unavailable.
        Error::PolicyUnavailable { .. }
        | Error::ParentChanging(_)
        | Error::KeyChanging(_)
        | Error::SnapshotterUnavailable(_) => Status::unavailable(message),
        Error::PolicyFailed { .. } | Error::Storage(_) | Error::Fs(_) => Status::unknown(message),
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<api::ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for SnapshotsApi {
    async fn prepare(
        &self,
        req: Request<api::PrepareSnapshotRequest>,
    ) -> Result<Response<api::PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        let (parent, labels) = (r.parent, convert::labels(r.labels));
        let mounts = self
            .call("prepare", &r.snapshotter, |s| {
                create("prepare", Kind::Active, &r.key, s, parent, labels)
            })
            .await?;
        Ok(Response::new(api::PrepareSnapshotResponse { mounts: convert::mounts(mounts) }))
    }

    async fn view(
        &self,
        req: Request<api::ViewSnapshotRequest>,
    ) -> Result<Response<api::ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let (parent, labels) = (r.parent, convert::labels(r.labels));
        let mounts = self
            .call("view", &r.snapshotter, |s| create("view", Kind::View, &r.key, s, parent, labels))
            .await?;
        Ok(Response::new(api::ViewSnapshotResponse { mounts: convert::mounts(mounts) }))
    }

    async fn mounts(
        &self,
        req: Request<api::MountsRequest>,
    ) -> Result<Response<api::MountsResponse>, Status> {
        let r = req.into_inner();
        // A cached plan is a read; otherwise the policy is asked.
        let mounts = self
            .call("mounts", &r.snapshotter, |s| {
                read_else_off_reactor("mounts", &r.key, s, Snapshotter::cached_mounts, |s, key| {
                    s.mounts(key)
                })
            })
            .await?;
        Ok(Response::new(api::MountsResponse { mounts: convert::mounts(mounts) }))
    }

    async fn commit(
        &self,
        req: Request<api::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let (name, parent, labels) = (r.name, r.parent, convert::labels(r.labels));
        self.call("commit", &r.snapshotter, |s| commit(&r.key, s, name, parent, labels)).await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<api::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let (key, owned) = (r.key.as_str(), r.key.clone());
        self.call("remove", &r.snapshotter, |s| async move {
            if short_writes(&s) {
                return answered("remove", key, s.remove(key));
            }
            off_reactor("remove", key, s, move |s| s.remove(&owned)).await
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<api::StatSnapshotRequest>,
    ) -> Result<Response<api::StatSnapshotResponse>, Status> {
        let r = req.into_inner();
        let key = r.key.as_str();
        let info = self
            .call("stat", &r.snapshotter, |s| async move { answered("stat", key, s.stat(key)) })
            .await?;
        Ok(Response::new(api::StatSnapshotResponse { info: Some(convert::info(info)) }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateSnapshotRequest>,
    ) -> Result<Response<api::UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let info =
            r.info.ok_or_else(|| Status::invalid_argument("update: the request has no info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let key = info.name.clone();
        let info = convert::update_info(info).map_err(status)?;
        let key = key.as_str();
        let info = self
            .call("update", &r.snapshotter, |s| async move {
                if short_writes(&s) {
                    return answered("update", key, s.update(info, &paths));
                }
                off_reactor("update", key, s, move |s| s.update(info, &paths)).await
            })
            .await?;
        Ok(Response::new(api::UpdateSnapshotResponse { info: Some(convert::info(info)) }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        req: Request<api::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = req.into_inner();
        let filters = &r.filters;
        let snapshots = self
            .call("list", &r.snapshotter, |s| async move { answered("list", "", s.list(filters)) })
            .await?;
        let mut batches = Vec::with_capacity(snapshots.len().div_ceil(LIST_BATCH));
        let (mut info, mut bytes) = (Vec::new(), 0);
        for snapshot in snapshots {
            let one = convert::info(snapshot);
            let len = prost::Message::encoded_len(&one);
            if info.len() == LIST_BATCH || (!info.is_empty() && bytes + len > LIST_BATCH_BYTES) {
                batches.push(Ok(api::ListSnapshotsResponse { info: std::mem::take(&mut info) }));
                bytes = 0;
            }
            bytes += len;
            info.push(one);
        }
        if !info.is_empty() {
            batches.push(Ok(api::ListSnapshotsResponse { info }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<api::UsageRequest>,
    ) -> Result<Response<api::UsageResponse>, Status> {
        let r = req.into_inner();
        // A committed snapshot's usage is stored; an active one's is a walk.
        let usage = self
            .call("usage", &r.snapshotter, |s| {
                read_else_off_reactor("usage", &r.key, s, Snapshotter::stored_usage, |s, key| {
                    s.usage(key)
                })
            })
            .await?;
        Ok(Response::new(api::UsageResponse { size: usage.size, inodes: usage.inodes }))
    }

    async fn cleanup(&self, req: Request<api::CleanupRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        self.call("cleanup", &r.snapshotter, |s| off_reactor("cleanup", "", s, |s| s.cleanup()))
            .await?;
        Ok(Response::new(()))
    }
}
