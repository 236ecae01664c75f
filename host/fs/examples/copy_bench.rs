//! Copy engine benchmark (run as root, release):
//!
//!     cargo run -p wasmsnap-fs --release --example copy_bench -- [--dir DIR] [--src TREE] [--files N] [--mib M] [--runs R] [--workers 0,1,2,4] [--cold] [--no-root] [--no-loop]
//!
//! Generates a tree of N files (default 10,000) holding about M MiB (default
//! 1024) under DIR (default: the temp dir, ext4 here), or uses TREE, then
//! times:
//! - `copy` on that file system, on the walking thread alone and with 1, 2
//!   and 4 workers, plus the syncfs that makes the copy durable;
//! - the same on a journaled ext4 on a loop device made here;
//! - `clone-or-copy` on a reflink XFS on a loop device made here;
//! - a whole `SnapshotDirs::create` with copy-parent (what a Prepare costs),
//!   and an overlay-style create of two empty dirs with and without its
//!   fsyncs.
//!
//! `--cold` drops the page cache before each run (reads come from disk).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmsnap_fs::SnapshotDirs;
use wasmsnap_fs::copy::{CopyOptions, copy_tree_with};
use wasmsnap_plan::{CopyMode, Step};

/// Every copy gets its own destination; all are deleted at the end.
static NEXT_DST: AtomicUsize = AtomicUsize::new(0);

struct Args {
    dir: Option<PathBuf>,
    src: Option<PathBuf>,
    files: usize,
    mib: u64,
    runs: usize,
    cold: bool,
    loops: bool,
    root: bool,
    workers: Vec<usize>,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: None,
        src: None,
        files: 10_000,
        mib: 1024,
        runs: 3,
        cold: false,
        loops: true,
        root: true,
        workers: vec![0, 1, 2, 4],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--dir" => args.dir = Some(PathBuf::from(value())),
            "--src" => args.src = Some(PathBuf::from(value())),
            "--files" => args.files = value().parse().expect("--files N"),
            "--mib" => args.mib = value().parse().expect("--mib M"),
            "--runs" => args.runs = value().parse().expect("--runs R"),
            "--cold" => args.cold = true,
            "--no-loop" => args.loops = false,
            "--no-root" => args.root = false,
            "--workers" => {
                args.workers =
                    value().split(',').map(|w| w.parse().expect("--workers 0,2,4")).collect()
            }
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&base).expect("temp dir");
    let src = match &args.src {
        Some(src) => src.clone(),
        None => {
            let src = work.path().join("parent-fs");
            let t = Instant::now();
            generate_tree(&src, args.files, args.mib << 20);
            sync();
            println!("generated in {:.1?}", t.elapsed());
            src
        }
    };
    let t = Instant::now();
    let usage = wasmsnap_fs::usage(&src).expect("usage");
    let walked = t.elapsed();
    println!(
        "tree: {} entries, {:.0} MiB under {} ({}); usage walk {walked:.1?}",
        usage.inodes,
        usage.size as f64 / (1 << 20) as f64,
        src.display(),
        fs_type(&src),
    );
    println!("page cache: {}", if args.cold { "dropped before each run (cold)" } else { "warm" });
    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>12}",
        "copy (wall time; cpu = all threads)", "min", "median", "cpu", "+ syncfs"
    );

    let tree = usage.size.max(0) as u64;
    let label = |fs: &str, w: usize| format!("copy, {fs}, {w} workers");
    let root_fs = fs_type(&src);
    let configs: Vec<Config> =
        args.workers.iter().map(|&w| Config::new(&label(&root_fs, w), CopyMode::Copy, w)).collect();
    let need = tree * (args.runs * (configs.len() + 1)) as u64;
    if args.root && enough_space(work.path(), need, "copies on the root file system") {
        let kept = bench_copies(&configs, &src, work.path(), &args, true);
        let created = bench_create(&src, work.path(), &args, true);
        kept.iter().chain(&created).for_each(|p| delete(p));
    }

    if !args.loops {
        return;
    }
    // A journaled ext4 of our own: the root here has no journal and is
    // shared with other work (its inode allocator slows down after anyone's
    // mass delete); production ext4 has a journal. Copies are deleted as
    // they are measured, so it holds the seed plus one copy.
    let size = tree * 3 + (2 << 30);
    if enough_space(work.path(), size, "ext4 on a loop device") {
        match LoopFs::new(work.path(), "ext4", size, &["mkfs.ext4", "-q", "-F"]) {
            Ok(ext4) => {
                let esrc = seed(&src, &ext4.mountpoint);
                let configs: Vec<Config> = args
                    .workers
                    .iter()
                    .map(|&w| Config::new(&label("ext4+journal", w), CopyMode::Copy, w))
                    .collect();
                bench_copies(&configs, &esrc, &ext4.mountpoint, &args, false);
                bench_create(&esrc, &ext4.mountpoint, &args, false);
            }
            Err(reason) => println!("SKIPPED ext4 on a loop device: {reason}"),
        }
    }
    // Clones share the seed's blocks: the XFS holds about one tree.
    if enough_space(work.path(), size, "xfs on a loop device") {
        let mkfs = ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"];
        match LoopFs::new(work.path(), "xfs", size, &mkfs) {
            Ok(xfs) => {
                let xsrc = seed(&src, &xfs.mountpoint);
                // On XFS, copy_file_range itself shares extents (the kernel
                // tries a remap first): "copy" costs about what a clone does.
                let configs = [
                    Config::new("clone-or-copy, xfs, 0 workers", CopyMode::CloneOrCopy, 0),
                    Config::new("clone-or-copy, xfs, 2 workers", CopyMode::CloneOrCopy, 2),
                    Config::new("copy, xfs, 2 workers", CopyMode::Copy, 2),
                ];
                bench_copies(&configs, &xsrc, &xfs.mountpoint, &args, false);
                bench_create(&xsrc, &xfs.mountpoint, &args, false);
            }
            Err(reason) => println!("SKIPPED xfs on a loop device: {reason}"),
        }
    }
}

