//! A source tree with every file type and attribute the copy engine must
//! keep, and a comparison of two trees that checks all of it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, symlink};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::{chmod, lchown, lstat, mknod, set_times, set_xattr, xattrs};

pub const SPARSE_SIZE: u64 = 100 << 20;
/// Offsets of the 4 KiB blocks written into the sparse file.
pub const SPARSE_BLOCKS: [u64; 4] = [0, 10 << 20, 60 << 20, SPARSE_SIZE - 4096];

/// Builds the rich tree at `root` (created). Every entry gets distinct
/// nanosecond atime/mtime, set deepest first so directories keep theirs.
pub fn build_rich_tree(root: &Path) {
    let mut made: Vec<PathBuf> = Vec::new();
    let mut dir = |p: PathBuf, mode: u32| {
        fs::create_dir(&p).unwrap();
        chmod(&p, mode);
        made.push(p.clone());
        p
    };
    let root = {
        fs::create_dir_all(root).unwrap();
        chmod(root, 0o751);
        lchown(root, 4000, 4001);
        root.to_path_buf()
    };
    let mut all = vec![root.clone()];

    let file = |p: PathBuf, content: &[u8], mode: u32, owner: (u32, u32)| {
        fs::write(&p, content).unwrap();
        lchown(&p, owner.0, owner.1);
        chmod(&p, mode); // after chown, which clears setuid
        p
    };

    all.push(file(root.join("plain"), b"hello, world\n", 0o644, (0, 0)));
    set_xattr(&root.join("plain"), "user.note", b"hello xattr");
    set_xattr(&root.join("plain"), "trusted.note", b"\x00binary\xff");
    set_xattr(&root.join("plain"), "security.wasmsnap-test", b"label");
    all.push(file(root.join("setuid"), b"#!/bin/sh\n", 0o4755, (1000, 2000)));
    all.push(file(root.join("setgid"), b"sgid", 0o2750, (0, 3000)));
    all.push(file(root.join("empty"), b"", 0o600, (0, 0)));
    all.push(file(root.join("noperm"), b"secret", 0o000, (1000, 1000)));
    all.push(file(root.join(OsStr::from_bytes(b"weird \xff name")), b"bytes", 0o640, (0, 0)));

    // Large enough that data moves in several chunks.
    let big: Vec<u8> =
        (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    all.push(file(root.join("big"), &big, 0o644, (0, 0)));

    // 100 MiB with four 4 KiB blocks of data, the rest holes.
    let sparse = root.join("sparse");
    {
        let f = fs::File::create(&sparse).unwrap();
        f.set_len(SPARSE_SIZE).unwrap();
        for (i, offset) in SPARSE_BLOCKS.iter().enumerate() {
            f.write_all_at(&[b'a' + i as u8; 4096], *offset).unwrap();
        }
    }
    all.push(sparse);

    all.push(dir(root.join("sticky"), 0o1777));
    let ro = dir(root.join("ro_dir"), 0o755);
    all.push(file(ro.join("inner"), b"inside a read-only dir", 0o444, (0, 0)));
    chmod(&ro, 0o555);
    all.push(ro);

    let opaque = dir(root.join("opaque"), 0o755);
    set_xattr(&opaque, "trusted.overlay.opaque", b"y");
    all.push(opaque.clone());
    all.push(file(opaque.join("kept"), b"k", 0o644, (0, 0)));

    // 40 levels deep.
    let mut deep = root.join("d");
    dir(deep.clone(), 0o755);
    set_xattr(&deep, "trusted.overlay.redirect", b"/elsewhere");
    all.push(deep.clone());
    for level in 0..40 {
        deep = deep.join(format!("level{level}"));
        all.push(dir(deep.clone(), 0o755));
    }
    all.push(file(deep.join("bottom"), b"the bottom", 0o644, (0, 0)));

    // Hard links: a file linked three times across directories, and a fifo
    // linked twice (hard links to non-regular files are links too).
    let linked = file(root.join("linked"), b"one inode, three names", 0o640, (1000, 1000));
    fs::hard_link(&linked, root.join("d/linked2")).unwrap();
    fs::hard_link(&linked, root.join("opaque/linked3")).unwrap();
    all.push(linked);
    mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0);
    fs::hard_link(root.join("fifo"), root.join("fifo_link")).unwrap();
    all.push(root.join("fifo"));

    // Symlinks, never followed: relative, dangling, to a dir, absolute.
    symlink("plain", root.join("sym")).unwrap();
    lchown(&root.join("sym"), 1000, 1001);
    set_xattr(&root.join("sym"), "trusted.on-a-symlink", b"1");
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    symlink("d", root.join("dirsym")).unwrap();
    symlink("/etc/passwd", root.join("abs")).unwrap();
    all.extend(["sym", "dangling", "dirsym", "abs"].map(|n| root.join(n)));

    // Device nodes (a whiteout is a 0/0 char device), a socket.
    mknod(&root.join("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    mknod(&root.join("blk"), libc::S_IFBLK | 0o660, libc::makedev(7, 200));
    mknod(&root.join("whiteout"), libc::S_IFCHR, libc::makedev(0, 0));
    mknod(&root.join("sock"), libc::S_IFSOCK | 0o755, 0);
    lchown(&root.join("blk"), 0, 6);
    all.extend(["null", "blk", "whiteout", "sock"].map(|n| root.join(n)));

    // Enough small files to keep a worker pool busy.
    let many = dir(root.join("many"), 0o755);
    for i in 0..300 {
        all.push(file(
            many.join(format!("f{i}")),
            format!("file {i}\n").repeat(i % 17).as_bytes(),
            0o644,
            (i as u32, i as u32),
        ));
    }
    all.push(many);

    all.extend(made);
    all.sort();
    all.dedup();
    // Deepest (longest) paths first, so a directory's times are set after
    // everything inside it.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in all.iter().enumerate() {
        let i = i as i64;
        set_times(
            path,
            (1_600_000_000 + i, 100_000_001 + i * 7),
            (1_500_000_000 + i, 999_999_999 - i * 3),
        );
    }
}

/// Relative path -> metadata of every entry under a root, root included,
/// read without moving any atime (directories are opened O_NOATIME).
pub struct Entries(BTreeMap<PathBuf, libc::stat>);

impl Entries {
    pub fn of(root: &Path) -> Entries {
        let mut out = BTreeMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let st = lstat(&root.join(&rel));
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_NOATIME;
                let mut dir = Dir::open(&root.join(&rel), flags, Mode::empty()).unwrap();
                for entry in dir.iter() {
                    let entry = entry.unwrap();
                    let name = entry.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        stack.push(rel.join(OsStr::from_bytes(name)));
                    }
                }
            }
            out.insert(rel, st);
        }
        Entries(out)
    }
}

