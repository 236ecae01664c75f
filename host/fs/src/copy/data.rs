//! Copies one regular file's data: FICLONE when asked and possible, else
//! copy_file_range over the data extents only (so holes stay holes), else
//! plain reads and writes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use wasmsnap_plan::CopyMode;

use super::Shared;
use crate::FsError;
use crate::sys;

/// The most one copy_file_range call is asked to move; keeps each call
/// short enough that an error surfaces promptly.
const RANGE_CHUNK: usize = 1 << 30;
/// Buffer for the read/write fallback.
const BUFFER_SIZE: usize = 256 * 1024;

pub(super) struct FileData<'a> {
    pub src: &'a File,
    pub dst: &'a File,
    pub size: u64,
    pub src_path: &'a Path,
    pub dst_path: &'a Path,
}

impl FileData<'_> {
    fn error(&self, op: &'static str, error: io::Error) -> FsError {
        FsError::CopyData { op, src: self.src_path.into(), dst: self.dst_path.into(), error }
    }
}

pub(super) fn copy(file: &FileData<'_>, shared: &Shared) -> Result<(), FsError> {
    if file.size == 0 {
        return Ok(());
    }
    if shared.mode == CopyMode::CloneOrCopy && !shared.clone_unsupported.load(Ordering::Relaxed) {
        match sys::ficlone(file.dst, file.src) {
            Ok(()) => {
                Shared::count(&shared.files_cloned, 1);
                Shared::count(&shared.bytes_cloned, file.size);
                return Ok(());
            }
            Err(e) => match e.raw_os_error() {
                // The file system (or the pair of them) cannot clone at all:
                // stop asking for the rest of the tree.
                Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EXDEV | libc::ENOSYS) => {
                    shared.clone_unsupported.store(true, Ordering::Relaxed);
                }
                // This file cannot be cloned (e.g. a swap file, DAX): copy it.
                Some(libc::EINVAL) => {}
                _ => return Err(file.error("clone (FICLONE)", e)),
            },
        }
    }
    copy_extents(file, shared)
}

/// Copies each data extent found by SEEK_DATA/SEEK_HOLE, then sets the
/// length so a trailing hole stays a hole. Where the file system cannot
/// report extents, copies the whole file as one extent.
fn copy_extents(file: &FileData<'_>, shared: &Shared) -> Result<(), FsError> {
    let mut pos = 0;
    let mut written_to = 0;
    while pos < file.size {
        let (start, end) = match sys::seek(file.src, pos, libc::SEEK_DATA) {
            Ok(None) => break, // only a hole is left
            Ok(Some(start)) => {
                let hole = sys::seek(file.src, start, libc::SEEK_HOLE)
                    .map_err(|e| file.error("seek hole in", e))?;
                (start, hole.unwrap_or(file.size).min(file.size))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                (pos, file.size)
            }
            Err(e) => return Err(file.error("seek data in", e)),
        };
        if start >= end {
            break;
        }
        written_to = copy_range(file, shared, start, end)?;
        if written_to < end {
            break; // the source is shorter than its stat said
        }
        pos = end;
    }
    if written_to < file.size {
        sys::set_len(file.dst, file.size).map_err(|e| file.error("set length of", e))?;
    }
    Ok(())
}

/// Copies bytes `start..end`; returns where it stopped (`end`, or earlier
/// at the source's end of file).
fn copy_range(file: &FileData<'_>, shared: &Shared, start: u64, end: u64) -> Result<u64, FsError> {
    let mut offset = start;
    while offset < end && !shared.copy_range_unsupported.load(Ordering::Relaxed) {
        let want = (end - offset).min(RANGE_CHUNK as u64) as usize;
        match sys::copy_file_range(file.src, file.dst, &mut offset, want) {
            Ok(0) => return Ok(offset),
            Ok(n) => Shared::count(&shared.bytes_copied, n as u64),
            Err(e) => match e.raw_os_error() {
                // Not between these file systems, or not on this kernel.
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP) => {
                    shared.copy_range_unsupported.store(true, Ordering::Relaxed);
                }
                // Not for this file (some special file systems): fall back here only.
                Some(libc::EINVAL) => return read_write(file, shared, offset, end),
                _ => return Err(file.error("copy_file_range", e)),
            },
        }
    }
    if offset < end {
        return read_write(file, shared, offset, end);
    }
    Ok(offset)
}

fn read_write(
    file: &FileData<'_>,
    shared: &Shared,
    mut offset: u64,
    end: u64,
) -> Result<u64, FsError> {
    let mut buffer = vec![0u8; BUFFER_SIZE.min((end - offset) as usize)];
    while offset < end {
        let want = buffer.len().min((end - offset) as usize);
        let n =
            read_at(file.src, &mut buffer[..want], offset).map_err(|e| file.error("read", e))?;
        if n == 0 {
            break;
        }
        file.dst.write_all_at(&buffer[..n], offset).map_err(|e| file.error("write", e))?;
        offset += n as u64;
        Shared::count(&shared.bytes_copied, n as u64);
    }
    Ok(offset)
}

fn read_at(src: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match src.read_at(buffer, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
