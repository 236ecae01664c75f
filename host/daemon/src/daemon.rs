//! `wasmsnap serve`: the daemon's life. Open the snapshotters (recovery
//! runs there) and load their policies (through the compile cache under the
//! root), listen on the unix socket (see `socket`), tell systemd it is ready
//! (see `notify`), serve until SIGTERM or SIGINT, then stop accepting, let
//! in-flight requests finish and return. SIGHUP reloads the config file (see
//! `reload`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::UnixListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use wasmsnap_engine::Engine;

use crate::config::Config;
use crate::loader::{open_snapshotters, policy_cache_dir};
use crate::metrics::MetricsAddress;
use crate::notify::Notifier;
use crate::reload::{Overrides, Reloader};
use crate::service::Service;
use crate::socket;
use crate::wire::proto::admin::admin_server::AdminServer;
use crate::wire::proto::snapshots::snapshots_server::SnapshotsServer;
use crate::wire::{AdminApi, SnapshotsApi};

/// containerd's own limit on message size.
const MAX_MESSAGE: usize = 16 << 20;

/// How long in-flight requests get to finish after SIGTERM or SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serve `config`, read from `file` (reloaded on SIGHUP) with `overrides`
/// from the command line applied.
pub fn serve(config: Config, file: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let started = Instant::now();
    // One reactor thread: it answers the reads itself and hands everything
    // that blocks (writes, walks, policy calls) to the hot worker or the
    // blocking pool (`hot_worker`), except the writes that stay short
    // where a flush costs nothing (`wire::server`). With a worker per core, requests and
    // their replies hopped between workers too: thread switches were most
    // of a Stat (docs/performance.md).
    let runtime = reactor()?;
    let _entered = runtime.enter();
    // Before anything slow: SIGHUP's default action would kill the process
    // (a reload sent while it starts is kept for after). SIGTERM and SIGINT
    // keep theirs until the socket is bound: nothing is served yet.
    let hup = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    let notifier = Notifier::from_env();
    notifier.status("starting: recovering snapshotters, loading policies");
    let metrics_address = match &config.metrics_address {
        // Before the snapshotters open: they take their meters then.
        Some(a) => Some((a.parse::<MetricsAddress>()?, crate::metrics::enable())),
        None => None,
    };
    let engine = engine(&config.root)?;
    let service = Service::new(open_snapshotters(&engine, &config));
    if let Some((address, metrics)) = &metrics_address {
        metrics.watch(&service);
        runtime.block_on(crate::metrics::serve(address, metrics))?;
        tracing::info!(address = %address, "serving metrics at /metrics");
    }
    forget_unused_compilations(&engine, &service);
    for s in service.serving() {
        let info = s.policy().info().clone();
        tracing::info!(
            snapshotter = %s.name(),
            policy = %info.label,
            wit = info.wit_version,
            "put in containerd's [proxy_plugins.{}]: {}",
            s.name(),
            crate::capabilities::line(&info.capabilities)
        );
    }
    let reloader =
        Arc::new(Reloader::new(engine, file, overrides, service.clone(), config.clone()));
    let life = Life { notifier, started, root: config.root.clone() };
    runtime.block_on(run(service, &config.address, hup, reloader, life))
}

/// The runtime serving every socket: one reactor thread (see `serve`),
/// which spins briefly before it sleeps (see `spin`).
fn reactor() -> anyhow::Result<tokio::runtime::Runtime> {
    // The runtime's epoll descriptors, known once it is built.
    let epolls = Arc::new(std::sync::OnceLock::<Vec<std::os::fd::RawFd>>::new());
    let before = crate::spin::epoll_fds();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park({
            let epolls = epolls.clone();
            move || {
                if let Some(fds) = epolls.get() {
                    crate::spin::reactor(fds);
                }
            }
        })
        .build()
        .context("start the tokio runtime")?;
    let fds = crate::spin::new_epoll_fds(&before, &crate::spin::epoll_fds());
    if fds.is_empty() {
        tracing::debug!("the reactor sleeps without spinning: its epoll fds were not found");
    } else {
        let _ = epolls.set(fds);
    }
    Ok(runtime)
}

