//! Thin, safe wrappers over the system calls the executor needs and `std`
//! does not offer (lchown on a path, nanosecond times without following
//! symlinks, mknod, xattrs, renameat2, syncfs). Each returns `io::Result`;
//! callers attach the operation and path.

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::dir::Dir;

pub(crate) fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret as usize) }
}

/// Retries a call interrupted by a signal.
fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub(crate) fn lstat(path: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    check(unsafe { libc::lstat(path.as_ptr(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn file_type(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

pub(crate) fn describe_type(st: &libc::stat) -> &'static str {
    match file_type(st) {
        libc::S_IFDIR => "a directory",
        libc::S_IFREG => "a regular file",
        libc::S_IFLNK => "a symlink",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFIFO => "a fifo",
        libc::S_IFSOCK => "a socket",
        _ => "a file of unknown type",
    }
}

/// A file system object attributes are read from or written to: an open
/// descriptor when we have one (cheaper, race-free), else a path that is
/// never followed if it is a symlink.
#[derive(Clone, Copy)]
pub(crate) enum Node<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a CStr),
}

impl Node<'_> {
    pub(crate) fn chown(self, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
        check(match self {
            Node::Fd(fd) => unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) },
            Node::Path(p) => unsafe { libc::lchown(p.as_ptr(), uid, gid) },
        })
        .map(drop)
    }

    /// Sets all 12 permission bits. Never call on a symlink path: Linux has
    /// no symlink modes and `chmod` would follow it.
    pub(crate) fn chmod(self, mode: libc::mode_t) -> io::Result<()> {
        let mode = mode & 0o7777;
        check(match self {
            Node::Fd(fd) => unsafe { libc::fchmod(fd.as_raw_fd(), mode) },
            Node::Path(p) => unsafe { libc::chmod(p.as_ptr(), mode) },
        })
        .map(drop)
    }

    /// Sets atime and mtime to the nanosecond, not following symlinks.
    pub(crate) fn set_times(self, st: &libc::stat) -> io::Result<()> {
        let times = [
            libc::timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec },
            libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec },
        ];
        check(match self {
            Node::Fd(fd) => unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) },
            Node::Path(p) => unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    p.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            },
        })
        .map(drop)
    }

    /// The names of all extended attributes; none where the file system has
    /// no xattr support.
    pub(crate) fn list_xattrs(self) -> io::Result<Vec<CString>> {
        let list = |buf: *mut libc::c_char, len: usize| -> isize {
            match self {
                Node::Fd(fd) => unsafe { libc::flistxattr(fd.as_raw_fd(), buf, len) },
                Node::Path(p) => unsafe { libc::llistxattr(p.as_ptr(), buf, len) },
            }
        };
        let raw = match read_sized(|buf, len| list(buf as *mut libc::c_char, len)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(raw
            .split(|b| *b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| CString::new(name).expect("split at NUL"))
            .collect())
    }

    pub(crate) fn get_xattr(self, name: &CStr) -> io::Result<Vec<u8>> {
        read_sized(|buf, len| match self {
            Node::Fd(fd) => unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf, len) },
            Node::Path(p) => unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf, len) },
        })
    }

    pub(crate) fn set_xattr(self, name: &CStr, value: &[u8]) -> io::Result<()> {
        let (ptr, len) = (value.as_ptr() as *const libc::c_void, value.len());
        check(match self {
            Node::Fd(fd) => unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, len, 0) },
            Node::Path(p) => unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), ptr, len, 0) },
        })
        .map(drop)
    }
}

/// Calls a "size query, then fill" style syscall (listxattr, getxattr),
/// retrying when the value grew in between (ERANGE).
fn read_sized(call: impl Fn(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let size = retry(|| check_size(call(std::ptr::null_mut(), 0)))?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match retry(|| check_size(call(buf.as_mut_ptr() as *mut libc::c_void, buf.len()))) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn mknod(path: &CStr, mode: libc::mode_t, rdev: libc::dev_t) -> io::Result<()> {
    check(unsafe { libc::mknod(path.as_ptr(), mode, rdev) }).map(drop)
}

/// Creates a directory and then sets exactly `mode`: mkdir(2) applies the
/// umask and drops setgid/sticky on some file systems, chmod(2) does not.
pub(crate) fn mkdir_exact(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    check(unsafe { libc::mkdir(path.as_ptr(), 0o700) })?;
    Node::Path(path).chmod(mode)
}

/// Opens a file of a tree the daemon made itself (to fsync it): never
/// follows a symlink, never blocks on a fifo. Trees a container writes are
/// opened through `walk` instead.
pub(crate) fn open_source(path: &CStr) -> io::Result<File> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let fd = match retry(|| check(unsafe { libc::open(path.as_ptr(), flags | libc::O_NOATIME) })) {
        // O_NOATIME needs ownership or CAP_FOWNER.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            retry(|| check(unsafe { libc::open(path.as_ptr(), flags) }))?
        }
        other => other?,
    };
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Creates a new regular file to copy into; fails if the name is taken.
pub(crate) fn create_new(path: &CStr) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = retry(|| check(unsafe { libc::open(path.as_ptr(), flags, 0o600 as libc::c_uint) }))?;
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Opens a directory without following a symlink in its last component.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    let c = cpath(path)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = retry(|| check(unsafe { libc::open(c.as_ptr(), flags) }))?;
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

pub(crate) fn fsync(file: &File) -> io::Result<()> {
    retry(|| check(unsafe { libc::fsync(file.as_raw_fd()) })).map(drop)
}

/// Whether the file system holding `file` journals all metadata in one
/// ordered log: XFS, or ext4 with a journal (ext4 can be made without one,
/// as this project's VMs are). There, making one metadata change durable
/// (an fsync that commits the journal) makes every earlier one durable too.
/// Anything unknown answers false (the caller then fsyncs each entry).
pub(crate) fn has_ordered_metadata_journal(file: &File) -> bool {
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    if unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = unsafe { st.assume_init() }.f_type as i64;
    match magic {
        XFS_SUPER_MAGIC => true,
        EXT4_SUPER_MAGIC => ext4_has_journal(file).unwrap_or(false),
        _ => false,
    }
}

/// ext4 names its journal thread in `/sys/fs/ext4/<device>/journal_task`
/// (`<none>` without a journal); the device is found from `st_dev`.
fn ext4_has_journal(file: &File) -> Option<bool> {
    let st = fstat(file_fd(file)).ok()?;
    let (major, minor) = (libc::major(st.st_dev), libc::minor(st.st_dev));
    let device = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    let name = device.file_name()?.to_str()?.to_owned();
    let task = std::fs::read_to_string(format!("/sys/fs/ext4/{name}/journal_task")).ok()?;
    let task = task.trim();
    Some(!task.is_empty() && task != "<none>")
}

fn file_fd(file: &File) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    file.as_fd()
}

