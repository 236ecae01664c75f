//! The steps run for every snapshotter: import and unpack the test image,
//! look at the snapshots through `ctr snapshots`, run containers, remove the
//! image and wait for containerd's garbage collector to empty the
//! snapshotter. Each step asserts what it can see; timings are returned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::containerd::Containerd;
use super::oci::TestImage;
use super::tree::{self, Fingerprint};
use super::{command, layers};

const CTR_TIMEOUT: Duration = Duration::from_secs(30);
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const GC_TIMEOUT: Duration = Duration::from_secs(60);

/// One snapshotter as containerd knows it, and where it keeps snapshot directories.
pub struct Target {
    /// containerd's name for it (`ctr --snapshotter NAME`).
    pub snapshotter: String,
    /// A containerd namespace of its own, so targets do not share images.
    pub namespace: String,
    /// The directory holding one subdirectory per snapshot.
    pub snapshots_dir: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// `ctr images import` (ingest and unpack of the three layers).
    pub import: Duration,
    /// `ctr run --rm` of the writing probe (prepare, mount, run, remove).
    pub run: Duration,
    /// From `ctr images rm --sync` until the snapshotter's directory is empty.
    pub gc: Duration,
}

/// Where the test calls back, so the caller can look at the backend directly.
pub enum Stage {
    /// The image is unpacked and the snapshot checks passed.
    Unpacked,
    /// Garbage collection emptied the snapshotter.
    Collected,
}

pub fn exercise(
    cd: &Containerd,
    t: &Target,
    image: &TestImage,
    mut at: impl FnMut(Stage),
) -> Timings {
    let import = import(cd, t, image);
    check_snapshots(cd, t, image);
    let layers_before = committed_dirs(t);
    assert_eq!(
        layers_before.len(),
        image.chain_ids.len(),
        "[{}] after the import {} should hold one directory per layer, it holds {:?}",
        t.snapshotter,
        t.snapshots_dir.display(),
        layers_before.keys().collect::<Vec<_>>()
    );
    at(Stage::Unpacked);

    let (stdout, run) = run_probe(cd, t, image, "probe-write", true);
    layers::check_view(&stdout, true).unwrap_or_else(|e| {
        panic!("[{}] the writing container saw the wrong image:\n{e}", t.snapshotter)
    });
    assert_layers_unchanged(t, &layers_before);
    let (stdout, _) = run_probe(cd, t, image, "probe-read", false);
    layers::check_view(&stdout, false).unwrap_or_else(|e| {
        panic!(
            "[{}] a second container saw the first one's writes or a wrong image:\n{e}",
            t.snapshotter
        )
    });
    let containers =
        command::ok(cd.ctr(&t.namespace).args(["containers", "ls", "-q"]), CTR_TIMEOUT).stdout;
    assert!(
        containers.trim().is_empty(),
        "[{}] `ctr run --rm` left containers: {containers}",
        t.snapshotter
    );

    let gc = remove_and_collect(cd, t, image);
    at(Stage::Collected);
    Timings { import, run, gc }
}

fn ctr_snapshots(cd: &Containerd, t: &Target, args: &[&str]) -> String {
    command::ok(
        cd.ctr(&t.namespace).args(["snapshots", "--snapshotter", &t.snapshotter]).args(args),
        CTR_TIMEOUT,
    )
    .stdout
}

/// `ctr images import --snapshotter`: ingest the archive and unpack it.
pub fn import(cd: &Containerd, t: &Target, image: &TestImage) -> Duration {
    let out = command::ok(
        cd.ctr(&t.namespace)
            .args(["images", "import", "--snapshotter", &t.snapshotter])
            .arg(&image.archive),
        IMPORT_TIMEOUT,
    );
    assert!(
        out.stdout.contains(&image.name),
        "[{}] import did not name {}: {}",
        t.snapshotter,
        image.name,
        out.stdout
    );
    let names = command::ok(cd.ctr(&t.namespace).args(["images", "ls", "-q"]), CTR_TIMEOUT).stdout;
    assert!(
        names.lines().any(|l| l == image.name),
        "[{}] image {} not listed after import: {names}",
        t.snapshotter,
        image.name
    );
    out.elapsed
}