/// What `run` reports on: to the log and to systemd.
struct Life {
    notifier: Notifier,
    started: Instant,
    root: PathBuf,
}

/// `STATUS=` for systemd: what is served, where.
fn serving_status(service: &Service, address: &Path) -> String {
    let names: Vec<&str> = service.names().collect();
    let unavailable = service.unavailable();
    let mut status = format!("serving {} on {}", names.join(", "), address.display());
    if !unavailable.is_empty() {
        status.push_str(&format!("; unavailable: {}", unavailable.join(", ")));
    }
    status
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

/// Drop cache entries of components no serving snapshotter uses: those of
/// policies no longer configured, and of one that failed to start (a start
/// that fails leaves nothing behind; a reload compiles it again).
fn forget_unused_compilations(engine: &Engine, service: &Service) {
    let Some(cache) = engine.disk_cache() else { return };
    let used: Vec<[u8; 32]> = service
        .serving()
        .iter()
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
    life: Life,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let (listener, socket_file) = socket::listen(address)?;
    listener.set_nonblocking(true).context("make the socket non-blocking")?;
    let listener = UnixListener::from_std(listener).context("hand the socket to the runtime")?;
    // The socket accepts from here on (connections wait in its backlog).
    let status = serving_status(&service, address);
    tracing::info!(
        root = %life.root.display(),
        address = %address.display(),
        snapshotters = ?service.names().collect::<Vec<_>>(),
        unavailable = ?service.unavailable(),
        startup = ?life.started.elapsed(),
        "serving"
    );
    life.notifier.ready(&status);
    let reloads = tokio::spawn(reload_on_hangup(hup, reloader, life.notifier.clone(), status));
    let api = SnapshotsServer::new(SnapshotsApi::new(service.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // wasmsnap's read-only admin API on the same socket (its own service
    // name: containerd never calls it).
    let admin = AdminServer::new(AdminApi::new(service));
    let server = tonic::transport::Server::builder()
        .add_service(api)
        .add_service(admin)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => {
            life.notifier.stopping();
            r
        }
        _ = shutdown_signal(&mut term, &mut int) => {
            life.notifier.stopping();
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
    socket_file.remove_file();
    result.context("gRPC server")?;
    tracing::info!("stopped");
    Ok(())
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
/// systemd hears `RELOADING=1` before and `READY=1` after each, with the
/// outcome in `STATUS=`.
async fn reload_on_hangup(
    mut hup: Signal,
    reloader: Arc<Reloader>,
    notifier: Notifier,
    serving: String,
) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        notifier.reloading();
        let r = reloader.clone();
        let outcome = match tokio::task::spawn_blocking(move || r.reload()).await {
            Ok(Ok(done)) => {
                if let Some(m) = crate::metrics::get() {
                    m.reloaded(true);
                }
                for note in &done.ignored {
                    tracing::warn!(setting = %note, "reload: not applied");
                }
                tracing::info!(changed = ?done.changed, unchanged = ?done.unchanged, "reloaded");
                format!("last reload changed {:?}", done.changed)
            }
            Ok(Err(e)) => {
                if let Some(m) = crate::metrics::get() {
                    m.reloaded(false);
                }
                tracing::error!(error = %format!("{e:#}"), "reload failed: every snapshotter keeps its running policy");
                "last reload failed, nothing changed (see the log)".to_string()
            }
            Err(e) => {
                if let Some(m) = crate::metrics::get() {
                    m.reloaded(false);
                }
                tracing::error!(error = %e, "reload failed: every snapshotter keeps its running policy");
                "last reload failed, nothing changed (see the log)".to_string()
            }
        };
        notifier.ready(&format!("{serving}; {outcome}"));
    }
}
