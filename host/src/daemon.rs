//! `wasmsnap serve`: the daemon's life. Bind the unix socket, serve until
//! SIGTERM or SIGINT, then stop accepting, let in-flight requests finish
//! and return.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use wasmsnap_engine::Engine;

use crate::config::Config;
use crate::loader::open_snapshotters;
use crate::service::Service;
use crate::wire::SnapshotsApi;
use crate::wire::proto::snapshots::snapshots_server::SnapshotsServer;

/// containerd's own limit on message size.
const MAX_MESSAGE: usize = 16 << 20;

/// How long in-flight requests get to finish after SIGTERM or SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub fn serve(config: Config) -> anyhow::Result<()> {
    let engine = Engine::new().context("start the wasm engine")?;
    let service = Service::new(open_snapshotters(&engine, &config)?);
    tracing::info!(
        root = %config.root.display(),
        address = %config.address.display(),
        snapshotters = ?service.names().collect::<Vec<_>>(),
        "serving"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(service, &config.address))
}

async fn run(service: Service, address: &Path) -> anyhow::Result<()> {
    let listener = bind(address)?;
    let api = SnapshotsServer::new(SnapshotsApi::new(service))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(api)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = shutdown_signal() => {
            let _ = stop_tx.send(());
            // In-flight requests finish; a client that keeps its connection
            // open past the grace period does not keep us alive.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("clients still connected after {SHUTDOWN_GRACE:?}; exiting");
                    Ok(())
                }
            }
        }
    };
    let _ = std::fs::remove_file(address);
    result.context("gRPC server")?;
    tracing::info!("stopped");
    Ok(())
}

/// Bind `address`, creating its parent and replacing a stale socket (one
/// nobody answers on); mode 0660 like containerd's own socket.
fn bind(address: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = address.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    if address.exists() {
        if std::os::unix::net::UnixStream::connect(address).is_ok() {
            bail!("{} is in use by another process", address.display());
        }
        std::fs::remove_file(address).with_context(|| format!("remove stale socket {}", address.display()))?;
    }
    let listener = UnixListener::bind(address).with_context(|| format!("listen on {}", address.display()))?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down: finishing in-flight requests");
}
