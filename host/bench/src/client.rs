//! A gRPC client of containerd's Snapshots API on a unix socket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use wasmsnap_daemon::wire::proto::snapshots::snapshots_client::SnapshotsClient;

pub type Client = SnapshotsClient<Channel>;

/// Connects to the snapshotter socket at `socket` (one HTTP/2 connection;
/// clones of the client share it, as containerd's proxy client does).
pub async fn connect(socket: &Path) -> anyhow::Result<Client> {
    let path: PathBuf = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connect to {}", socket.display()))?;
    Ok(SnapshotsClient::new(channel).max_decoding_message_size(16 << 20))
}

/// Waits until something accepts connections on `socket`.
pub fn wait_for_socket(
    socket: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        alive()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "nothing listens on {} after {timeout:?}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
