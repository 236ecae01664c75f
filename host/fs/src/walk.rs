//! Walking a tree a container may be writing to, safely, by directory fd.
//!
//! An active snapshot's content dir is a container's rootfs upper layer, and
//! a committed parent can still be written by a container that had it
//! mounted read-write. Anything in such a tree may change under the walk:
//! a directory swapped for a symlink to `/`, a file for a device node, a
//! mount put on a subdirectory. Joining paths and `lstat`ing them follows a
//! symlink anywhere but in the last component, so every walker of these
//! trees (usage, the parent copy and clone, remove) goes through here:
//!
//! - each directory is opened from its parent's fd, one component at a
//!   time, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_XDEV)` (`O_NOFOLLOW | O_DIRECTORY` where the kernel has no
//!   openat2), and must still be the inode `fstatat` saw;
//! - entries are stat'ed with `fstatat(AT_SYMLINK_NOFOLLOW)`; an entry on
//!   another device than the root (a mount point) is never entered;
//! - a regular file is opened `O_PATH` first and reopened for reading only
//!   if it is still that regular file ([`Entry::open_regular`]); devices,
//!   fifos and sockets are never opened;
//! - an entry that vanishes or changes type between the listing and its use
//!   is skipped and counted (debug log), not an error;
//! - memory is bounded: an explicit stack of open directories, at most
//!   [`MAX_DEPTH`] deep, read as streams (never a whole listing in memory),
//!   and hard links remembered only for entries with `st_nlink > 1`, up to
//!   [`MAX_TRACKED_LINKS`] at a time ([`HardLinks`]).

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::FsError;

/// Directories open at once in one walk (one descriptor each). Deeper
/// directories are handed to [`Visitor::too_deep`].
pub(crate) const MAX_DEPTH: usize = 256;

/// Multiply-linked inodes remembered at once; past it, further links are
/// treated as separate files (counted or copied again) and a warning is logged.
pub(crate) const MAX_TRACKED_LINKS: usize = 1 << 18;

/// What to do after visiting an entry.
pub(crate) enum Flow<D> {
    Next,
    /// Walk into this directory entry, with this state for it.
    Descend(D),
    /// The entry vanished or changed type since it was listed: count it.
    Vanished,
    /// End the walk now (without error).
    Stop,
}

/// The callbacks of one walk. `Dir` is the state kept per open directory
/// (e.g. the matching directory of a copy).
pub(crate) trait Visitor {
    type Dir;

    /// The walk's root, already opened (a directory).
    fn root(&mut self, fd: BorrowedFd<'_>, stat: &libc::stat) -> Result<Self::Dir, FsError>;

    /// One more name was read from a directory, before anything is done
    /// with it (also one that then vanishes or fails): `false` ends the
    /// walk now, without error. Default: go on.
    fn listed(&mut self) -> bool {
        true
    }

    /// One entry of the directory whose state is `parent`.
    fn visit(
        &mut self,
        parent: &mut Self::Dir,
        entry: &Entry<'_>,
    ) -> Result<Flow<Self::Dir>, FsError>;

    /// Every entry of a directory was visited. For the root, `left.parent`
    /// and `left.name` are `None`.
    fn leave(&mut self, dir: Self::Dir, left: &Left<'_>) -> Result<(), FsError>;

    /// A system call on an entry (not the root) failed for another reason
    /// than the entry vanishing. Default: the walk fails.
    fn failed(&mut self, op: &'static str, path: &Path, error: io::Error) -> Result<(), FsError> {
        Err(FsError::io(op, path, error))
    }

    /// An entry on another device (a mount point, a btrfs subvolume): never
    /// entered. Default: the walk fails.
    fn other_device(&mut self, path: &Path) -> Result<(), FsError> {
        Err(FsError::Unwalkable { path: path.to_path_buf(), reason: "on another device" })
    }

    /// A directory [`MAX_DEPTH`] levels down, which this walk does not
    /// open. Default: the walk fails.
    fn too_deep(
        &mut self,
        _parent: BorrowedFd<'_>,
        _name: &CStr,
        path: &Path,
    ) -> Result<(), FsError> {
        Err(FsError::Unwalkable { path: path.to_path_buf(), reason: "nested too deep" })
    }
}

/// An entry being visited.
pub(crate) struct Entry<'a> {
    /// The directory holding it.
    pub parent: BorrowedFd<'a>,
    pub name: &'a CStr,
    /// From `fstatat(AT_SYMLINK_NOFOLLOW)`.
    pub stat: libc::stat,
    /// For messages: the walk's root path joined with the entry's.
    pub path: &'a Path,
    /// A directory entry's own fd, opened safely; `None` for other types.
    pub dir: Option<BorrowedFd<'a>>,
}

impl Entry<'_> {
    pub(crate) fn file_type(&self) -> libc::mode_t {
        self.stat.st_mode & libc::S_IFMT
    }