/// `ctr snapshots ls / info / usage / tree` show the layers as a chain of
/// committed snapshots named by chain id.
pub fn check_snapshots(cd: &Containerd, t: &Target, image: &TestImage) {
    let s = &t.snapshotter;
    let chain = &image.chain_ids;

    let listed: BTreeMap<String, (String, String)> = ctr_snapshots(cd, t, &["ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [key, kind] => Some((key.to_string(), (String::new(), kind.to_string()))),
                [key, parent, kind] => {
                    Some((key.to_string(), (parent.to_string(), kind.to_string())))
                }
                _ => None,
            }
        })
        .collect();
    let expected: BTreeMap<String, (String, String)> = chain
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.clone(),
                (
                    if i == 0 { String::new() } else { chain[i - 1].clone() },
                    "Committed".to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(
        listed, expected,
        "[{s}] `ctr snapshots ls`: expected the layers' chain ids, committed, each the parent of the next"
    );

    let info: serde_json::Value = serde_json::from_str(&ctr_snapshots(cd, t, &["info", &chain[2]]))
        .unwrap_or_else(|e| panic!("[{s}] `ctr snapshots info` did not print JSON: {e}"));
    assert_eq!(info["Name"], chain[2].as_str(), "[{s}] info: {info}");
    assert_eq!(info["Parent"], chain[1].as_str(), "[{s}] info: {info}");
    assert_eq!(info["Kind"], "Committed", "[{s}] info: {info}");

    let usage: BTreeMap<String, (u64, u64)> = ctr_snapshots(cd, t, &["usage", "-b"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), (f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?)))
        })
        .collect();
    let busybox = std::fs::metadata(super::tools::BUSYBOX).unwrap().len();
    for (i, c) in chain.iter().enumerate() {
        let Some(&(size, inodes)) = usage.get(c) else {
            panic!("[{s}] `ctr snapshots usage` lacks {c}: {usage:?}")
        };
        assert!(
            size > 0 && inodes > 0,
            "[{s}] usage of layer {} is empty: {size} bytes, {inodes} inodes",
            i + 1
        );
        if i == 0 {
            assert!(
                size >= busybox,
                "[{s}] usage of the base layer ({size} bytes) is smaller than busybox ({busybox} bytes)"
            );
        }
    }

    let tree: Vec<String> =
        ctr_snapshots(cd, t, &["tree"]).lines().map(|l| l.trim_end().to_string()).collect();
    let expected_tree = vec![
        format!(" {}", chain[0]),
        format!("  \\_ {}", chain[1]),
        format!("    \\_ {}", chain[2]),
    ];
    assert_eq!(tree, expected_tree, "[{s}] `ctr snapshots tree`");
}

/// The snapshot directories on disk, with a fingerprint of each.
pub fn committed_dirs(t: &Target) -> BTreeMap<PathBuf, Fingerprint> {
    snapshot_dirs(&t.snapshots_dir)
        .into_iter()
        .map(|d| {
            let f = tree::fingerprint(&d);
            (d, f)
        })
        .collect()
}

/// The entries of a snapshots directory (none if it does not exist).
pub fn snapshot_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    };
    out.sort();
    out
}

fn assert_layers_unchanged(t: &Target, before: &BTreeMap<PathBuf, Fingerprint>) {
    let mut changes = Vec::new();
    for (dir, fp) in before {
        assert!(
            dir.exists(),
            "[{}] committed layer {} vanished while a container ran",
            t.snapshotter,
            dir.display()
        );
        changes.extend(
            tree::diff(fp, &tree::fingerprint(dir))
                .into_iter()
                .map(|c| format!("{}: {c}", dir.display())),
        );
    }
    assert!(
        changes.is_empty(),
        "[{}] a container's writes reached the image's layers:\n{}",
        t.snapshotter,
        changes.join("\n")
    );
}

/// `ctr run --rm` the probe; its stdout and how long the run took.
///
/// containerd 1.6's `ctr run` without a terminal can lose the end of a
/// task's stdout when the task exits at once (seen once in CI: the lines
/// after `hardlink=` missing, nothing wrong in them). The probe's last line
/// is `probe=done`: an output without it is run once more, in a container
/// of its own, and that run's output is checked as the first would have
/// been (a second cut-off output fails the test).
pub fn run_probe(
    cd: &Containerd,
    t: &Target,
    image: &TestImage,
    id: &str,
    write: bool,
) -> (String, Duration) {
    let run = |id: &str| {
        command::ok(
            cd.ctr(&t.namespace)
                .args(["run", "--rm", "--snapshotter", &t.snapshotter, "--fifo-dir"])
                .arg(&cd.fifo_dir)
                .args([image.name.as_str(), id, "/bin/sh", "-c", &layers::probe(write)]),
            RUN_TIMEOUT,
        )
    };
    let out = run(id);
    if layers::probe_finished(&out.stdout) {
        return (out.stdout, out.elapsed);
    }
    eprintln!(
        "[{}] `ctr run` of {id} lost the end of its output, running it again:\n{}",
        t.snapshotter, out.stdout
    );
    let again = run(&format!("{id}-again"));
    (again.stdout, again.elapsed)
}

/// Remove the image (synchronous GC) and wait until containerd's garbage
/// collector has removed every snapshot from the snapshotter.
pub fn remove_and_collect(cd: &Containerd, t: &Target, image: &TestImage) -> Duration {
    let start = Instant::now();
    command::ok(cd.ctr(&t.namespace).args(["images", "rm", "--sync", &image.name]), CTR_TIMEOUT);
    loop {
        let listed = ctr_snapshots(cd, t, &["ls"]);
        let left = snapshot_dirs(&t.snapshots_dir);
        if listed.lines().skip(1).all(|l| l.trim().is_empty()) && left.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < GC_TIMEOUT,
            "[{}] {GC_TIMEOUT:?} after `ctr images rm --sync`, snapshots remain.\nctr snapshots ls:\n{listed}\non disk: {left:?}",
            t.snapshotter
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
