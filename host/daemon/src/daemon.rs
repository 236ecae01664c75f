//! `wasmsnap serve`: the daemon's life. Load the policies (through the
//! compile cache under the root), bind the unix socket, serve until SIGTERM
//! or SIGINT, then stop accepting, let in-flight requests finish and
//! return. SIGHUP reloads the config file (see `reload`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::net::UnixListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use wasmsnap_engine::Engine;

use crate::config::Config;
use crate::loader::{open_snapshotters, policy_cache_dir};
use crate::reload::{Overrides, Reloader};
use crate::service::Service;
use crate::wire::SnapshotsApi;
use crate::wire::proto::snapshots::snapshots_server::SnapshotsServer;

/// containerd's own limit on message size.
const MAX_MESSAGE: usize = 16 << 20;

/// How long in-flight requests get to finish after SIGTERM or SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serve `config`, read from `file` (reloaded on SIGHUP) with `overrides`
/// from the command line applied.
pub fn serve(config: Config, file: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _entered = runtime.enter();
    // Before anything slow: SIGHUP's default action would kill the process
    // (a reload sent while it starts is kept for after). SIGTERM and SIGINT
    // keep theirs until the socket is bound: nothing is served yet.
    let hup = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    let engine = engine(&config.root)?;
    let service = Service::new(open_snapshotters(&engine, &config)?);
    forget_unused_compilations(&engine, &service);
    for s in service.all() {
        let info = s.policy().info().clone();
        tracing::info!(
            snapshotter = %s.name(),
            policy = %info.label,
            wit = info.wit_version,
            "put in containerd's [proxy_plugins.{}]: {}",
            s.name(),
            capabilities_line(&info.capabilities)
        );
    }
    tracing::info!(
        root = %config.root.display(),
        address = %config.address.display(),
        snapshotters = ?service.names().collect::<Vec<_>>(),
        startup = ?started.elapsed(),
        "serving"
    );
    let reloader =
        Arc::new(Reloader::new(engine, file, overrides, service.clone(), config.clone()));
    runtime.block_on(run(service, &config.address, hup, reloader))
}

/// The line for `[proxy_plugins.NAME]` in containerd's config (1.7.23+,
/// 2.x) that tells containerd what the policy supports: without it
/// containerd neither unpacks in parallel nor hands over id maps.
pub fn capabilities_line(c: &wasmsnap_plan::Capabilities) -> String {
    let names: Vec<String> = c.names().iter().map(|n| format!("{n:?}")).collect();
    format!("capabilities = [{}]", names.join(", "))
}

/// The engine, with compiled policies kept under the root. A cache that
/// cannot be opened costs compile time at each start, nothing else.
fn engine(root: &Path) -> anyhow::Result<Engine> {
    let engine = Engine::new().context("start the wasm engine")?;
    let dir = policy_cache_dir(root);
    match engine.clone().with_disk_cache(&dir) {
        Ok(cached) => Ok(cached),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "serving without a policy cache: every start compiles");
            Ok(engine)
        }
    }
}

/// Drop cache entries of components no snapshotter uses any more.
fn forget_unused_compilations(engine: &Engine, service: &Service) {
    let Some(cache) = engine.disk_cache() else { return };
    let used: Vec<[u8; 32]> = service
        .all()
        .filter_map(|s| hex::decode(&s.policy().info().sha256).ok()?.try_into().ok())
        .collect();
    match cache.retain(&used) {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(removed = n, dir = %cache.dir().display(), "policy cache: removed entries no snapshotter uses")
        }
        Err(e) => {
            tracing::warn!(error = %e, dir = %cache.dir().display(), "policy cache: cannot tidy")
        }
    }
}

async fn run(
    service: Service,
    address: &Path,
    hup: Signal,
    reloader: Arc<Reloader>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let listener = bind(address)?;
    let reloads = tokio::spawn(reload_on_hangup(hup, reloader));
    let api = SnapshotsServer::new(SnapshotsApi::new(service))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().add_service(api).serve_with_incoming_shutdown(
        UnixListenerStream::new(listener),
        async {
            let _ = stop_rx.await;
        },
    );
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = shutdown_signal(&mut term, &mut int) => {
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
    reloads.abort();
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
        std::fs::remove_file(address)
            .with_context(|| format!("remove stale socket {}", address.display()))?;
    }
    let listener =
        UnixListener::bind(address).with_context(|| format!("listen on {}", address.display()))?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

async fn shutdown_signal(term: &mut Signal, int: &mut Signal) {
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down: finishing in-flight requests");
}

/// Reload the config at every SIGHUP, one reload at a time (signals that
/// arrive during one coalesce into the next). Requests go on meanwhile.
async fn reload_on_hangup(mut hup: Signal, reloader: Arc<Reloader>) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        let r = reloader.clone();
        match tokio::task::spawn_blocking(move || r.reload()).await {
            Ok(Ok(done)) => {
                for note in &done.ignored {
                    tracing::warn!(setting = %note, "reload: not applied");
                }
                tracing::info!(changed = ?done.changed, unchanged = ?done.unchanged, "reloaded");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "reload failed: every snapshotter keeps its running policy")
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed: every snapshotter keeps its running policy")
            }
        }
    }
}
