//! A hostile container-written tree for the walkers' race tests, shared by
//! the crate's tests and the daemon-level ones (included by `#[path]`).
//!
//! - A canary directory outside the tree, shaped like the tree's middle
//!   directory and holding a big file, watched with inotify
//!   with fanotify (`FAN_OPEN | FAN_ACCESS`, with the opener's pid): any
//!   open or read of it by the walker's process is seen.
//! - The tree: `a/mid/` (a directory) beside `a/mid-link` (a symlink to
//!   the canary), which a thread keeps exchanging (`RENAME_EXCHANGE`), so a
//!   walker that joined paths below `a/mid` lands in the canary; and
//!   `a/flip` (a regular file) beside `a/flip-dev` (a device node), also
//!   exchanged, so a walker that opens what it listed as a file opens a
//!   device. A fifo and another device node sit in the tree; they are
//!   watched too: opening them is a failure.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Names in the canary that must never appear in a copy.
pub const CANARY_MARK: &str = "CANARY-SECRET";
/// Bytes allocated by the canary's big file: a walk that counts it is wrong
/// by at least this much.
pub const CANARY_BYTES: u64 = 32 << 20;
/// Subdirectories of `mid` (and of the canary).
const SUBDIRS: usize = 8;

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn ok(r: libc::c_int, what: &str, path: &Path) {
    assert!(r >= 0, "{what} {}: {}", path.display(), std::io::Error::last_os_error());
}

/// The canary and its fanotify watch.
pub struct Canary {
    pub dir: PathBuf,
    fanotify: OwnedFd,
    /// The processes whose opens count: this one (the crate's walkers run
    /// in it) and the daemon under test. Others on the machine (a `find` of
    /// `/tmp`) are not the walkers' doing.
    pids: Mutex<Vec<i32>>,
}

impl Canary {
    /// Makes the canary at `dir` (which must not exist) and starts watching it.
    pub fn new(dir: &Path) -> Canary {
        std::fs::create_dir(dir).unwrap();
        for i in 0..SUBDIRS {
            let sub = dir.join(format!("d{i}"));
            std::fs::create_dir(&sub).unwrap();
            std::fs::write(sub.join(CANARY_MARK), b"secret").unwrap();
            std::fs::create_dir(sub.join("deeper")).unwrap();
            std::fs::write(sub.join("deeper").join(CANARY_MARK), b"secret").unwrap();
        }
        std::fs::write(dir.join(CANARY_MARK), b"secret").unwrap();
        let big = std::fs::File::create(dir.join("big")).unwrap();
        let r = unsafe { libc::fallocate(big.as_raw_fd(), 0, 0, CANARY_BYTES as libc::off_t) };
        ok(r, "fallocate", &dir.join("big"));
        drop(big);
        let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        let event_flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_LARGEFILE;
        let fd = unsafe { libc::fanotify_init(flags, event_flags as libc::c_uint) };
        ok(fd, "fanotify_init", dir);
        let canary = Canary {
            dir: dir.to_path_buf(),
            fanotify: unsafe { OwnedFd::from_raw_fd(fd) },
            pids: Mutex::new(vec![std::process::id() as i32]),
        };
        canary.watch(dir);
        for i in 0..SUBDIRS {
            canary.watch(&dir.join(format!("d{i}")));
            canary.watch(&dir.join(format!("d{i}")).join("deeper"));
        }
        canary
    }

    /// Counts opens by process `pid` too (the daemon).
    pub fn watch_pid(&self, pid: u32) {
        self.pids.lock().unwrap().push(pid as i32);
    }

    /// Watches one more inode (a directory's entries too) for opens and reads.
    pub fn watch(&self, path: &Path) {
        let mask = libc::FAN_OPEN | libc::FAN_ACCESS | libc::FAN_ONDIR | libc::FAN_EVENT_ON_CHILD;
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_DONT_FOLLOW;
        let r = unsafe {
            libc::fanotify_mark(
                self.fanotify.as_raw_fd(),
                flags,
                mask,
                libc::AT_FDCWD,
                c(path).as_ptr(),
            )
        };
        ok(r, "fanotify_mark", path);
    }

