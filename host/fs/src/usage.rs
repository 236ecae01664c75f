//! Disk usage of a tree, as containerd's `fs.DiskUsage` counts it: every
//! inode once (hard links and the same file reached twice count once),
//! `st_blocks * 512` bytes each, symlinks not followed.

use std::collections::HashSet;
use std::path::Path;

use crate::FsError;
use crate::sys;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes allocated on disk.
    pub size: i64,
    /// Distinct inodes, the root included.
    pub inodes: i64,
}

/// `st_blocks` is in 512-byte units whatever the file system's block size.
const BLOCK_UNIT: i64 = 512;

/// Measures the tree at `path`. Entries that vanish while it walks (an
/// active snapshot is being written to) are skipped; `path` itself must exist.
pub fn usage(path: &Path) -> Result<Usage, FsError> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut count = |st: &libc::stat| {
        if seen.insert(sys::inode_key(st)) {
            usage.inodes += 1;
            usage.size += st.st_blocks * BLOCK_UNIT;
        }
    };

    let root = sys::cpath(path).map_err(|e| FsError::io("measure", path, e))?;
    let st = sys::lstat(&root).map_err(|e| FsError::io("stat", path, e))?;
    count(&st);
    if sys::file_type(&st) != libc::S_IFDIR {
        return Ok(usage);
    }

    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match sys::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && dir != path => continue,
            Err(e) => return Err(FsError::io("read directory", &dir, e)),
        };
        for entry in entries {
            let child = dir.join(&entry.name);
            let c = sys::cpath(&child).map_err(|e| FsError::io("measure", &child, e))?;
            let st = match sys::lstat(&c) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(FsError::io("stat", &child, e)),
            };
            count(&st);
            if sys::file_type(&st) == libc::S_IFDIR {
                stack.push(child);
            }
        }
    }
    Ok(usage)
}
