//! Mounting a rendered plan as a client would, and unmounting it again.
//!
//! - `bind`: mount(2) with `MS_BIND` (`MS_REC` for `rbind`), then a
//!   remount for flags such as `ro`, which a bind ignores on creation;
//! - `overlay` whose options fit in one page: mount(2) with the options as
//!   data;
//! - `overlay` whose options do not (long `lowerdir=`, up to the kernel's
//!   500 layers): the new mount API, fsopen / fsconfig / fsmount /
//!   move_mount, giving the layers one at a time with `lowerdir+` (Linux
//!   6.8), so no single string is bounded by the page size;
//! - anything else: mount(2) with its type, source, flags and data.
//!
//! When mount(2) refuses a filesystem mount, the kernel's reason is only in
//! dmesg, and errno is a bare EINVAL. The same options are then given to a
//! probe through the new mount API, whose context fd reads back what the
//! filesystem logged (`e overlay: Unknown parameter ...`), and the error
//! carries that. Some refusals (overlayfs' "at least 2 lowerdir are
//! needed") go to the kernel log only: those are read from /dev/kmsg,
//! the records the probe added that name the filesystem.
//!
//! A mount with `uidmap=` and `gidmap=` is made as containerd 2.x's mount
//! code makes it (see [`idmapped`](super::idmapped)): an overlay's
//! lowerdirs are each idmapped onto a temporary directory and the overlay
//! is mounted on those (the temporary mounts are detached after); a bind's
//! source is idmapped onto the target.

use std::ffi::{CString, c_char, c_int, c_uint};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use wasmsnap_plan::Mount;

/// How a mount was made, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Mount2,
    /// The new mount API with this many `lowerdir+` layers.
    Fsconfig {
        layers: usize,
    },
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Mount2 => write!(f, "mount(2)"),
            Method::Fsconfig { layers } => write!(f, "fsconfig lowerdir+ x{layers}"),
        }
    }
}

/// Mounts made on one target, unmounted in reverse order when dropped
/// (so a failed check or a panic leaves nothing mounted).
pub struct Mounted {
    target: PathBuf,
    count: usize,
}

impl Mounted {
    pub fn new(target: &Path) -> Mounted {
        Mounted { target: target.to_path_buf(), count: 0 }
    }

    /// Mount `m` on the target, over whatever this guard mounted before.
    pub fn mount(&mut self, m: &Mount, page_size: usize) -> io::Result<Method> {
        let method = match super::idmapped::from_options(&m.options)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        {
            Some(map) => mount_idmapped(m, &map, &self.target, page_size)?,
            None => mount_one(m, &self.target, page_size)?,
        };
        self.count += 1;
        Ok(method)
    }

    /// Unmount everything now; the first error is returned, the rest are
    /// still tried (lazily detached).
    pub fn unmount(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        while self.count > 0 {
            self.count -= 1;
            if let Err(e) = umount2(&self.target, MntFlags::empty()) {
                // Busy: detach it, so it is gone once nothing uses it.
                let detached = umount2(&self.target, MntFlags::MNT_DETACH);
                if first.is_ok() {
                    first =
                        Err(io::Error::other(format!("unmount {}: {e}", self.target.display())));
                }
                if detached.is_err() {
                    break;
                }
            }
        }
        first
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// `m` with its id map applied as containerd's mount code applies it.
fn mount_idmapped(
    m: &Mount,
    map: &wasmsnap_plan::IdMap,
    target: &Path,
    page_size: usize,
) -> io::Result<Method> {
    use super::idmapped::{idmapped_mount, userns_fd};
    use std::os::fd::AsFd;
    let userns = userns_fd(map)
        .map_err(|e| io::Error::new(e.kind(), format!("user namespace for the id map: {e}")))?;
    let rest: Vec<String> = m
        .options
        .iter()
        .filter(|o| !o.starts_with("uidmap=") && !o.starts_with("gidmap="))
        .cloned()
        .collect();
    if m.r#type != "overlay" {
        let readonly = rest.iter().any(|o| o == "ro");
        idmapped_mount(Path::new(&m.source), target, userns.as_fd(), readonly)?;
        return Ok(Method::Mount2);
    }
    let Some(at) = rest.iter().position(|o| o.starts_with("lowerdir=")) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an id-mapped overlay without lowerdir= (containerd idmaps the lowerdirs)",
        ));
    };
    let lowers: Vec<String> = rest[at]["lowerdir=".len()..].split(':').map(String::from).collect();
    let mut guards = Vec::with_capacity(lowers.len());
    let mut mapped = Vec::with_capacity(lowers.len());
    for (i, lower) in lowers.iter().enumerate() {
        let dir = PathBuf::from(format!("{}.idmapped-{i}", target.display()));
        std::fs::create_dir(&dir)?;
        let mut guard = Mounted::new(&dir);
        let made = idmapped_mount(Path::new(lower), &dir, userns.as_fd(), true);
        if made.is_ok() {
            guard.count = 1;
        }
        guards.push((guard, dir.clone()));
        made?;
        mapped.push(dir.display().to_string());
    }
    let mut options = rest;
    options[at] = format!("lowerdir={}", mapped.join(":"));
    let overlay = Mount { options, ..m.clone() };
    let result = mount_one(&overlay, target, page_size);
    // The overlay holds the idmapped layers; their mount points can go
    // (containerd detaches them the same way).
    for (mut guard, dir) in guards {
        if guard.count > 0 {
            guard.count = 0;
            umount2(&dir, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
        }
        std::fs::remove_dir(&dir)?;
    }
    result
}