    /// Opens the entry for reading if it is still the regular file stat'ed:
    /// `O_PATH` first (opens nothing a device driver sees), then a reopen
    /// through `/proc/self/fd`. `None`: it vanished or changed.
    pub(crate) fn open_regular(&self) -> io::Result<Option<File>> {
        let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let path_fd = match open_beneath(self.parent, self.name, flags) {
            Ok(fd) => fd,
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = fstat(path_fd.as_fd())?;
        if !same_inode(&st, &self.stat) || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(None);
        }
        let proc = CString::new(format!("/proc/self/fd/{}", path_fd.as_raw_fd()))
            .expect("no NUL in a number");
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let fd = open_noatime(|extra| unsafe { libc::open(proc.as_ptr(), flags | extra) })?;
        Ok(Some(File::from(fd)))
    }

    /// The target of a symlink entry; `None` if it is no longer a symlink.
    pub(crate) fn read_link(&self) -> io::Result<Option<std::ffi::OsString>> {
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        let n = unsafe {
            libc::readlinkat(
                self.parent.as_raw_fd(),
                self.name.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_char,
                buf.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            // EINVAL: no longer a symlink.
            if vanished(&e) || e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(None);
            }
            return Err(e);
        }
        buf.truncate(n as usize);
        Ok(Some(std::os::unix::ffi::OsStringExt::from_vec(buf)))
    }

    /// A path naming this entry through its parent's fd, for the calls that
    /// take only a path and do not follow its last component (`lgetxattr`,
    /// `llistxattr`): `/proc/self/fd/<parent>/<name>` cannot lead out of
    /// the parent directory.
    pub(crate) fn proc_path(&self) -> CString {
        let mut bytes = format!("/proc/self/fd/{}/", self.parent.as_raw_fd()).into_bytes();
        bytes.extend_from_slice(self.name.to_bytes());
        CString::new(bytes).expect("a directory entry name has no NUL")
    }
}

/// A directory whose entries were all visited.
pub(crate) struct Left<'a> {
    pub fd: BorrowedFd<'a>,
    pub parent: Option<BorrowedFd<'a>>,
    pub name: Option<&'a CStr>,
    /// As stat'ed when the walk entered it.
    pub stat: libc::stat,
    pub path: &'a Path,
}

/// What a walk skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Entries that vanished or changed type while the walk ran.
    pub vanished: u64,
    /// Entries that failed in a way the visitor chose to tolerate, or on
    /// another device, or too deep.
    pub skipped: u64,
}

/// One open directory on the walk's stack.
struct Frame<D> {
    stream: DirStream,
    state: D,
    name: Option<CString>,
    stat: libc::stat,
}