/// Asserts `dst` is a faithful copy of the tree at `src` as it was when
/// `before` was taken: same names, types, modes (all 12 bits), owners,
/// atime/mtime to the nanosecond, sizes, device numbers, xattrs, symlink
/// targets, contents, and the same hard-link structure. Also asserts the
/// copy left the source as it was, atimes included, except symlinks'
/// atimes, which readlink(2) moves and nothing can prevent.
pub fn assert_same_tree(before: &Entries, src: &Path, dst: &Path) {
    let a = &before.0;
    let after = Entries::of(src).0;
    let b = Entries::of(dst).0;
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "names differ");
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the copy changed the source's names"
    );

    let mut links: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    for (rel, sa) in a {
        let sb = &b[rel];
        let at = |what: &str| format!("{what} of {:?}", rel);
        let kind = sa.st_mode & libc::S_IFMT;
        let sa_now = &after[rel];
        assert_eq!(
            (sa.st_mtime, sa.st_mtime_nsec),
            (sa_now.st_mtime, sa_now.st_mtime_nsec),
            "{}",
            at("source mtime")
        );
        if kind != libc::S_IFLNK {
            assert_eq!(
                (sa.st_atime, sa.st_atime_nsec),
                (sa_now.st_atime, sa_now.st_atime_nsec),
                "{}",
                at("source atime")
            );
        }

        assert_eq!(sa.st_mode, sb.st_mode, "{} ({:o} vs {:o})", at("mode"), sa.st_mode, sb.st_mode);
        assert_eq!((sa.st_uid, sa.st_gid), (sb.st_uid, sb.st_gid), "{}", at("owner"));
        assert_eq!(
            (sa.st_mtime, sa.st_mtime_nsec),
            (sb.st_mtime, sb.st_mtime_nsec),
            "{}",
            at("mtime")
        );
        assert_eq!(
            (sa.st_atime, sa.st_atime_nsec),
            (sb.st_atime, sb.st_atime_nsec),
            "{}",
            at("atime")
        );
        assert_eq!(xattrs(&src.join(rel)), xattrs(&dst.join(rel)), "{}", at("xattrs"));
        if kind != libc::S_IFDIR {
            assert_eq!(sa.st_size, sb.st_size, "{}", at("size"));
            assert_eq!(sa.st_nlink, sb.st_nlink, "{}", at("link count"));
            // One source inode maps to exactly one copied inode.
            let (ka, kb) = ((sa.st_dev, sa.st_ino), (sb.st_dev, sb.st_ino));
            assert_eq!(*links.entry(ka).or_insert(kb), kb, "{}", at("hard link structure"));
        }
        if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
            assert_eq!(sa.st_rdev, sb.st_rdev, "{}", at("device number"));
        }
    }
    let distinct: std::collections::HashSet<_> = links.values().collect();
    assert_eq!(distinct.len(), links.len(), "two source inodes were copied to one");

    for (rel, sa) in a {
        match sa.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                assert!(same_content(&src.join(rel), &dst.join(rel)), "content of {rel:?} differs")
            }
            libc::S_IFLNK => assert_eq!(
                fs::read_link(src.join(rel)).unwrap(),
                fs::read_link(dst.join(rel)).unwrap(),
                "symlink target of {rel:?}"
            ),
            _ => {}
        }
    }
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Writes `len` bytes of a position-dependent pattern: every 4 KiB page
/// starts with its own index, so a page copied to the wrong place shows.
pub fn write_pattern(path: &Path, len: u64) {
    let mut f = fs::File::create(path).unwrap();
    let mut block: Vec<u8> =
        (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let mut written = 0u64;
    while written < len {
        let n = block.len().min((len - written) as usize);
        for page in (0..n).step_by(4096) {
            let index = (written + page as u64) / 4096;
            let stamp = &mut block[page..(page + 8).min(n)];
            stamp.copy_from_slice(&index.to_le_bytes()[..stamp.len()]);
        }
        f.write_all(&block[..n]).unwrap();
        written += n as u64;
    }
    f.flush().unwrap();
}

/// Reads `len` bytes at `offset`.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}
