//! Disk usage of a tree, as containerd's `fs.DiskUsage` counts it: every
//! inode once (hard links count once), `st_blocks * 512` bytes each,
//! symlinks not followed.
//!
//! The tree is usually an active snapshot's upper dir, written by a
//! container while this runs: it is walked by fd (see `walk`), and only the
//! root failing is an error. An entry that vanishes, fails or sits on
//! another device is left out and counted in a debug log, so a container
//! can neither make Usage fail nor make it measure anything outside.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

use crate::FsError;
use crate::sys;
use crate::walk::{self, Entry, Flow, HardLinks, Left, Visitor};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes allocated on disk.
    pub size: i64,
    /// Distinct inodes, the root included.
    pub inodes: i64,
}

/// `st_blocks` is in 512-byte units whatever the file system's block size.
const BLOCK_UNIT: i64 = 512;

/// Measures the tree at `path`, which must exist.
pub fn usage(path: &Path) -> Result<Usage, FsError> {
    Ok(usage_within(path, u64::MAX)?.expect("an unbounded walk measures the whole tree"))
}

/// Measures the tree at `path` like [`usage`], but gives up (`None`) after
/// `max_entries` names below the root (counted as read, whatever then
/// happens to them): a caller that must stay short (the daemon's reactor)
/// measures small trees itself and hands big ones on.
pub fn usage_within(path: &Path, max_entries: u64) -> Result<Option<Usage>, FsError> {
    let root = sys::cpath(path).map_err(|e| FsError::io("measure", path, e))?;
    let st = sys::lstat(&root).map_err(|e| FsError::io("stat", path, e))?;
    if sys::file_type(&st) != libc::S_IFDIR {
        return Ok(Some(Usage { size: st.st_blocks * BLOCK_UNIT, inodes: 1 }));
    }
    let mut measure = Measure {
        usage: Usage::default(),
        links: HardLinks::new(),
        entries_left: max_entries,
        gave_up: false,
    };
    walk::walk(path, &mut measure)?;
    Ok((!measure.gave_up).then_some(measure.usage))
}

struct Measure {
    usage: Usage,
    links: HardLinks<()>,
    /// Names it may still read before it gives up.
    entries_left: u64,
    gave_up: bool,
}

impl Measure {
    fn count(&mut self, st: &libc::stat) {
        // Directories' nlink counts their subdirectories, not hard links.
        let is_dir = sys::file_type(st) == libc::S_IFDIR;
        if !is_dir && self.links.earlier(st, || ()).is_some() {
            return;
        }
        self.usage.inodes += 1;
        self.usage.size += st.st_blocks * BLOCK_UNIT;
    }
}

impl Visitor for Measure {
    type Dir = ();

    fn root(&mut self, _fd: BorrowedFd<'_>, stat: &libc::stat) -> Result<(), FsError> {
        self.count(stat);
        Ok(())
    }

    fn listed(&mut self) -> bool {
        // Every name read costs, also one that vanishes or fails: a
        // container churning names cannot keep a bounded walk going.
        if self.entries_left == 0 {
            self.gave_up = true;
            return false;
        }
        self.entries_left -= 1;
        true
    }

    fn visit(&mut self, _parent: &mut (), entry: &Entry<'_>) -> Result<Flow<()>, FsError> {
        self.count(&entry.stat);
        Ok(if entry.dir.is_some() { Flow::Descend(()) } else { Flow::Next })
    }

    fn leave(&mut self, _dir: (), _left: &Left<'_>) -> Result<(), FsError> {
        Ok(())
    }

    fn failed(&mut self, op: &'static str, path: &Path, error: io::Error) -> Result<(), FsError> {
        tracing::debug!(path = %path.display(), op, error = %error, "usage: entry left out");
        Ok(())
    }

    fn other_device(&mut self, _path: &Path) -> Result<(), FsError> {
        Ok(())
    }

    fn too_deep(
        &mut self,
        _parent: BorrowedFd<'_>,
        _name: &std::ffi::CStr,
        path: &Path,
    ) -> Result<(), FsError> {
        tracing::warn!(path = %path.display(), limit = walk::MAX_DEPTH, "usage: directory nested too deep; its contents are not counted");
        Ok(())
    }
}