/// Walks the directory tree at `root` (a path the daemon made, opened with
/// `O_NOFOLLOW`; everything below it is treated as hostile), depth first,
/// calling `visitor` for each entry and after each directory.
pub(crate) fn walk<V: Visitor>(root: &Path, visitor: &mut V) -> Result<WalkStats, FsError> {
    let c = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| FsError::io("open directory", root, nul_error()))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = open_noatime(|extra| unsafe { libc::open(c.as_ptr(), flags | extra) })
        .map_err(|e| FsError::io("open directory", root, e))?;
    let stat = fstat(fd.as_fd()).map_err(|e| FsError::io("stat", root, e))?;
    let device = stat.st_dev;
    let state = visitor.root(fd.as_fd(), &stat)?;
    let stream = DirStream::new(fd).map_err(|e| FsError::io("read directory", root, e))?;
    let mut stack = vec![Frame { stream, state, name: None, stat }];
    let mut path = root.to_path_buf();
    let mut stats = WalkStats::default();

    loop {
        let depth = stack.len();
        let Some(top) = stack.last_mut() else { break };
        let name = match top.stream.next() {
            Some(Ok(name)) => name,
            Some(Err(e)) if depth == 1 => return Err(FsError::io("read directory", root, e)),
            Some(Err(e)) => {
                // The rest of this directory cannot be listed.
                visitor.failed("read directory", &path, e)?;
                stats.skipped += 1;
                leave(&mut stack, &mut path, visitor)?;
                continue;
            }
            None => {
                leave(&mut stack, &mut path, visitor)?;
                continue;
            }
        };
        if !visitor.listed() {
            return Ok(stats);
        }
        let entry_path = path.join(OsStr::from_bytes(name.to_bytes()));
        let parent = top.stream.fd();
        let st = match stat_at(parent, &name) {
            Ok(st) => st,
            Err(e) if vanished(&e) => {
                skipped_vanished(&mut stats, &entry_path);
                continue;
            }
            Err(e) => {
                visitor.failed("stat", &entry_path, e)?;
                stats.skipped += 1;
                continue;
            }
        };
        if st.st_dev != device {
            visitor.other_device(&entry_path)?;
            tracing::debug!(path = %entry_path.display(), "walk: not entering an entry on another device");
            stats.skipped += 1;
            continue;
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && depth > MAX_DEPTH {
            visitor.too_deep(parent, &name, &entry_path)?;
            stats.skipped += 1;
            continue;
        }
        let sub = if is_dir {
            match open_subdir(parent, &name, &st) {
                Ok(Some(fd)) => Some(fd),
                Ok(None) => {
                    skipped_vanished(&mut stats, &entry_path);
                    continue;
                }
                Err(e) => {
                    visitor.failed("open directory", &entry_path, e)?;
                    stats.skipped += 1;
                    continue;
                }
            }
        } else {
            None
        };
        let entry = Entry {
            parent,
            name: &name,
            stat: st,
            path: &entry_path,
            dir: sub.as_ref().map(|fd| fd.as_fd()),
        };
        match visitor.visit(&mut top.state, &entry)? {
            Flow::Next => {}
            Flow::Vanished => skipped_vanished(&mut stats, &entry_path),
            Flow::Stop => return Ok(stats),
            Flow::Descend(state) => {
                let fd = sub.expect("only a directory entry is descended into");
                let stream = DirStream::new(fd)
                    .map_err(|e| FsError::io("read directory", &entry_path, e))?;
                stack.push(Frame { stream, state, name: Some(name), stat: st });
                path = entry_path;
            }
        }
    }
    if stats != WalkStats::default() {
        tracing::debug!(root = %root.display(), vanished = stats.vanished, skipped = stats.skipped, "walk: entries skipped");
    }
    Ok(stats)
}

fn leave<V: Visitor>(
    stack: &mut Vec<Frame<V::Dir>>,
    path: &mut PathBuf,
    visitor: &mut V,
) -> Result<(), FsError> {
    let frame = stack.pop().expect("leave with a directory open");
    let left = Left {
        fd: frame.stream.fd(),
        parent: stack.last().map(|f| f.stream.fd()),
        name: frame.name.as_deref(),
        stat: frame.stat,
        path,
    };
    visitor.leave(frame.state, &left)?;
    if frame.name.is_some() {
        path.pop();
    }
    Ok(())
}

fn skipped_vanished(stats: &mut WalkStats, path: &Path) {
    stats.vanished += 1;
    tracing::debug!(path = %path.display(), "walk: skipped an entry that vanished or changed while walking");
}

/// Errors meaning "this entry is gone or is no longer what was listed":
/// removed, replaced by a symlink (`ELOOP` from `O_NOFOLLOW` or
/// `RESOLVE_NO_SYMLINKS`), by a non-directory, or by a mount point (`EXDEV`).
pub(crate) fn vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV | libc::ESTALE)
    )
}