/// Mount flags and the rest (filesystem data), as containerd's client
/// splits a mount's options.
struct Split {
    flags: MsFlags,
    recursive_bind: bool,
    data: Vec<String>,
}

fn split_options(options: &[String]) -> Split {
    let mut split = Split { flags: MsFlags::empty(), recursive_bind: false, data: Vec::new() };
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => {
                split.recursive_bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            _ => {
                split.data.push(option.clone());
                continue;
            }
        };
        split.flags.insert(set);
        split.flags.remove(clear);
    }
    split
}

fn mount_one(m: &Mount, target: &Path, page_size: usize) -> io::Result<Method> {
    let split = split_options(&m.options);
    if m.r#type == "bind" || split.flags.contains(MsFlags::MS_BIND) {
        let mut flags = MsFlags::MS_BIND;
        if split.recursive_bind {
            flags |= MsFlags::MS_REC;
        }
        mount(Some(Path::new(&m.source)), target, None::<&str>, flags, None::<&str>)
            .map_err(|e| ctx(e, "bind", m))?;
        // A bind ignores ro, nosuid, ... on creation: apply them by remount.
        let extra = split.flags - MsFlags::MS_BIND;
        if !extra.is_empty() {
            let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra;
            if let Err(e) = mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
                let _ = umount2(target, MntFlags::MNT_DETACH);
                return Err(ctx(e, "remount bind", m));
            }
        }
        return Ok(Method::Mount2);
    }
    let data = split.data.join(",");
    if m.r#type == "overlay" && data.len() + 1 > page_size {
        return fsconfig_overlay(m, &split, target);
    }
    let data_opt = (!data.is_empty()).then_some(data);
    mount(
        Some(Path::new(&m.source)),
        target,
        Some(m.r#type.as_str()),
        split.flags,
        data_opt.as_deref(),
    )
    .map_err(|e| {
        let error = ctx(e, &m.r#type, m);
        match kernel_reason(m, &split) {
            Some(reason) => io::Error::new(error.kind(), format!("{error} [{reason}]")),
            None => error,
        }
    })?;
    Ok(Method::Mount2)
}

fn ctx(e: nix::Error, what: &str, m: &Mount) -> io::Error {
    io::Error::new(
        io::Error::from(e).kind(),
        format!("mount {what} {} ({}): {e}", m.source, m.options.join(",")),
    )
}

/// Why the kernel refuses to mount `m`: its options given to a fresh fs
/// context (nothing is mounted: the context is dropped after `create`),
/// and what the filesystem logged there. `None` if the probe says nothing.
fn kernel_reason(m: &Mount, split: &Split) -> Option<String> {
    let fs_type = cstr(&m.r#type).ok()?;
    let kmsg = Kmsg::at_end();
    // SAFETY: a valid NUL-terminated string; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, fs_type.as_ptr(), FSOPEN_CLOEXEC) };
    let context = owned(fd, "fsopen").ok()?;
    let mut refused = set_string(&context, "source", &m.source).is_err();
    for option in &split.data {
        if refused {
            break;
        }
        refused = match option.split_once('=') {
            Some((key, value)) => set_string(&context, key, value),
            None => set_flag(&context, option),
        }
        .is_err();
    }
    if !refused {
        // SAFETY: plain integer arguments; the result is checked.
        let created = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                0usize,
                0usize,
                0,
            )
        };
        refused = created < 0;
    }
    let mut log = kernel_log(&context);
    if log.is_empty() {
        log = kmsg.map(|k| k.read_about(&m.r#type)).unwrap_or_default();
    }
    (refused && !log.is_empty()).then(|| format!("kernel: {}", log.join("; ")))
}

/// The kernel log (/dev/kmsg, root only), from its end when opened.
struct Kmsg(OwnedFd);

impl Kmsg {
    fn at_end() -> Option<Kmsg> {
        let path = cstr("/dev/kmsg").ok()?;
        // SAFETY: a valid NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        };
        let kmsg = Kmsg(owned(fd.into(), "open /dev/kmsg").ok()?);
        // SAFETY: a valid fd; on /dev/kmsg, SEEK_END skips to the next record.
        unsafe { libc::lseek(kmsg.0.as_raw_fd(), 0, libc::SEEK_END) };
        Some(kmsg)
    }

    /// Messages logged since [`at_end`](Self::at_end) that mention
    /// `fs_type` (`overlay` matches `overlayfs: ...`); at most 8.
    fn read_about(&self, fs_type: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        // One record per read; a bound, since others may log meanwhile.
        for _ in 0..256 {
            // SAFETY: reading into a buffer we own, of the given length.
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            // `<prio>,<seq>,<usec>,<flags>;<message>\n` then continuation lines.
            let record = String::from_utf8_lossy(&buf[..n as usize]);
            let Some((_, rest)) = record.split_once(';') else { continue };
            let message = rest.lines().next().unwrap_or_default().trim();
            if message.starts_with(fs_type) && out.len() < 8 {
                out.push(message.chars().filter(|c| !c.is_control()).take(1024).collect());
            }
        }
        out
    }
}

// The new mount API's ABI (include/uapi/linux/mount.h); stable since 5.2.
const FSOPEN_CLOEXEC: c_uint = 0x1;
const FSCONFIG_SET_FLAG: c_uint = 0;
const FSCONFIG_SET_STRING: c_uint = 1;
const FSCONFIG_CMD_CREATE: c_uint = 6;
const FSMOUNT_CLOEXEC: c_uint = 0x1;
const MOUNT_ATTR_RDONLY: c_uint = 0x1;
const MOUNT_ATTR_NOSUID: c_uint = 0x2;
const MOUNT_ATTR_NODEV: c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: c_uint = 0x8;
const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x4;

fn fsconfig_overlay(m: &Mount, split: &Split, target: &Path) -> io::Result<Method> {
    let fs_type = cstr("overlay")?;
    // SAFETY: a valid NUL-terminated string; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, fs_type.as_ptr(), FSOPEN_CLOEXEC) };
    let context = owned(fd, "fsopen overlay")?;
    let mut layers = 0;
    for option in &split.data {
        let result = match option.split_once('=') {
            Some(("lowerdir", dirs)) => dirs.split(':').try_for_each(|dir| {
                layers += 1;
                set_string(&context, "lowerdir+", dir)
            }),
            Some((key, value)) => set_string(&context, key, value),
            None => set_flag(&context, option),
        };
        result.map_err(|e| with_log(&context, e, &format!("fsconfig {option:.80}")))?;
    }
    // SAFETY: plain integer arguments; the result is checked.
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            0usize,
            0usize,
            0,
        )
    };
    if created < 0 {
        return Err(with_log(&context, io::Error::last_os_error(), "fsconfig create overlay"));
    }
    let mut attrs = 0;
    for (flag, attr) in [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    ] {
        if split.flags.contains(flag) {
            attrs |= attr;
        }
    }
    // SAFETY: plain integer arguments; the result is checked.
    let mfd =
        unsafe { libc::syscall(libc::SYS_fsmount, context.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    let mounted = owned(mfd, "fsmount overlay")?;
    let empty = cstr("")?;
    let target_c = cstr(target.to_str().ok_or_else(|| io::Error::other("non-UTF-8 target"))?)?;
    // SAFETY: valid fds and NUL-terminated strings; the result is checked.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mounted.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("move_mount overlay to {}: {e} ({})", target.display(), m.source),
        ));
    }
    Ok(Method::Fsconfig { layers })
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::other(format!("{s:?} contains NUL")))
}

