//! The walking thread: creates every entry of the copy, in the source's
//! directory order, and hands regular files' data to the workers.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;

use nix::dir::Type;

use super::data::{self, FileData};
use super::{Shared, attrs};
use crate::FsError;
use crate::sys::{self, Node};

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

/// A directory whose attributes are set once the whole tree is in place.
pub(super) struct PendingDir {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub stat: libc::stat,
}

pub(super) struct Walker<'a> {
    shared: &'a Shared,
    /// `None`: copy file data on this thread.
    sender: Option<SyncSender<FileJob>>,
    /// (dev, inode) of each multiply-linked source entry -> its first copy.
    links: HashMap<(u64, u64), PathBuf>,
    dirs: Vec<PendingDir>,
}

impl<'a> Walker<'a> {
    pub(super) fn new(shared: &'a Shared, sender: Option<SyncSender<FileJob>>) -> Walker<'a> {
        Walker { shared, sender, links: HashMap::new(), dirs: Vec::new() }
    }

    /// The directories created, parents before children.
    pub(super) fn into_dirs(self) -> Vec<PendingDir> {
        self.dirs
    }

    pub(super) fn walk(&mut self, src: &Path, dst: &Path) -> Result<(), FsError> {
        let src_c = cpath(src)?;
        let stat = sys::lstat(&src_c).map_err(|e| FsError::io("stat", src, e))?;
        expect_type(&stat, libc::S_IFDIR, src)?;
        prepare_top(dst)?;
        self.add_dir(src, dst, stat);

        // Depth first with an explicit stack: trees can be deeper than a
        // thread's stack would like.
        let mut stack = vec![(src.to_path_buf(), dst.to_path_buf())];
        while let Some((src_dir, dst_dir)) = stack.pop() {
            let entries =
                sys::read_dir(&src_dir).map_err(|e| FsError::io("read directory", &src_dir, e))?;
            for entry in entries {
                if self.shared.failed() {
                    return Ok(()); // a worker failed; its error is the one to report
                }
                crate::interrupt::check(&src_dir)?;
                let src_path = src_dir.join(&entry.name);
                let dst_path = dst_dir.join(&entry.name);
                if entry.kind == Some(Type::File) {
                    self.regular(src_path, dst_path)?;
                    continue;
                }
                let src_c = cpath(&src_path)?;
                let stat = sys::lstat(&src_c).map_err(|e| FsError::io("stat", &src_path, e))?;
                match sys::file_type(&stat) {
                    libc::S_IFDIR => {
                        let dst_c = cpath(&dst_path)?;
                        sys::mkdir_exact(&dst_c, 0o700)
                            .map_err(|e| FsError::io("mkdir", &dst_path, e))?;
                        self.add_dir(&src_path, &dst_path, stat);
                        stack.push((src_path, dst_path));
                    }
                    libc::S_IFREG => self.regular(src_path, dst_path)?,
                    _ => self.other(&src_c, &src_path, &dst_path, &stat)?,
                }
            }
        }
        Ok(())
    }

    fn add_dir(&mut self, src: &Path, dst: &Path, stat: libc::stat) {
        Shared::count(&self.shared.dirs, 1);
        self.dirs.push(PendingDir { src: src.to_path_buf(), dst: dst.to_path_buf(), stat });
    }

    /// Creates the copy of a regular file (or a hard link to an earlier
    /// copy) and queues its data.
    fn regular(&mut self, src_path: PathBuf, dst_path: PathBuf) -> Result<(), FsError> {
        let src_c = cpath(&src_path)?;
        let src = sys::open_source(&src_c).map_err(|e| FsError::io("open", &src_path, e))?;
        let stat = sys::fstat(src.as_fd()).map_err(|e| FsError::io("stat", &src_path, e))?;
        expect_type(&stat, libc::S_IFREG, &src_path)?;
        if self.linked_earlier(&stat, &dst_path)? {
            return Ok(());
        }
        let dst_c = cpath(&dst_path)?;
        let dst = sys::create_new(&dst_c).map_err(|e| FsError::io("create", &dst_path, e))?;
        Shared::count(&self.shared.files, 1);
        let job = FileJob { src, dst, stat, src_path, dst_path };
        match &self.sender {
            Some(sender) => {
                if let Err(unsent) = sender.send(job) {
                    // No worker left to receive (they all stopped): do it here.
                    unsent.0.run(self.shared)?;
                }
                Ok(())
            }
            None => job.run(self.shared),
        }
    }

    /// Symlinks, device nodes, fifos and sockets: created and finished here.
    fn other(
        &mut self,
        src_c: &CStr,
        src_path: &Path,
        dst_path: &Path,
        stat: &libc::stat,
    ) -> Result<(), FsError> {
        if self.linked_earlier(stat, dst_path)? {
            return Ok(());
        }
        let dst_c = cpath(dst_path)?;
        match sys::file_type(stat) {
            libc::S_IFLNK => {
                let target = std::fs::read_link(src_path)
                    .map_err(|e| FsError::io("read link", src_path, e))?;
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
                    path: src_path.to_path_buf(),
                    expected: "a file type that can be copied",
                    found: sys::describe_type(stat),
                });
            }
        }
        attrs::apply(Node::Path(src_c), Node::Path(&dst_c), stat, src_path, dst_path)
    }

    /// If `stat` is a multiply-linked entry already copied, links `dst_path`
    /// to that copy and says so; else remembers `dst_path` as its copy.
    fn linked_earlier(&mut self, stat: &libc::stat, dst_path: &Path) -> Result<bool, FsError> {
        if stat.st_nlink <= 1 {
            return Ok(false);
        }
        let key = sys::inode_key(stat);
        match self.links.get(&key) {
            Some(first) => {
                std::fs::hard_link(first, dst_path)
                    .map_err(|e| FsError::io("hard link", dst_path, e))?;
                Shared::count(&self.shared.hard_links, 1);
                Ok(true)
            }
            None => {
                self.links.insert(key, dst_path.to_path_buf());
                Ok(false)
            }
        }
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