/// Copies the tree onto another file system to bench there.
fn seed(src: &Path, mountpoint: &Path) -> PathBuf {
    let dst = mountpoint.join("parent-fs");
    let options = CopyOptions { mode: CopyMode::Copy, workers: 2 };
    copy_tree_with(src, &dst, &options).expect("seed the tree");
    sync();
    dst
}

struct Config {
    label: String,
    options: CopyOptions,
}

impl Config {
    fn new(label: &str, mode: CopyMode, workers: usize) -> Config {
        Config { label: label.to_string(), options: CopyOptions { mode, workers } }
    }
}

/// Runs the configurations round-robin (run 1 of each, then run 2 of
/// each, ...) so a drift in the machine's state (other load, writeback)
/// does not favour whichever runs last.
/// With `keep`, the copies stay until the caller deletes them (returned):
/// on an ext4 without a journal (this VM's root) inode allocation right
/// after a mass delete is slowed by its recently-deleted check, which would
/// be timed. Otherwise each copy is deleted once measured.
fn bench_copies(
    configs: &[Config],
    src: &Path,
    work: &Path,
    args: &Args,
    keep: bool,
) -> Vec<PathBuf> {
    let expected = count_files(src);
    let mut kept = Vec::new();
    let mut wall = vec![Vec::new(); configs.len()];
    let mut cpu = vec![Vec::new(); configs.len()];
    let mut syncs = vec![Vec::new(); configs.len()];
    for _ in 0..args.runs {
        for (i, config) in configs.iter().enumerate() {
            let dst = work.join(format!("dst-{}", NEXT_DST.fetch_add(1, Ordering::Relaxed)));
            if args.cold {
                drop_caches();
            }
            let (t, c) = (Instant::now(), cpu_time());
            let stats = copy_tree_with(src, &dst, &config.options).expect("copy");
            wall[i].push(t.elapsed());
            cpu[i].push(cpu_time() - c);
            let t = Instant::now();
            sync();
            syncs[i].push(t.elapsed());
            assert_eq!(stats.files + stats.hard_links, expected, "{stats:?}");
            if keep {
                kept.push(dst);
            } else {
                delete(&dst);
            }
        }
    }
    for (i, config) in configs.iter().enumerate() {
        let (min, median) = summary(&mut wall[i]);
        let (_, cpu_median) = summary(&mut cpu[i]);
        let (_, sync_median) = summary(&mut syncs[i]);
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>12}",
            config.label,
            ms(min),
            ms(median),
            ms(cpu_median),
            ms(sync_median)
        );
    }
    kept
}

