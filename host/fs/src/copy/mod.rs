//! The copy engine: copies a directory tree faithfully (every file type,
//! hard links, sparse files, owner, all mode bits, nanosecond times, xattrs),
//! never following a symlink.
//!
//! One thread walks the source and creates every entry (directories,
//! symlinks, device nodes, fifos, sockets, hard links and empty regular
//! files), so the tree's shape and hard links are settled in one place.
//! Regular files' data and attributes go to a small pool of workers, which
//! only touch the inodes they were handed, never a directory. A directory
//! gets its attributes when the walk leaves it, once nothing will add
//! entries to it (adding an entry would move its mtime).
//!
//! The source may be written by a container meanwhile: it is walked by fd
//! (see `crate::walk`), so the copy never leaves the source tree, never
//! opens a device, fifo or socket (they are made with mknod from the
//! stat), and leaves out entries that vanish.

mod attrs;
mod data;
mod walk;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use wasmsnap_plan::CopyMode;

use crate::FsError;
use walk::{FileJob, Walker};

/// How many regular files may wait, opened, for a worker: bounds the
/// descriptors held (two per file) while keeping workers fed.
const QUEUE_DEPTH: usize = 64;

#[derive(Clone, Debug)]
pub struct CopyOptions {
    pub mode: CopyMode,
    /// Threads copying file data beside the walking thread; 0 copies on the
    /// walking thread itself.
    pub workers: usize,
}

impl CopyOptions {
    /// `mode` with the default number of workers, see [`default_workers`].
    pub fn new(mode: CopyMode) -> CopyOptions {
        CopyOptions { mode, workers: default_workers() }
    }
}

/// One worker per core, at most 4: the walker keeps one core busy with
/// metadata calls, the workers overlap file data with it (measured in
/// `examples/copy_bench.rs`).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(4)
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub dirs: u64,
    /// Regular files created (hard links to them not counted).
    pub files: u64,
    /// Hard links made to an entry copied earlier in the same tree.
    pub hard_links: u64,
    pub symlinks: u64,
    /// Device nodes, fifos and sockets.
    pub specials: u64,
    /// Regular files whose data was shared by FICLONE rather than copied.
    pub files_cloned: u64,
    /// Bytes of file data written by copy_file_range or read/write (holes
    /// of sparse files are not written and not counted).
    pub bytes_copied: u64,
    /// Bytes of file data shared by FICLONE.
    pub bytes_cloned: u64,
}

/// Copies the tree at `src` into `dst` (which may exist, as an empty
/// directory, or is created). `dst` itself takes `src`'s mode, owner, times
/// and xattrs.
pub fn copy_tree(src: &Path, dst: &Path, mode: CopyMode) -> Result<CopyStats, FsError> {
    copy_tree_with(src, dst, &CopyOptions::new(mode))
}

pub fn copy_tree_with(src: &Path, dst: &Path, options: &CopyOptions) -> Result<CopyStats, FsError> {
    let shared = Shared::new(options.mode);
    let (sender, receiver) = mpsc::sync_channel::<FileJob>(QUEUE_DEPTH);
    let receiver = Mutex::new(receiver);

    std::thread::scope(|scope| {
        let sender = if options.workers == 0 {
            None
        } else {
            for _ in 0..options.workers {
                scope.spawn(|| work(&receiver, &shared));
            }
            Some(sender)
        };
        let mut walker = Walker::new(&shared, sender, dst);
        if let Err(e) = walker.walk(src) {
            shared.fail(e);
        }
        // Dropping the walker drops the sender: the workers drain and stop.
    });

    if let Some(e) = shared.take_error() {
        return Err(e);
    }
    Ok(shared.stats())
}

/// A worker: copies files from the queue until the walker hangs up. After a
/// failure anywhere it only drains the queue (closing the descriptors). A
/// panic (a bug) is turned into an error rather than ending the thread: a
/// dead pool would leave the walker blocked on a full queue.
fn work(receiver: &Mutex<mpsc::Receiver<FileJob>>, shared: &Shared) {
    loop {
        let job = match receiver.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if shared.failed() {
            continue;
        }
        let path = job.src_path().to_path_buf();
        match std::panic::catch_unwind(AssertUnwindSafe(|| job.run(shared))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => shared.fail(e),
            Err(_) => shared.fail(FsError::Panicked { path }),
        }
    }
}

/// State shared by the walker and the workers.
pub(crate) struct Shared {
    mode: CopyMode,
    /// Set once FICLONE failed in a way that holds for the whole file system.
    clone_unsupported: AtomicBool,
    /// Set once copy_file_range failed in a way that holds for the whole tree.
    copy_range_unsupported: AtomicBool,
    failed: AtomicBool,
    first_error: Mutex<Option<FsError>>,
    dirs: AtomicU64,
    files: AtomicU64,
    hard_links: AtomicU64,
    symlinks: AtomicU64,
    specials: AtomicU64,
    files_cloned: AtomicU64,
    bytes_copied: AtomicU64,
    bytes_cloned: AtomicU64,
}

impl Shared {
    fn new(mode: CopyMode) -> Shared {
        Shared {
            mode,
            clone_unsupported: AtomicBool::new(false),
            copy_range_unsupported: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            first_error: Mutex::new(None),
            dirs: AtomicU64::new(0),
            files: AtomicU64::new(0),
            hard_links: AtomicU64::new(0),
            symlinks: AtomicU64::new(0),
            specials: AtomicU64::new(0),
            files_cloned: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            bytes_cloned: AtomicU64::new(0),
        }
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Records the first error; later ones are usually its consequences.
    fn fail(&self, error: FsError) {
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(error);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    fn take_error(&self) -> Option<FsError> {
        self.first_error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn stats(&self) -> CopyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CopyStats {
            dirs: get(&self.dirs),
            files: get(&self.files),
            hard_links: get(&self.hard_links),
            symlinks: get(&self.symlinks),
            specials: get(&self.specials),
            files_cloned: get(&self.files_cloned),
            bytes_copied: get(&self.bytes_copied),
            bytes_cloned: get(&self.bytes_cloned),
        }
    }
}
