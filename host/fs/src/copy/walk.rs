//! The walking thread: creates every entry of the copy, in the source's
//! directory order, and hands regular files' data to the workers. Each
//! directory gets its attributes once all its entries exist.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;

use super::data::{self, FileData};
use super::{Shared, attrs};
use crate::FsError;
use crate::sys::{self, Node};
use crate::walk::{self, Entry, Flow, HardLinks, Left, Visitor};

/// A regular file opened on both sides, waiting for its data and attributes.
pub(super) struct FileJob {
    src: File,
    dst: File,
    stat: libc::stat,
    src_path: PathBuf,
    dst_path: PathBuf,
}

impl FileJob {
    pub(super) fn src_path(&self) -> &Path {
        &self.src_path
    }

    pub(super) fn run(self, shared: &Shared) -> Result<(), FsError> {
        let file = FileData {
            src: &self.src,
            dst: &self.dst,
            size: self.stat.st_size as u64,
            src_path: &self.src_path,
            dst_path: &self.dst_path,
        };
        data::copy(&file, shared)?;
        attrs::apply(
            Node::Fd(self.src.as_fd()),
            Node::Fd(self.dst.as_fd()),
            &self.stat,
            &self.src_path,
            &self.dst_path,
        )
    }
}

pub(super) struct Walker<'a> {
    shared: &'a Shared,
    /// `None`: copy file data on this thread.
    sender: Option<SyncSender<FileJob>>,
    /// Multiply-linked source entries -> their first copy.
    links: HardLinks<PathBuf>,
    /// Where the source's root is copied to.
    dst: PathBuf,
}

