//! The tree walkers' cost per directory (release):
//!
//!     cargo run -p wasmsnap-fs --release --example walk_bench -- [DIR] [DIRS]
//!
//! Makes a tree of DIRS directories (default 20,000: 100 of 200, one empty
//! file in each) under DIR (default: the temp dir), then times, over five
//! rounds, the usage walk (what a Commit measures) and prints the median
//! per directory; then removes the tree with `SnapshotDirs::remove`, timed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dirs: usize = args.next().map(|n| n.parse().expect("DIRS: a number")).unwrap_or(20_000);
    let root = tempfile::tempdir_in(&base).expect("temp dir");
    let snapshots = wasmsnap_fs::SnapshotDirs::open(root.path()).expect("open");
    snapshots.create(1, &[], None).expect("create").keep();
    let tree = snapshots.dir(1).join("fs");
    let (outer, inner) = (100, dirs.div_ceil(100));
    for i in 0..outer {
        for j in 0..inner {
            let d = tree.join(format!("d{i:03}/e{j:04}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("f"), b"").expect("write");
        }
    }
    let count = outer * inner + outer + 1;
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            wasmsnap_fs::usage(&tree).expect("usage");
            t.elapsed()
        })
        .collect();
    times.sort();
    let median = times[2];
    println!(
        "usage walk of {count} directories under {}: {median:.1?} ({:.2} µs a directory)",
        base.display(),
        median.as_secs_f64() * 1e6 / count as f64
    );
    let t = Instant::now();
    snapshots.remove(1).expect("remove");
    println!("removal of the tree: {:.1?}", t.elapsed());
}
