//! The snapshotter servers a comparison starts: `wasmsnap serve` and the
//! peer (containerd's own snapshotters behind a tiny Go server), each on a
//! fresh root and socket, stopped with SIGTERM when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::client::wait_for_socket;

pub struct Server {
    pub label: String,
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Server {
    /// Runs `bin serve --root <dir>/root --address <dir>/sock [extra...]`,
    /// its output to `<dir>/log`, and waits until it listens.
    pub fn start(label: &str, bin: &Path, dir: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("sock");
        let log = dir.join("log");
        let output = File::create(&log)?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--address")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("start {} ({})", label, bin.display()))?;
        let mut server = Server { label: label.to_string(), socket, log, child };
        let (child, log) = (&mut server.child, &server.log);
        wait_for_socket(&server.socket, Duration::from_secs(60), || match child.try_wait()? {
            Some(status) => anyhow::bail!(
                "{label} exited with {status} before it listened; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
            None => Ok(()),
        })?;
        Ok(server)
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