fn same_inode(a: &libc::stat, b: &libc::stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Remembers multiply-linked inodes (`st_nlink > 1`) until all their links
/// were seen, with a value for each (the path of its first copy, or
/// nothing). Single-linked inodes cost nothing; at most
/// [`MAX_TRACKED_LINKS`] are remembered at once.
pub(crate) struct HardLinks<T> {
    /// (dev, ino) -> (value, links not seen yet)
    seen: HashMap<(u64, u64), (T, u64)>,
    full: bool,
}

impl<T: Clone> HardLinks<T> {
    pub(crate) fn new() -> HardLinks<T> {
        HardLinks { seen: HashMap::new(), full: false }
    }

    /// The value of an earlier link of `st`'s inode, or `None` if this is
    /// its first (then `first()` is remembered for the next links).
    pub(crate) fn earlier(&mut self, st: &libc::stat, first: impl FnOnce() -> T) -> Option<T> {
        if st.st_nlink <= 1 {
            return None;
        }
        let key = (st.st_dev, st.st_ino);
        if let Some((value, left)) = self.seen.get_mut(&key) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                return self.seen.remove(&key).map(|(value, _)| value);
            }
            return Some(value.clone());
        }
        if self.seen.len() >= MAX_TRACKED_LINKS {
            if !self.full {
                self.full = true;
                tracing::warn!(
                    limit = MAX_TRACKED_LINKS,
                    "walk: too many multiply-linked files at once; further hard links are treated as separate files"
                );
            }
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // st_nlink is u32 on some targets
        let others = st.st_nlink as u64 - 1;
        self.seen.insert(key, (first(), others));
        None
    }
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    let r = unsafe {
        libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { st.assume_init() })
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    crate::sys::fstat(fd)
}

/// Opens the subdirectory `name` of `dir` if it is still the directory
/// `expect` (same device and inode); `None` if it vanished or changed.
pub(crate) fn open_subdir(
    dir: BorrowedFd<'_>,
    name: &CStr,
    expect: &libc::stat,
) -> io::Result<Option<OwnedFd>> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = match open_beneath(dir, name, flags) {
        Ok(fd) => fd,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = fstat(fd.as_fd())?;
    Ok(same_inode(&st, expect).then_some(fd))
}

/// Whether this kernel lacks openat2 (before 5.6): then plain `openat` with
/// `O_NOFOLLOW` on a single name, which is as safe for one component
/// (the device check after it replaces `RESOLVE_NO_XDEV`).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens one name in `dir`: no symlink, no `..`, no mount crossing.
/// Tries `O_NOATIME` first (a walk must not change what it reads).
fn open_beneath(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // O_PATH ignores every flag but a few; O_NOATIME is not one of them.
    let atime = if flags & libc::O_PATH != 0 { 0 } else { libc::O_NOATIME };
    let open = |extra: libc::c_int| -> libc::c_int {
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let mut how: libc::open_how = unsafe { std::mem::zeroed() };
            how.flags = (flags | extra) as u64;
            how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_XDEV;
            let r = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
                return r as libc::c_int;
            }
            NO_OPENAT2.store(true, Ordering::Relaxed);
        }
        unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | extra) }
    };
    if atime == 0 {
        return retry_open(|| open(0));
    }
    open_noatime(open)
}

/// Opens with `O_NOATIME`, and without it where that is refused (EPERM:
/// neither owner nor CAP_FOWNER).
fn open_noatime(open: impl Fn(libc::c_int) -> libc::c_int) -> io::Result<OwnedFd> {
    match retry_open(|| open(libc::O_NOATIME)) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => retry_open(|| open(0)),
        other => other,
    }
}

fn retry_open(open: impl Fn() -> libc::c_int) -> io::Result<OwnedFd> {
    loop {
        let fd = open();
        if fd >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn nul_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte")
}

/// A directory read as a stream (`readdir`), so a huge directory is never
/// held in memory; `.` and `..` are left out.
struct DirStream(NonNull<libc::DIR>);

impl DirStream {
    fn new(fd: OwnedFd) -> io::Result<DirStream> {
        let raw = fd.into_raw_fd();
        match NonNull::new(unsafe { libc::fdopendir(raw) }) {
            Some(dir) => Ok(DirStream(dir)),
            None => {
                let e = io::Error::last_os_error();
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
                Err(e)
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        unsafe { BorrowedFd::borrow_raw(libc::dirfd(self.0.as_ptr())) }
    }

    fn next(&mut self) -> Option<io::Result<CString>> {
        loop {
            nix::errno::Errno::clear();
            let entry = unsafe { libc::readdir64(self.0.as_ptr()) };
            if entry.is_null() {
                return match nix::errno::Errno::last_raw() {
                    0 => None,
                    code => Some(Err(io::Error::from_raw_os_error(code))),
                };
            }
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            return Some(Ok(name.to_owned()));
        }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}
