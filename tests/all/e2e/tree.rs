//! A fingerprint of a directory tree on disk: one line per entry with its
//! type, mode, owner, size, mtime, xattrs and a digest of its content. Two
//! fingerprints differ exactly where something in the tree changed, so a
//! diff says *what* a container's write reached.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Relative path -> description of the entry.
pub type Fingerprint = BTreeMap<String, String>;

pub fn fingerprint(root: &Path) -> Fingerprint {
    let mut out = Fingerprint::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, path: &Path, out: &mut Fingerprint) {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_symlink() {
        format!("symlink->{}", std::fs::read_link(path).unwrap().display())
    } else if ft.is_file() {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        format!("file:{}", hex::encode(Sha256::digest(&bytes)))
    } else if ft.is_char_device() || ft.is_block_device() {
        format!("dev:{}", meta.rdev())
    } else {
        "other".to_string()
    };
    let rel = path.strip_prefix(root).unwrap().display().to_string();
    out.insert(
        if rel.is_empty() { ".".into() } else { rel },
        format!(
            "{kind} mode={:o} owner={}:{} size={} mtime={}.{:09} nlink={} xattrs={:?}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            if ft.is_dir() { 0 } else { meta.size() },
            meta.mtime(),
            meta.mtime_nsec(),
            meta.nlink(),
            xattrs(path)
        ),
    );
    if ft.is_dir() {
        let mut children: Vec<_> =
            std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        children.sort();
        for c in children {
            walk(root, &c, out);
        }
    }
}

/// Extended attributes (names and values) of `path`, not following symlinks.
fn xattrs(path: &Path) -> BTreeMap<String, String> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: c is a valid C string; the buffer is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return BTreeMap::new();
    }
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: as above.
        let m = unsafe {
            libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len())
        };
        value.truncate(m.max(0) as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), hex::encode(value));
    }
    out
}

/// Lines that differ between two fingerprints, for messages.
pub fn diff(before: &Fingerprint, after: &Fingerprint) -> Vec<String> {
    let mut out = Vec::new();
    for (path, b) in before {
        match after.get(path) {
            None => out.push(format!("removed {path}: {b}")),
            Some(a) if a != b => out.push(format!("changed {path}: {b}  ->  {a}")),
            _ => {}
        }
    }
    for (path, a) in after {
        if !before.contains_key(path) {
            out.push(format!("added {path}: {a}"));
        }
    }
    out
}
