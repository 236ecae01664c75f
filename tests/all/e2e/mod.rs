//! Pieces of the containerd end-to-end test (`tests/containerd_e2e.rs`):
//! a private containerd, the test image, the per-snapshotter scenario, and
//! the guards that clean up after it.
#![allow(dead_code)]

pub mod cleanup;
pub mod command;
pub mod containerd;
pub mod layers;
pub mod oci;
pub mod scenario;
pub mod tools;
pub mod tree;

use std::path::{Path, PathBuf};

/// A temp directory that, when dropped, first unmounts anything left under
/// it (so removing it can never reach into a mounted snapshot), then goes.
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
}

impl WorkDir {
    pub fn new(prefix: &str) -> WorkDir {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("create a temp dir");
        WorkDir { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let dir = self.dir.take().unwrap();
        UnmountOnDrop(dir.path().to_path_buf()).unmount();
        if let Err(e) = dir.close() {
            eprintln!("could not remove the test's temp dir: {e}");
        }
    }
}

/// Unmounts whatever is mounted under a directory when dropped.
pub struct UnmountOnDrop(pub PathBuf);

impl UnmountOnDrop {
    fn unmount(&self) {
        let left = cleanup::unmount_under(&self.0);
        if !left.is_empty() {
            eprintln!("unmounted what the test left mounted: {left:?}");
        }
    }
}

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Prints the end of the named log files if the test is failing when this is
/// dropped; all of them, failing or not, with `WASMSNAP_E2E_LOGS=1`.
pub struct LogsOnFailure(pub Vec<(String, PathBuf)>);

/// Enough to see the failing requests; debug logs grow long.
const LOG_LINES: usize = 300;

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        let everything = std::env::var_os("WASMSNAP_E2E_LOGS").is_some_and(|v| v == "1");
        if !std::thread::panicking() && !everything {
            return;
        }
        for (name, path) in &self.0 {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
            let lines: Vec<&str> = text.lines().collect();
            let shown = if everything {
                &lines[..]
            } else {
                &lines[lines.len().saturating_sub(LOG_LINES)..]
            };
            eprintln!(
                "===== {name} log ({}, last {} of {} lines) =====\n{}\n===== end of {name} log =====",
                path.display(),
                shown.len(),
                lines.len(),
                shown.join("\n")
            );
        }
    }
}
