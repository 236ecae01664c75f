//! `wasmsnap doctor`: checks a node and containerd's config against what
//! wasmsnap serves, one line per check (ok, warn, fail), each failing or
//! warning line saying what to do.
//!
//! The checks read the system and files only; the one write is a probe
//! under the root (a clone, a directory to idmap-mount), removed at once.
//! What wasmsnap serves ([`Served`]) is given by the caller, which reads
//! the daemon's config and asks each policy what it supports.

mod containerd;
mod kernel;
mod report;
mod root;
mod socket;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub use containerd::check_containerd_config;
pub use report::{Check, Report, Status};

/// What the wasmsnap daemon on this node serves (from its config).
#[derive(Clone, Debug, Default)]
pub struct Served {
    pub root: PathBuf,
    pub address: PathBuf,
    /// Each served snapshotter's name, with the containerd capabilities its
    /// policy supports (`rebase`, `remap-ids`, ...).
    pub snapshotters: BTreeMap<String, BTreeSet<String>>,
}

/// What to check besides the node itself.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// containerd's config file (`/etc/containerd/config.toml`).
    pub containerd_config: Option<PathBuf>,
    /// containerd's version (`1.7.24`, `2.1`); read from `containerd
    /// --version` when not given and the config does not tell.
    pub containerd_version: Option<String>,
}

/// Every check, in the order they print.
pub fn run(served: &Served, options: &Options) -> Report {
    let mut report = Report::default();
    kernel::check(&served.root, &mut report);
    root::check(&served.root, &mut report);
    socket::check(&served.address, &mut report);
    if let Some(file) = &options.containerd_config {
        check_containerd_config(file, options.containerd_version.as_deref(), served, &mut report);
    }
    report
}