fn delete(path: &Path) {
    std::fs::remove_dir_all(path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    sync();
}

/// Whether `path`'s file system has `need` bytes free plus a margin for
/// everyone else on the machine.
fn enough_space(path: &Path, need: u64, what: &str) -> bool {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let margin = 4 << 30;
    if free < need + margin {
        println!(
            "SKIPPED {what}: needs {} GiB free (+4 GiB margin), {} GiB are",
            need >> 30,
            free >> 30
        );
        return false;
    }
    true
}

/// A whole create with copy-parent (copy + syncfs + rename + fsync), and the
/// cost of durability for a small overlay-style create.
/// With `keep` (see [`bench_copies`]) returns the snapshot dirs it created
/// with copy-parent for the caller to delete; otherwise deletes each once
/// measured.
fn bench_create(src: &Path, work: &Path, args: &Args, keep: bool) -> Vec<PathBuf> {
    let root = work.join("snapshotter");
    let dirs = SnapshotDirs::open(&root).expect("open");
    let mut times = Vec::new();
    for run in 0..args.runs {
        if args.cold {
            drop_caches();
        }
        let steps = [Step::CopyParent { name: "fs".into(), mode: CopyMode::CloneOrCopy }];
        let t = Instant::now();
        dirs.create(100 + run as u64, &steps, Some(src)).expect("create").keep();
        times.push(t.elapsed());
        sync();
        if !keep {
            dirs.remove(100 + run as u64).expect("remove");
        }
    }
    let (min, median) = summary(&mut times);
    println!(
        "{:<34} {:>10} {:>10}",
        format!("create copy-parent ({})", fs_type(work)),
        ms(min),
        ms(median)
    );

    // Overlay layout: two empty dirs. With fsyncs (SnapshotDirs) vs the
    // same syscalls without them.
    let n = 200;
    let steps = [
        Step::Mkdir { name: "fs".into(), mode: 0o755 },
        Step::Mkdir { name: "work".into(), mode: 0o711 },
    ];
    let t = Instant::now();
    for id in 0..n {
        dirs.create(1000 + id, &steps, None).expect("create").keep();
    }
    let durable = t.elapsed() / n as u32;
    let plain_root = work.join("plain");
    std::fs::create_dir_all(&plain_root).unwrap();
    let t = Instant::now();
    for id in 0..n {
        let tmp = plain_root.join(format!("new-{id}"));
        std::fs::create_dir(&tmp).unwrap();
        std::fs::create_dir(tmp.join("fs")).unwrap();
        std::fs::create_dir(tmp.join("work")).unwrap();
        std::fs::rename(&tmp, plain_root.join(id.to_string())).unwrap();
    }
    let plain = t.elapsed() / n as u32;
    println!(
        "{:<34} {:>10} {:>10}",
        format!("create 2 empty dirs ({})", fs_type(work)),
        format!("{:.0?}", durable),
        format!("{:.0?} w/o fsync", plain)
    );
    for id in 0..n {
        dirs.remove(1000 + id).unwrap();
    }
    std::fs::remove_dir_all(&plain_root).unwrap();
    (0..args.runs).map(|run| dirs.dir(100 + run as u64)).collect()
}

/// Files in `dirs_for(n)` directories: 1% big files (~80% of the bytes),
/// the rest 1-40 KiB, like an OS image layer.
fn generate_tree(root: &Path, files: usize, total: u64) {
    let dirs = dirs_for(files);
    let big_files = (files / 100).max(1);
    let small_files = files - big_files;
    let small_total: u64 = (0..small_files).map(small_size).sum();
    let big_size = total.saturating_sub(small_total) / big_files as u64;
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i % dirs));
        if i < dirs {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let size = if i % 100 == 99 || (i == files - 1 && big_files == 1) {
            big_size
        } else {
            small_size(i)
        };
        let mut f = std::fs::File::create(dir.join(format!("f{i:05}"))).unwrap();
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            // Vary the start so files differ.
            let start = i % 4096;
            let n = n.min(block.len() - start);
            std::io::Write::write_all(&mut f, &block[start..start + n]).unwrap();
            left -= n as u64;
        }
    }
}

fn small_size(i: usize) -> u64 {
    1024 + (i as u64 * 7919 % 40) * 1024
}

fn dirs_for(files: usize) -> usize {
    (files / 100).max(1)
}

fn count_files(root: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

fn summary(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    (times[0], times[times.len() / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// User + system CPU time of this process, all threads.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn sync() {
    nix::unistd::sync();
}

fn drop_caches() {
    sync();
    std::fs::write("/proc/sys/vm/drop_caches", b"3").expect("drop caches (needs root)");
}

fn fs_type(path: &Path) -> String {
    let out = Command::new("stat").args(["-f", "-c", "%T", path.to_str().unwrap()]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// A file system on a loop device backed by an image file, torn down on drop.
struct LoopFs {
    mountpoint: PathBuf,
    device: String,
    mounted: bool,
}

impl LoopFs {
    /// `mkfs` is the command and its options, the device is appended.
    fn new(work: &Path, name: &str, size: u64, mkfs: &[&str]) -> Result<LoopFs, String> {
        let image = work.join(format!("{name}.img"));
        let mountpoint = work.join(name);
        std::fs::create_dir_all(&mountpoint).map_err(|e| e.to_string())?;
        std::fs::File::create(&image).and_then(|f| f.set_len(size)).map_err(|e| e.to_string())?;
        // Direct I/O: the image's pages are not cached a second time.
        let image = image.to_str().unwrap();
        let device = run("losetup", &["-f", "--show", "--direct-io=on", image])?.trim().to_string();
        let mut fs = LoopFs { mountpoint, device, mounted: false };
        let mut args = mkfs[1..].to_vec();
        args.push(&fs.device);
        run(mkfs[0], &args)?;
        run("mount", &[&fs.device, fs.mountpoint.to_str().unwrap()])?;
        fs.mounted = true;
        Ok(fs)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run("umount", &[self.mountpoint.to_str().unwrap()]);
        }
        let _ = run("losetup", &["-d", &self.device]);
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