    /// Every open or read by a counted process since the last call, as
    /// "pid: path (mask)".
    pub fn touched(&self) -> Vec<String> {
        let pids = self.pids.lock().unwrap().clone();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let size = std::mem::size_of::<libc::fanotify_event_metadata>();
        loop {
            let n = unsafe {
                libc::read(self.fanotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
            };
            if n <= 0 {
                return out;
            }
            let mut at = 0;
            while at + size <= n as usize {
                let ev: libc::fanotify_event_metadata =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
                at += (ev.event_len as usize).max(size);
                let what = if ev.fd >= 0 {
                    let path = std::fs::read_link(format!("/proc/self/fd/{}", ev.fd)).map_or_else(
                        |e| format!("fd {} ({e})", ev.fd),
                        |p| p.display().to_string(),
                    );
                    unsafe { libc::close(ev.fd) };
                    path
                } else {
                    "?".to_string()
                };
                if pids.contains(&ev.pid) {
                    out.push(format!("pid {}: {what} (mask {:#x})", ev.pid, ev.mask));
                }
            }
        }
    }

    /// Fails the test if a counted process opened or read the canary or a
    /// watched node.
    pub fn assert_untouched(&self, context: &str) {
        let touched = self.touched();
        assert!(touched.is_empty(), "{context}: opened or read: {touched:?}");
    }
}

/// Builds the hostile tree in `root` (an existing directory) and watches
/// its fifo and device nodes on `canary`'s fanotify. Returns `root/a`, the
/// directory the swapper works in. `filler` more empty files in each of
/// `mid`'s subdirectories make a walk take longer (a wider race window).
pub fn build_tree(root: &Path, canary: &Canary) -> PathBuf {
    build_tree_with(root, canary, 0)
}

pub fn build_tree_with(root: &Path, canary: &Canary, filler: usize) -> PathBuf {
    let a = root.join("a");
    std::fs::create_dir(&a).unwrap();
    let mid = a.join("mid");
    std::fs::create_dir(&mid).unwrap();
    for i in 0..SUBDIRS {
        let sub = mid.join(format!("d{i}"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::create_dir(sub.join("deeper")).unwrap();
        for j in 0..8 {
            std::fs::write(sub.join(format!("f{j}")), vec![b'x'; 100]).unwrap();
            std::fs::write(sub.join("deeper").join(format!("g{j}")), b"y").unwrap();
        }
        for j in 0..filler {
            std::fs::File::create(sub.join(format!("e{j}"))).unwrap();
        }
    }
    std::os::unix::fs::symlink(&canary.dir, a.join("mid-link")).unwrap();
    std::fs::write(a.join("flip"), b"a regular file").unwrap();
    std::fs::write(root.join("top"), b"top").unwrap();
    // Specials: /dev/null's numbers, so nothing happens even if opened;
    // the watch is what notices an open.
    let null = libc::makedev(1, 3);
    for dev in [a.join("flip-dev"), mid.join("d0").join("dev"), root.join("dev")] {
        ok(unsafe { libc::mknod(c(&dev).as_ptr(), libc::S_IFCHR | 0o666, null) }, "mknod", &dev);
        canary.watch(&dev);
    }
    let fifo = mid.join("d1").join("fifo");
    ok(unsafe { libc::mkfifo(c(&fifo).as_ptr(), 0o644) }, "mkfifo", &fifo);
    canary.watch(&fifo);
    a
}

/// Usage of the tree as built, with no race: an upper bound of what a walk
/// may count while it races (each exchange keeps the same entries).
pub fn bound_bytes() -> u64 {
    // Far above the tree's few KiB, far below the canary's big file.
    CANARY_BYTES / 4
}

/// Whether `tree` (a copy) holds anything of the canary's: walked by
/// lstat, never following a symlink, opening nothing.
pub fn copy_has_canary(tree: &Path) -> Option<PathBuf> {
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().as_bytes() == CANARY_MARK.as_bytes()
                || entry.file_name().as_bytes() == b"big"
            {
                return Some(entry.path());
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    None
}

/// A thread exchanging `mid` with `mid-link` and `flip` with `flip-dev`
/// in the current target directory, as fast as it can, until dropped.
pub struct Swapper {
    stop: Arc<AtomicBool>,
    target: Arc<Mutex<Option<PathBuf>>>,
    swaps: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Swapper {
    pub fn start() -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let target: Arc<Mutex<Option<PathBuf>>> = Arc::default();
        let swaps = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, target, swaps) = (stop.clone(), target.clone(), swaps.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(a) = target.lock().unwrap().clone() else {
                        std::thread::yield_now();
                        continue;
                    };
                    let done = exchange(&a.join("mid"), &a.join("mid-link"))
                        && exchange(&a.join("flip"), &a.join("flip-dev"));
                    if done {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                    // A pause after each exchange, not after an even number
                    // of them (a walker scheduled in between must find either
                    // state), short against a walk, and leaving the CPU to it.
                    std::thread::sleep(std::time::Duration::from_micros(20));
                }
            })
        };
        Swapper { stop, target, swaps, thread: Some(thread) }
    }

    /// Races in `a` (from [`build_tree`]) from now on; `None` pauses.
    pub fn race_in(&self, a: Option<&Path>) {
        *self.target.lock().unwrap() = a.map(Path::to_path_buf);
    }

    /// Waits until the swapper has exchanged at least `n` more times.
    pub fn wait_swaps(&self, n: u64) {
        let start = self.swaps();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.swaps() < start + n {
            assert!(std::time::Instant::now() < deadline, "the swapper does not swap");
            std::thread::yield_now();
        }
    }

    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// renameat2(RENAME_EXCHANGE); false if either side is gone (the tree is
/// being removed).
fn exchange(x: &Path, y: &Path) -> bool {
    unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c(x).as_ptr(),
            libc::AT_FDCWD,
            c(y).as_ptr(),
            libc::RENAME_EXCHANGE,
        ) == 0
    }
}

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `limit`: a walker that hangs (on a fifo, in the host's `/`) is a failure.
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: did not finish within {limit:?} (hung?)"),
    }
}
