//! Shared by the crash-recovery, bad-request and soak tests: request
//! builders for any snapshotter, a seeded random source, pictures of the
//! disk and of the metastore, and the daemon's resource use from /proc.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::transport::Channel;
use wasmsnap_daemon::wire::proto::Mount;
use wasmsnap_daemon::wire::proto::snapshots as api;
use wasmsnap_daemon::wire::proto::snapshots::snapshots_client::SnapshotsClient;
use wasmsnap_metastore::{Filter, Metastore, Reads, Record};

pub type Client = SnapshotsClient<Channel>;
pub type Labels = HashMap<String, String>;

/// splitmix64: small, seedable, good enough to pick operations.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed from `var`, or one from the clock; printed so a failing run
    /// can be repeated (its operation choices, not its timing).
    pub fn seed_from_env(var: &str) -> u64 {
        let seed = match std::env::var(var) {
            Ok(v) => v.parse().unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        eprintln!("seed: {var}={seed}");
        seed
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

pub fn prepare(s: &str, key: &str, parent: &str) -> api::PrepareSnapshotRequest {
    api::PrepareSnapshotRequest {
        snapshotter: s.into(),
        key: key.into(),
        parent: parent.into(),
        labels: Labels::new(),
    }
}

pub fn view(s: &str, key: &str, parent: &str) -> api::ViewSnapshotRequest {
    api::ViewSnapshotRequest {
        snapshotter: s.into(),
        key: key.into(),
        parent: parent.into(),
        labels: Labels::new(),
    }
}

pub fn commit(s: &str, name: &str, key: &str) -> api::CommitSnapshotRequest {
    api::CommitSnapshotRequest {
        snapshotter: s.into(),
        name: name.into(),
        key: key.into(),
        labels: Labels::new(),
        parent: String::new(),
    }
}

pub fn mounts(s: &str, key: &str) -> api::MountsRequest {
    api::MountsRequest { snapshotter: s.into(), key: key.into() }
}

pub fn stat(s: &str, key: &str) -> api::StatSnapshotRequest {
    api::StatSnapshotRequest { snapshotter: s.into(), key: key.into() }
}

pub fn remove(s: &str, key: &str) -> api::RemoveSnapshotRequest {
    api::RemoveSnapshotRequest { snapshotter: s.into(), key: key.into() }
}

pub fn usage(s: &str, key: &str) -> api::UsageRequest {
    api::UsageRequest { snapshotter: s.into(), key: key.into() }
}

pub fn cleanup(s: &str) -> api::CleanupRequest {
    api::CleanupRequest { snapshotter: s.into() }
}

pub fn update(s: &str, name: &str, labels: Labels, paths: &[&str]) -> api::UpdateSnapshotRequest {
    api::UpdateSnapshotRequest {
        snapshotter: s.into(),
        info: Some(api::Info { name: name.into(), labels, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A bare gRPC channel on the daemon's unix socket.
pub async fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to wasmsnap")
}

/// Every snapshot of `s` matching `filters`, sorted by name.
pub async fn list(c: &mut Client, s: &str, filters: &[&str]) -> Result<Vec<api::Info>, Status> {
    let req = api::ListSnapshotsRequest {
        snapshotter: s.into(),
        filters: filters.iter().map(|f| f.to_string()).collect(),
    };
    let mut stream = c.list(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(batch) = stream.message().await? {
        out.extend(batch.info);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The directory a client would write the snapshot's content into: the
/// source of a read-write bind, or an overlay's upperdir. Nothing needs
/// mounting to write into it.
pub fn writable_dir(mounts: &[Mount]) -> Option<PathBuf> {
    let m = mounts.first()?;
    match m.r#type.as_str() {
        "bind" if m.options.iter().any(|o| o == "rw") || !m.options.iter().any(|o| o == "ro") => {
            Some(PathBuf::from(&m.source))
        }
        "overlay" => m.options.iter().find_map(|o| o.strip_prefix("upperdir=")).map(PathBuf::from),
        _ => None,
    }
}

/// The snapshot ids a plan's paths name (`.../snapshots/<id>/...`), in order.
pub fn ids_in(mounts: &[Mount]) -> Vec<u64> {
    let mut paths: Vec<&str> = Vec::new();
    for m in mounts {
        if m.r#type == "bind" {
            paths.push(&m.source);
        }
        for o in &m.options {
            if let Some(v) = o.strip_prefix("lowerdir=") {
                paths.extend(v.split(':'));
            }
            if let Some(v) = o.strip_prefix("upperdir=").or_else(|| o.strip_prefix("workdir=")) {
                paths.push(v);
            }
        }
    }
    ids_in_paths(paths.into_iter())
}

/// The snapshot ids of an overlay's `lowerdir`, nearest first.
pub fn lower_ids(mounts: &[Mount]) -> Vec<u64> {
    let lower = mounts.iter().flat_map(|m| &m.options).find_map(|o| o.strip_prefix("lowerdir="));
    lower.map(|l| ids_in_paths(l.split(':'))).unwrap_or_default()
}

fn ids_in_paths<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<u64> {
    paths
        .filter_map(|p| {
            let mut parts = p.rsplit('/');
            let _name = parts.next()?;
            parts.next()?.parse().ok()
        })
        .collect()
}

/// Every entry under `root`, by relative path: type, mode, owner, and for
/// files size and sha256 (directory sizes and times change without meaning
/// anything). `skip` names files left out (the metastore, compared by List).
pub fn tree(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let owner = format!("{:o} {}:{}", meta.mode() & 0o7777, meta.uid(), meta.gid());
        let what = if meta.is_dir() {
            walk(root, &path, skip, out);
            format!("dir {owner}")
        } else if meta.is_file() {
            format!("file {owner} {} {}", meta.len(), sha256_file(&path))
        } else if meta.file_type().is_symlink() {
            format!("link {owner} {}", std::fs::read_link(&path).unwrap().display())
        } else {
            format!("other {owner}")
        };
        out.insert(rel, what);
    }
}

pub fn sha256_file(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| hex::encode(Sha256::digest(b)))
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The records of the metastore under `root` (`<root>/<snapshotter>`),
/// read directly from its redb file. The daemon must not be running.
pub fn records(snapshotter_root: &Path) -> Vec<Record> {
    let store = Metastore::open(snapshotter_root).expect("open the metastore");
    store
        .read(|tx| {
            let mut out = Vec::new();
            tx.list(&Filter::default(), |r| {
                out.push(r);
                Ok(())
            })?;
            Ok(out)
        })
        .expect("read the metastore")
}

/// The parent ids of each record, nearest first (daemon not running).
pub fn parent_ids(snapshotter_root: &Path) -> BTreeMap<String, Vec<u64>> {
    let store = Metastore::open(snapshotter_root).expect("open the metastore");
    store
        .read(|tx| {
            let mut out = BTreeMap::new();
            let mut records = Vec::new();
            tx.list(&Filter::default(), |r| {
                records.push(r);
                Ok(())
            })?;
            for r in records {
                out.insert(r.name.clone(), tx.parent_ids(&r)?);
            }
            Ok(out)
        })
        .expect("read the metastore")
}

/// Names of the entries of `dir` (empty if it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The daemon's resident memory in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The daemon's open file descriptors.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/<pid>/fd").count()
}

/// The daemon's threads.
pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/<pid>/task").count()
}
