//! Runs a validated layout's steps inside a new snapshot directory. The
//! steps were decided by a policy and checked by the host; this only does
//! them, re-checking names so a bug upstream cannot reach outside the dir.

use std::path::{Path, PathBuf};

use wasmsnap_plan::{CopyMode, SnapshotId, Step};

use crate::FsError;
use crate::copy;
use crate::sys::{self, Node};

/// What running the steps did that matters for making them durable.
#[derive(Debug, Default)]
pub(crate) struct Ran {
    /// Some step copied a tree (its data needs flushing, not just dirs).
    pub copied: bool,
    /// Entries the copies made, if only directories and regular files
    /// (`None` once a copy made anything else).
    pub copied_plain: Option<u64>,
}

impl Ran {
    /// The copies made at most `limit` directories and regular files and
    /// nothing else: fsyncing each is cheaper than a syncfs, which would
    /// also write out whatever else is dirty on the file system.
    pub fn small_plain_copy(&self, limit: u64) -> bool {
        self.copied && self.copied_plain.is_some_and(|n| n <= limit)
    }
}

/// Runs `steps` in order inside `dir`; the first failure stops them and is
/// returned naming the step. `mapped_root`: the host (uid, gid) container
/// root maps to, from the snapshot's checked id map.
pub(crate) fn run(
    dir: &Path,
    id: SnapshotId,
    steps: &[Step],
    parent: Option<&Path>,
    mapped_root: Option<(u32, u32)>,
) -> Result<Ran, FsError> {
    let mut ran = Ran { copied: false, copied_plain: Some(0) };
    for (index, step) in steps.iter().enumerate() {
        run_step(dir, step, parent, mapped_root, &mut ran).map_err(|error| FsError::Step {
            id,
            index,
            step: describe(step),
            error: Box::new(error),
        })?;
    }
    Ok(ran)
}

fn run_step(
    dir: &Path,
    step: &Step,
    parent: Option<&Path>,
    mapped_root: Option<(u32, u32)>,
    ran: &mut Ran,
) -> Result<(), FsError> {
    match step {
        Step::Mkdir { name, mode } => {
            if mode & !0o7777 != 0 {
                return Err(FsError::InvalidMode { name: name.clone(), mode: *mode });
            }
            let path = entry(dir, name)?;
            let c = sys::cpath(&path).map_err(|e| FsError::io("mkdir", &path, e))?;
            sys::mkdir_exact(&c, *mode).map_err(|e| FsError::io("mkdir", &path, e))
        }
        Step::CopyParent { name, mode } => {
            let path = entry(dir, name)?;
            let parent = parent.ok_or_else(|| FsError::NoParent { name: name.clone() })?;
            ran.copied = true;
            let stats = copy::copy_tree(parent, &path, *mode)?;
            let plain = stats.symlinks == 0 && stats.specials == 0 && stats.hard_links == 0;
            ran.copied_plain =
                ran.copied_plain.filter(|_| plain).map(|n| n + stats.dirs + stats.files);
            tracing::debug!(from = %parent.display(), to = %path.display(), ?stats, "copied parent");
            Ok(())
        }
        // Without a parent there is no owner to take: the entry keeps ours,
        // as containerd's overlay snapshotter does.
        Step::ChownLikeParent { name } => {
            let path = entry(dir, name)?;
            let Some(parent) = parent else { return Ok(()) };
            let parent_c = sys::cpath(parent).map_err(|e| FsError::io("stat", parent, e))?;
            let st = sys::lstat(&parent_c).map_err(|e| FsError::io("stat", parent, e))?;
            let c = sys::cpath(&path).map_err(|e| FsError::io("lchown", &path, e))?;
            Node::Path(&c).chown(st.st_uid, st.st_gid).map_err(|e| FsError::io("lchown", &path, e))
        }
        // One lchown, as containerd's overlayfs does with the labels' root.
        Step::ChownToMappedRoot { name } => {
            let path = entry(dir, name)?;
            let (uid, gid) = mapped_root.ok_or_else(|| FsError::NoIdMap { name: name.clone() })?;
            let c = sys::cpath(&path).map_err(|e| FsError::io("lchown", &path, e))?;
            Node::Path(&c).chown(uid, gid).map_err(|e| FsError::io("lchown", &path, e))
        }
    }
}

/// `dir/name`, after checking `name` is one plain path component.
fn entry(dir: &Path, name: &str) -> Result<PathBuf, FsError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("not a plain name")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(FsError::InvalidName { name: name.to_string(), reason }),
        None => Ok(dir.join(name)),
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::Mkdir { name, mode } => format!("mkdir {name:?} {mode:04o}"),
        Step::CopyParent { name, mode } => {
            let mode = match mode {
                CopyMode::Copy => "copy",
                CopyMode::CloneOrCopy => "clone-or-copy",
            };
            format!("copy-parent {name:?} {mode}")
        }
        Step::ChownLikeParent { name } => format!("chown-like-parent {name:?}"),
        Step::ChownToMappedRoot { name } => format!("chown-to-mapped-root {name:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_one_component() {
        let dir = Path::new("/d");
        assert_eq!(entry(dir, "fs").unwrap(), Path::new("/d/fs"));
        for bad in ["", ".", "..", "a/b", "/abs", "a\0b"] {
            assert!(
                matches!(entry(dir, bad), Err(FsError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn describes_steps_for_error_messages() {
        assert_eq!(describe(&Step::Mkdir { name: "fs".into(), mode: 0o755 }), "mkdir \"fs\" 0755");
        assert_eq!(
            describe(&Step::CopyParent { name: "fs".into(), mode: CopyMode::CloneOrCopy }),
            "copy-parent \"fs\" clone-or-copy"
        );
    }
}