impl<'a> Walker<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        sender: Option<SyncSender<FileJob>>,
        dst: &Path,
    ) -> Walker<'a> {
        Walker { shared, sender, links: HardLinks::new(), dst: dst.to_path_buf() }
    }

    /// Copies the tree at `src`, walked by fd (see `crate::walk`): a
    /// container writing to it meanwhile can neither lead the copy out of
    /// it nor make it open a device; entries that vanish are left out.
    pub(super) fn walk(&mut self, src: &Path) -> Result<(), FsError> {
        // The root is the daemon's own path: a symlink there is named as one.
        let stat = sys::lstat(&cpath(src)?).map_err(|e| FsError::io("stat", src, e))?;
        expect_type(&stat, libc::S_IFDIR, src)?;
        walk::walk(src, self).map(drop)
    }

    /// Creates the copy of a regular file (or a hard link to an earlier
    /// copy) and queues its data.
    fn regular(&mut self, entry: &Entry<'_>, dst_path: PathBuf) -> Result<Flow<PathBuf>, FsError> {
        let src = match entry.open_regular() {
            Ok(Some(src)) => src,
            Ok(None) => return Ok(Flow::Vanished),
            Err(e) => return Err(FsError::io("open", entry.path, e)),
        };
        let stat = sys::fstat(src.as_fd()).map_err(|e| FsError::io("stat", entry.path, e))?;
        if self.linked_earlier(&stat, &dst_path)? {
            return Ok(Flow::Next);
        }
        let dst_c = cpath(&dst_path)?;
        let dst = sys::create_new(&dst_c).map_err(|e| FsError::io("create", &dst_path, e))?;
        Shared::count(&self.shared.files, 1);
        let job = FileJob { src, dst, stat, src_path: entry.path.to_path_buf(), dst_path };
        match &self.sender {
            Some(sender) => {
                if let Err(unsent) = sender.send(job) {
                    // No worker left to receive (they all stopped): do it here.
                    unsent.0.run(self.shared)?;
                }
            }
            None => job.run(self.shared)?,
        }
        Ok(Flow::Next)
    }

    /// Symlinks, device nodes, fifos and sockets: created and finished
    /// here, from the stat alone (a device, fifo or socket is never opened).
    fn other(&mut self, entry: &Entry<'_>, dst_path: &Path) -> Result<Flow<PathBuf>, FsError> {
        let stat = &entry.stat;
        if self.linked_earlier(stat, dst_path)? {
            return Ok(Flow::Next);
        }
        let dst_c = cpath(dst_path)?;
        match sys::file_type(stat) {
            libc::S_IFLNK => {
                let target = match entry.read_link() {
                    Ok(Some(target)) => target,
                    Ok(None) => return Ok(Flow::Vanished),
                    Err(e) => return Err(FsError::io("read link", entry.path, e)),
                };
                std::os::unix::fs::symlink(&target, dst_path)
                    .map_err(|e| FsError::io("symlink", dst_path, e))?;
                Shared::count(&self.shared.symlinks, 1);
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => {
                // Only device nodes carry a meaningful rdev.
                let rdev = match sys::file_type(stat) {
                    libc::S_IFCHR | libc::S_IFBLK => stat.st_rdev,
                    _ => 0,
                };
                // Created with no permissions; attrs::apply sets the real ones.
                sys::mknod(&dst_c, sys::file_type(stat), rdev)
                    .map_err(|e| FsError::io("mknod", dst_path, e))?;
                Shared::count(&self.shared.specials, 1);
            }
            _ => {
                return Err(FsError::WrongType {
                    path: entry.path.to_path_buf(),
                    expected: "a file type that can be copied",
                    found: sys::describe_type(stat),
                });
            }
        }
        // Xattrs are read through the parent's fd, never following the name.
        let src_c = entry.proc_path();
        attrs::apply(Node::Path(&src_c), Node::Path(&dst_c), stat, entry.path, dst_path)?;
        Ok(Flow::Next)
    }

    /// If `stat` is a multiply-linked entry already copied, links `dst_path`
    /// to that copy and says so; else remembers `dst_path` as its copy.
    fn linked_earlier(&mut self, stat: &libc::stat, dst_path: &Path) -> Result<bool, FsError> {
        match self.links.earlier(stat, || dst_path.to_path_buf()) {
            Some(first) => {
                std::fs::hard_link(&first, dst_path)
                    .map_err(|e| FsError::io("hard link", dst_path, e))?;
                Shared::count(&self.shared.hard_links, 1);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl Visitor for Walker<'_> {
    /// The directory's copy.
    type Dir = PathBuf;

    fn root(&mut self, _fd: BorrowedFd<'_>, _stat: &libc::stat) -> Result<PathBuf, FsError> {
        prepare_top(&self.dst)?;
        Shared::count(&self.shared.dirs, 1);
        Ok(self.dst.clone())
    }

    fn visit(&mut self, parent: &mut PathBuf, entry: &Entry<'_>) -> Result<Flow<PathBuf>, FsError> {
        if self.shared.failed() {
            return Ok(Flow::Stop); // a worker failed; its error is the one to report
        }
        // A client that gave up stops the copy between entries.
        crate::interrupt::check(parent)?;
        let dst_path = parent.join(OsStr::from_bytes(entry.name.to_bytes()));
        match entry.file_type() {
            libc::S_IFDIR => {
                let dst_c = cpath(&dst_path)?;
                sys::mkdir_exact(&dst_c, 0o700).map_err(|e| FsError::io("mkdir", &dst_path, e))?;
                Shared::count(&self.shared.dirs, 1);
                Ok(Flow::Descend(dst_path))
            }
            libc::S_IFREG => self.regular(entry, dst_path),
            _ => self.other(entry, &dst_path),
        }
    }

    /// Every entry of the directory exists in the copy, so nothing will
    /// move its times any more: its attributes now (children before
    /// parents, and workers only touch files' own inodes).
    fn leave(&mut self, dst: PathBuf, left: &Left<'_>) -> Result<(), FsError> {
        if self.shared.failed() {
            return Ok(());
        }
        let dst_c = cpath(&dst)?;
        attrs::apply(Node::Fd(left.fd), Node::Path(&dst_c), &left.stat, left.path, &dst)
    }
}

/// The destination's top directory: created, or an existing directory (a
/// layout's own earlier step may have made it). Never a symlink.
fn prepare_top(dst: &Path) -> Result<(), FsError> {
    let dst_c = cpath(dst)?;
    match sys::lstat(&dst_c) {
        Ok(stat) => expect_type(&stat, libc::S_IFDIR, dst),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            sys::mkdir_exact(&dst_c, 0o700).map_err(|e| FsError::io("mkdir", dst, e))
        }
        Err(e) => Err(FsError::io("stat", dst, e)),
    }
}

fn expect_type(stat: &libc::stat, expected: libc::mode_t, path: &Path) -> Result<(), FsError> {
    if sys::file_type(stat) == expected {
        return Ok(());
    }
    let expected = match expected {
        libc::S_IFDIR => "a directory",
        _ => "a regular file",
    };
    Err(FsError::WrongType { path: path.to_path_buf(), expected, found: sys::describe_type(stat) })
}

fn cpath(path: &Path) -> Result<std::ffi::CString, FsError> {
    sys::cpath(path).map_err(|e| FsError::io("use path", path, e))
}
