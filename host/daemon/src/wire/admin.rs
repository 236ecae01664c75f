//! wasmsnap's read-only admin API (`proto/wasmsnap/admin/v1`), served on
//! the same socket as containerd's Snapshots API, which it leaves as it
//! is: `Explain` tells which policy answers for a snapshot and what it
//! planned; `Tree` lists every snapshot with its plan type.

use tonic::{Request, Response, Status};
use wasmsnap_plan::{Kind, Mount, Step};

use super::convert;
use super::proto::admin::{self, admin_server::Admin};
use super::server::status;
use crate::error::Error;
use crate::service::Service;
use crate::snapshotter::Snapshotter;

pub struct AdminApi {
    service: Service,
}

impl AdminApi {
    pub fn new(service: Service) -> Self {
        AdminApi { service }
    }

    async fn run<T: Send + 'static>(
        &self,
        snapshotter: &str,
        f: impl FnOnce(&Snapshotter) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let target = self.service.get(snapshotter).map_err(status)?;
        tokio::task::spawn_blocking(move || f(&target))
            .await
            .map_err(|e| Status::internal(format!("worker failed: {e}")))?
            .map_err(status)
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn explain(
        &self,
        req: Request<admin::ExplainRequest>,
    ) -> Result<Response<admin::ExplainResponse>, Status> {
        let r = req.into_inner();
        let reply = self.run(&r.snapshotter, move |s| explain(s, &r.key)).await?;
        Ok(Response::new(reply))
    }

    async fn tree(
        &self,
        req: Request<admin::TreeRequest>,
    ) -> Result<Response<admin::TreeResponse>, Status> {
        let r = req.into_inner();
        let nodes = self.run(&r.snapshotter, tree).await?;
        Ok(Response::new(admin::TreeResponse { nodes }))
    }
}

fn explain(s: &Snapshotter, key: &str) -> Result<admin::ExplainResponse, Error> {
    let e = s.explain(key)?;
    let (record, chain, info, facts, layout, mounts) =
        (e.record, e.chain, e.policy, e.facts, e.layout, e.mounts);
    Ok(admin::ExplainResponse {
        plan: plan(record.info.kind, &mounts),
        layout_steps: layout.steps.iter().map(step).collect(),
        content: layout.content.unwrap_or_default(),
        mounts: convert::mounts(mounts),
        policy: Some(admin::Policy {
            name: info.label.clone(),
            sha256: info.sha256.clone(),
            wit_version: info.wit_version.to_string(),
        }),
        host_facts: Some(admin::HostFacts {
            overlay: facts.overlay,
            userxattr: facts.userxattr,
            index_param: facts.index_param,
            reflink: facts.reflink,
            page_size: facts.page_size,
        }),
        record: Some(admin::Record {
            id: record.id,
            key: record.info.name,
            kind: kind(record.info.kind).to_string(),
            parent: record.info.parent.unwrap_or_default(),
            chain: chain.into_iter().map(|r| r.info.name).collect(),
            labels: record.info.labels.into_iter().collect(),
            size: record.usage.map(|u| u.size),
            inodes: record.usage.map(|u| u.inodes),
        }),
    })
}

fn tree(s: &Snapshotter) -> Result<Vec<admin::TreeNode>, Error> {
    let mut records = s.describe_all()?;
    records.sort_by_key(|r| r.id);
    let mut nodes = Vec::with_capacity(records.len());
    for r in records {
        let plan = match r.info.kind {
            Kind::Committed => plan(r.info.kind, &[]),
            // As served: a cached plan, or the policy asked.
            _ => match s.mounts(&r.info.name) {
                Ok(m) => plan(r.info.kind, &m),
                Err(e) => format!("error: {e}"),
            },
        };
        nodes.push(admin::TreeNode {
            key: r.info.name,
            id: r.id,
            kind: kind(r.info.kind).to_string(),
            parent: r.info.parent.unwrap_or_default(),
            plan,
        });
    }
    Ok(nodes)
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Active => "active",
        Kind::View => "view",
        Kind::Committed => "committed",
    }
}

/// The plan type of rendered mounts: `bind`, `overlay (N lowers)`, ...
fn plan(k: Kind, mounts: &[Mount]) -> String {
    if k == Kind::Committed {
        return "committed (no mounts of its own)".to_string();
    }
    let Some(first) = mounts.first() else { return "no mounts".to_string() };
    let mut plan = match first.r#type.as_str() {
        "overlay" => {
            let lowers: usize = first
                .options
                .iter()
                .map(|o| match o.split_once('=') {
                    Some(("lowerdir", v)) => v.split(':').count(),
                    Some(("lowerdir+", _)) => 1,
                    _ => 0,
                })
                .sum();
            let upper = first.options.iter().any(|o| o.starts_with("upperdir="));
            format!(
                "overlay ({lowers} lower{}{})",
                if lowers == 1 { "" } else { "s" },
                if upper { ", upper" } else { ", read-only" }
            )
        }
        other => other.to_string(),
    };
    if mounts.len() > 1 {
        plan.push_str(&format!(" + {} more mounts", mounts.len() - 1));
    }
    plan
}

fn step(s: &Step) -> String {
    match s {
        Step::Mkdir { name, mode } => format!("mkdir {name} {mode:04o}"),
        Step::CopyParent { name, mode } => format!("copy-parent {name} ({mode:?})"),
        Step::ChownLikeParent { name } => format!("chown-like-parent {name}"),
        Step::ChownToMappedRoot { name } => format!("chown-to-mapped-root {name}"),
    }
}

/// A client of the admin API on `socket` (for `wasmsnap explain` and
/// `wasmsnap tree`), each call on a runtime of its own.
pub mod client {
    use std::path::Path;

    use anyhow::Context;
    use hyper_util::rt::TokioIo;
    use tonic::transport::{Endpoint, Uri};

    use crate::wire::proto::admin::{self, admin_client::AdminClient};

    fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
    }

    async fn connect(socket: &Path) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
        let path = socket.to_path_buf();
        // The URI is a placeholder: the connector dials the unix socket.
        let channel = Endpoint::try_from("http://[::]:0")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .with_context(|| format!("connect to {}", socket.display()))?;
        Ok(AdminClient::new(channel))
    }

    pub fn explain(
        socket: &Path,
        snapshotter: &str,
        key: &str,
    ) -> anyhow::Result<admin::ExplainResponse> {
        block_on(async {
            let request =
                admin::ExplainRequest { snapshotter: snapshotter.into(), key: key.into() };
            let reply = connect(socket)
                .await?
                .explain(request)
                .await
                .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?;
            Ok(reply.into_inner())
        })
    }

    pub fn tree(socket: &Path, snapshotter: &str) -> anyhow::Result<Vec<admin::TreeNode>> {
        block_on(async {
            let request = admin::TreeRequest { snapshotter: snapshotter.into() };
            let reply = connect(socket)
                .await?
                .tree(request)
                .await
                .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?;
            Ok(reply.into_inner().nodes)
        })
    }
}
