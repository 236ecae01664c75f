//! Shared by the whole-system tests: start a real `wasmsnap serve` on a
//! temp root and socket, and talk to it with a tonic client.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use wasmsnap_daemon::wire::proto::snapshots::snapshots_client::SnapshotsClient;

pub use wasmsnap_daemon::wire::proto::snapshots as api;

pub mod scrape;

/// A client of the Snapshots service on a daemon's socket.
pub type Client = SnapshotsClient<Channel>;

pub const BIN: &str = env!("CARGO_BIN_EXE_wasmsnap");

/// The daemon binary the tests start: cargo's, or `WASMSNAP_TEST_BIN` (a
/// copy of it, so a long run is not hit by a rebuild of the target dir).
pub fn bin() -> String {
    std::env::var("WASMSNAP_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// A running daemon; stopped with SIGTERM when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// `wasmsnap serve` with no config file.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// `wasmsnap serve` with extra arguments (e.g. `--config FILE`).
    pub fn start_with(args: &[&str]) -> Daemon {
        let mut d = Daemon::unstarted();
        d.spawn(args);
        d
    }

    /// Paths for a daemon, not started yet (see [`spawn`](Self::spawn)):
    /// lets a test prepare the root first.
    pub fn unstarted() -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        let socket = dir.path().join("run").join("wasmsnap.sock");
        let log = dir.path().join("wasmsnap.log");
        Daemon { child: None, dir, root, socket, log }
    }

    /// Start the daemon process (again) on the same root and socket.
    pub fn spawn(&mut self, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(bin())
            .arg("serve")
            .arg("--root")
            .arg(&self.root)
            .arg("--address")
            .arg(&self.socket)
            .args(["--log-level", "debug"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start wasmsnap serve");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("wasmsnap serve exited with {status} before it listened:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "wasmsnap serve did not listen within 60 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn client(&self) -> Client {
        connect(&self.socket).await
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .ok();
        child.wait().expect("wait for wasmsnap")
    }

    /// Send SIGHUP and wait for the daemon to log the outcome (a `reloaded` or
    /// `reload failed` line beyond the `before` ones); returns that line.
    /// Send SIGHUP and wait for the daemon to log the outcome (a `reloaded`
    /// or `reload failed` line beyond the earlier ones); returns that line.
    pub fn hangup(&self) -> String {
        let outcomes = |logs: &str| -> Vec<String> {
            strip_ansi(logs)
                .lines()
                .filter(|l| l.contains(" reloaded ") || l.contains("reload failed"))
                .map(String::from)
                .collect()
        };
        let before = outcomes(&self.logs()).len();
        let pid = nix::unistd::Pid::from_raw(self.pid().expect("running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = outcomes(&self.logs()).get(before) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no reload outcome logged:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        child.kill().ok();
        child.wait().ok();
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The snapshotter's directory of snapshots.
    pub fn snapshots_dir(&self, snapshotter: &str) -> PathBuf {
        self.root.join(snapshotter).join("snapshots")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// A tonic client on a unix socket.
pub async fn connect(socket: &Path) -> Client {
    let socket = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to wasmsnap");
    SnapshotsClient::new(channel)
}

/// `text` without terminal escape sequences (the daemon's log is coloured).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// A tmpfs on a daemon's root, unmounted when dropped.
pub struct TmpfsRoot(PathBuf);

impl Drop for TmpfsRoot {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `wasmsnap serve [args]` on a fresh tmpfs root (started once to make its
/// temp dirs, stopped, and started again on the tmpfs): a root where a
/// flush costs nothing. Needs root.
pub fn daemon_on_tmpfs(args: &[&str]) -> (Daemon, TmpfsRoot) {
    let mut d = Daemon::start();
    d.stop();
    std::fs::create_dir_all(&d.root).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &d.root,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=512m,mode=0700"),
    )
    .expect("mount a tmpfs on the daemon's root");
    let root = TmpfsRoot(d.root.clone());
    d.spawn(args);
    (d, root)
}

/// Prepare `key` on `parent` (may be empty) in snapshotter `s`: its mounts.
pub async fn prepare(
    c: &mut Client,
    s: &str,
    key: &str,
    parent: &str,
    labels: std::collections::HashMap<String, String>,
) -> Result<Vec<wasmsnap_daemon::wire::proto::Mount>, tonic::Status> {
    let req = api::PrepareSnapshotRequest {
        snapshotter: s.into(),
        key: key.into(),
        parent: parent.into(),
        labels,
    };
    c.prepare(req).await.map(|r| r.into_inner().mounts)
}

/// Commit active `key` as `name` in snapshotter `s`.
pub async fn commit(c: &mut Client, s: &str, name: &str, key: &str) -> Result<(), tonic::Status> {
    let req = api::CommitSnapshotRequest {
        snapshotter: s.into(),
        name: name.into(),
        key: key.into(),
        ..Default::default()
    };
    c.commit(req).await.map(drop)
}