fn owned(ret: libc::c_long, what: &str) -> io::Result<OwnedFd> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as c_int) })
}

fn set_string(context: &OwnedFd, key: &str, value: &str) -> io::Result<()> {
    let (key, value) = (cstr(key)?, cstr(value)?);
    // SAFETY: valid fd and NUL-terminated strings; the result is checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr() as *const c_char,
            0,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn set_flag(context: &OwnedFd, key: &str) -> io::Result<()> {
    let key = cstr(key)?;
    // SAFETY: valid fd and NUL-terminated string; the result is checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_SET_FLAG,
            key.as_ptr(),
            0usize,
            0,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `e` with the messages the filesystem logged on the context (overlayfs
/// explains a refused option there).
fn with_log(context: &OwnedFd, e: io::Error, what: &str) -> io::Error {
    let log = kernel_log(context);
    let detail =
        if log.is_empty() { String::new() } else { format!(" [kernel: {}]", log.join("; ")) };
    io::Error::new(e.kind(), format!("{what}: {e}{detail}"))
}

/// The messages logged on an fs context, one per read(2), each `e `, `w `
/// or `i ` (error, warning, info) and the text; the kernel keeps the last
/// few. Read until none is left.
fn kernel_log(context: &OwnedFd) -> Vec<String> {
    let mut log = Vec::new();
    let mut buf = [0u8; 1024];
    // The kernel's ring holds 8 messages: a bound that cannot loop forever.
    for _ in 0..16 {
        // SAFETY: reading into a buffer we own, of the given length.
        let n = unsafe { libc::read(context.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n as usize]).trim().to_string();
        let text = match line.split_once(' ') {
            Some(("e" | "w" | "i", text)) => text.to_string(),
            _ => line,
        };
        log.push(text.chars().filter(|c| !c.is_control()).collect());
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// A mount the kernel refuses, on real directories; the error.
    fn refused(options: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b", "mnt"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let p = |d: &str| dir.path().join(d).display().to_string();
        let options: Vec<String> =
            options.iter().map(|o| o.replace("$A", &p("a")).replace("$B", &p("b"))).collect();
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options,
            target: String::new(),
        };
        let mut mounted = Mounted::new(&dir.path().join("mnt"));
        let e = mounted.mount(&m, 4096).expect_err("the kernel refuses it");
        e.to_string()
    }

    #[test]
    fn a_refused_mount_names_the_kernels_reason() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to mount");
            return;
        }
        // mount(2) alone says EINVAL; the probe reads what overlayfs logged.
        let e = refused(&["lowerdir=$A"]);
        assert!(e.contains("EINVAL"), "{e}");
        assert!(e.contains("[kernel: overlayfs: at least 2 lowerdir are needed"), "{e}");
        // One the filesystem logs on the context.
        let e = refused(&["lowerdir=$A:$B", "no_such_overlay_option"]);
        assert!(e.contains("[kernel: overlay: Unknown parameter 'no_such_overlay_option'"), "{e}");
    }

    #[test]
    fn flags_are_split_from_data() {
        let s = split_options(&strings(&["ro", "rbind", "nosuid", "index=off", "lowerdir=/a:/b"]));
        assert!(s.flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_NOSUID));
        assert!(s.recursive_bind);
        assert_eq!(s.data, ["index=off", "lowerdir=/a:/b"]);
        let s = split_options(&strings(&["ro", "rw"]));
        assert!(!s.flags.contains(MsFlags::MS_RDONLY));
    }
}