/// Flushes the whole file system holding `file`: one call instead of one
/// fsync per copied file.
pub(crate) fn syncfs(file: &File) -> io::Result<()> {
    check(unsafe { libc::syncfs(file.as_raw_fd()) }).map(drop)
}

/// rename(2) that fails with EEXIST instead of replacing the target.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (cpath(from)?, cpath(to)?);
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
    .map(drop)
}

/// 16 hex digits naming a temp or removal entry: distinct for every call in
/// this process (a counter, scrambled by a bijection), and not guessable
/// across processes (the counter starts from a key drawn from the kernel's
/// random pool once). One `getrandom` per process instead of one per name:
/// a Prepare used to spend about 4 µs of its directory work on it.
pub(crate) fn random_suffix() -> String {
    static KEY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = *KEY.get_or_init(random_key);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:016x}", scramble(key.wrapping_add(n)))
}

/// A key from the kernel's random pool (or, should getrandom fail, the
/// time and pid: never a constant).
fn random_key() -> u64 {
    let mut bytes = [0u8; 8];
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr() as *mut libc::c_void, bytes.len(), 0) };
    if n == bytes.len() as isize {
        return u64::from_le_bytes(bytes);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
}

/// splitmix64's finaliser: a bijection on u64, so distinct inputs give
/// distinct names, that spreads consecutive inputs over all 64 bits.
fn scramble(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One directory entry's name.
pub(crate) struct Entry {
    pub name: OsString,
}

/// Reads a directory's entries (without `.` and `..`), never following a
/// symlink in the directory's own path. For the daemon's own directories
/// (`snapshots/`, a temp tree); trees a container writes are read through
/// `walk`, by fd.
pub(crate) fn read_dir(path: &Path) -> io::Result<Vec<Entry>> {
    let c = cpath(path)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = match retry(|| check(unsafe { libc::open(c.as_ptr(), flags | libc::O_NOATIME) })) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            retry(|| check(unsafe { libc::open(c.as_ptr(), flags) }))?
        }
        other => other?,
    };
    let mut dir = Dir::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })?;
    let mut entries = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        entries.push(Entry { name: OsString::from_vec(name.to_vec()) });
    }
    Ok(entries)
}

/// The FICLONE ioctl: makes `dst` share all of `src`'s extents.
pub(crate) fn ficlone(dst: &File, src: &File) -> io::Result<()> {
    check(unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) }).map(drop)
}

/// lseek with SEEK_DATA / SEEK_HOLE; `Ok(None)` at ENXIO (no more data).
pub(crate) fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// copy_file_range(2) with explicit offsets on both sides (the files'
/// positions are left alone), advancing `offset`.
pub(crate) fn copy_file_range(
    src: &File,
    dst: &File,
    offset: &mut u64,
    len: usize,
) -> io::Result<usize> {
    let mut off_in = *offset as libc::loff_t;
    let mut off_out = *offset as libc::loff_t;
    let n = retry(|| {
        check_size(unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        } as libc::ssize_t)
    })?;
    *offset += n as u64;
    Ok(n)
}

pub(crate) fn set_len(file: &File, len: u64) -> io::Result<()> {
    retry(|| check(unsafe { libc::ftruncate(file.as_raw_fd(), len as libc::off_t) })).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_sixteen_hex_digits_and_never_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let s = random_suffix();
            assert_eq!(s.len(), 16, "{s}");
            assert!(s.bytes().all(|b| b.is_ascii_hexdigit()), "{s}");
            assert!(seen.insert(s.clone()), "{s} twice");
        }
        // Consecutive counters do not give neighbouring names.
        assert_ne!(scramble(1).wrapping_sub(scramble(0)), 1);
    }
}
