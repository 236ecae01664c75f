//! `--mount`: run a case's plan for real and check the merged view.
//!
//! In a scratch root: create every parent as the daemon would (the
//! policy's layout for an active snapshot on the rest of the chain, run by
//! the real executor, then "committed"), write marker files into each
//! parent's content, create the snapshot itself from its layout, mount the
//! rendered plan and check that
//! - every parent's marker is visible (no layer is missing);
//! - the nearest parent's copy of a file shadows the farther ones;
//! - a writable snapshot's writes land in its own content dir and in no
//!   parent's;
//! - a view (or committed snapshot) cannot be written.
//!
//! Then everything is unmounted and removed, whether the checks passed or
//! not: guards do it on every path out, panics included.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmsnap_engine::Policy;
use wasmsnap_fs::SnapshotDirs;
use wasmsnap_plan::{IdMap, Kind, MountPlan, Snapshot, SnapshotId, render_mounts};

use super::mount_sys::{Method, Mounted};
use super::subject::{Plan, failure};

/// A file every layer writes, holding the layer's id: the nearest wins.
const TOP: &str = "wasmsnap-harness-top";
/// A file only the checked snapshot's mount writes.
const WRITTEN: &str = "wasmsnap-harness-written";

fn marker(id: SnapshotId) -> String {
    format!("wasmsnap-harness-layer-{id}")
}

/// What `--mount` found for one case.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MountReport {
    /// Each check and whether it held.
    pub checks: Vec<Check>,
    /// How each mount of the plan was made.
    pub methods: Vec<String>,
    /// Setting up, mounting or cleaning up failed (the checks may not have run).
    pub error: Option<String>,
    /// Time to create the parents and the snapshot.
    pub setup_ms: f64,
    /// Time to mount, check and unmount.
    pub mount_ms: f64,
    /// Time to remove the scratch root.
    pub cleanup_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl MountReport {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.checks.iter().all(|c| c.passed)
    }

    fn check(&mut self, name: &str, passed: bool, detail: String) {
        self.checks.push(Check { name: name.into(), passed, detail });
    }
}

/// Mount `plan` (the case's answer for `snapshot`) in a fresh scratch root
/// under `scratch_base` and check it. `policy` gives the parents' layouts.
pub fn check(
    policy: &Policy,
    snapshot: &Snapshot,
    plan: &Plan,
    scratch_base: &Path,
    page_size: usize,
) -> MountReport {
    let mut report = MountReport::default();
    let outcome = Scratch::create(scratch_base).and_then(|scratch| {
        let result = run(policy, snapshot, plan, &scratch, page_size, &mut report);
        // Cleanup errors matter too: a harness must not leave anything behind.
        let started = Instant::now();
        let cleaned = scratch.remove();
        report.cleanup_ms = ms(started.elapsed());
        result.and(cleaned)
    });
    if let Err(e) = outcome {
        report.error = Some(e);
    }
    report
}

fn run(
    policy: &Policy,
    s: &Snapshot,
    plan: &Plan,
    scratch: &Scratch,
    page_size: usize,
    report: &mut MountReport,
) -> Result<(), String> {
    let started = Instant::now();
    let dirs =
        SnapshotDirs::open(&scratch.root).map_err(|e| format!("open the scratch root: {e}"))?;
    let mut parent_content: Option<PathBuf> = None;
    let mut contents = Vec::with_capacity(s.parent_ids.len());
    // Farthest first: each parent is an active snapshot on the ones below
    // it, then committed.
    for (depth, &id) in s.parent_ids.iter().enumerate().rev() {
        let parent = Snapshot {
            id,
            kind: Kind::Active,
            parent_ids: s.parent_ids[depth + 1..].to_vec(),
            labels: Vec::new(),
            id_map: None,
        };
        let layout =
            policy.layout(&parent).map_err(|e| format!("layout of parent {id}: {}", failure(e)))?;
        dirs.create(id, &layout.steps, parent_content.as_deref())
            .map_err(|e| format!("create parent {id}: {e}"))?
            .keep();
        let content = layout.content.as_ref().map(|name| dirs.dir(id).join(name)).ok_or_else(|| {
            format!("parent {id}: the policy's layout for an active snapshot names no content dir, so it has nothing to commit")
        })?;
        write(&content.join(marker(id)), id)?;
        write(&content.join(TOP), id)?;
        contents.push((id, content.clone()));
        parent_content = Some(content);
    }
    contents.reverse(); // nearest first again
    let mapped_root = s.id_map.as_ref().and_then(IdMap::root);
    dirs.create_mapped(s.id, &plan.layout.steps, parent_content.as_deref(), mapped_root)
        .map_err(|e| format!("create snapshot {}: {e}", s.id))?
        .keep();
    let own = plan.layout.content.as_ref().map(|name| dirs.dir(s.id).join(name));
    report.setup_ms = ms(started.elapsed());
    let rendered = render_mounts(&scratch.root, &plan.plans, s.id_map.as_ref());
    if let [MountPlan::Overlay { lower, .. }] = plan.plans.as_slice()
        && lower.is_empty()
    {
        // An extraction plan: containerd's applier writes into upperdir=;
        // the kernel cannot mount an overlay without lowers (EINVAL).
        extraction_checks(&rendered[0].options, own.as_deref(), report);
        report.methods.push("overlay extraction-only (not mounted)".into());
        return Ok(());
    }

    let started = Instant::now();
    let target = scratch.root.join("mnt");
    std::fs::create_dir(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
    let mut mounted = Mounted::new(&target);
    // The same plan, rendered under the scratch root instead of the case's.
    for m in &rendered {
        let method = mounted.mount(m, page_size).map_err(|e| e.to_string())?;
        report.methods.push(format!("{} {}", m.r#type, method));
        if let Method::Fsconfig { .. } = method {
            tracing::debug!(layers = s.parent_ids.len(), "mounted with fsconfig lowerdir+");
        }
    }
    checks(s, &target, own.as_deref(), &contents, report);
    if let Some(map) = &s.id_map {
        owner_checks(map, &target, &contents, own.as_deref(), report);
    }
    mounted.unmount().map_err(|e| e.to_string())?;
    report.mount_ms = ms(started.elapsed());
    Ok(())
}

fn checks(
    s: &Snapshot,
    target: &Path,
    own: Option<&Path>,
    parents: &[(SnapshotId, PathBuf)],
    report: &mut MountReport,
) {
    if !parents.is_empty() {
        let missing: Vec<SnapshotId> = parents
            .iter()
            .filter(|(id, _)| read(&target.join(marker(*id))).as_deref() != Some(&id.to_string()))
            .map(|(id, _)| *id)
            .collect();
        let detail = if missing.is_empty() {
            format!("{} of {} layers", parents.len(), parents.len())
        } else {
            format!("missing layers: {}", ids_text(&missing))
        };
        report.check("every layer visible", missing.is_empty(), detail);

        let nearest = parents[0].0;
        let top = read(&target.join(TOP));
        let passed = top.as_deref() == Some(&nearest.to_string());
        let detail = match top {
            Some(t) => format!("{TOP} holds {t}, the nearest parent is {nearest}"),
            None => format!("{TOP} is not visible"),
        };
        report.check("nearest parent wins", passed, detail);
    }

    let writable = s.kind == Kind::Active;
    let attempt = write_as_container_root(s.id_map.as_ref(), &target.join(WRITTEN));
    if writable {
        let landed_in_own = own.is_some_and(|dir| dir.join(WRITTEN).exists());
        let leaked: Vec<SnapshotId> = parents
            .iter()
            .filter(|(_, dir)| dir.join(WRITTEN).exists())
            .map(|(id, _)| *id)
            .collect();
        let (passed, detail) = match (&attempt, own) {
            (Err(e), _) => (false, format!("writing to the mount failed: {e}")),
            (Ok(()), None) => {
                (false, "the layout names no content dir for the write to land in".to_string())
            }
            (Ok(()), Some(dir)) if !landed_in_own => {
                (false, format!("the write is not in the snapshot's own {}", dir.display()))
            }
            (Ok(()), Some(_)) if !leaked.is_empty() => {
                (false, format!("the write reached parent(s) {}", ids_text(&leaked)))
            }
            (Ok(()), Some(dir)) => (
                true,
                format!(
                    "landed in snapshot {}'s {}",
                    s.id,
                    dir.file_name().unwrap_or_default().to_string_lossy()
                ),
            ),
        };
        report.check("writes land in the snapshot's own dir", passed, detail);
    } else {
        let (passed, detail) = match &attempt {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                (true, "write refused: read-only file system".to_string())
            }
            Err(e) => (false, format!("write refused, but not as read-only: {e}")),
            Ok(()) => (false, format!("a {:?} mount accepted a write", s.kind).to_lowercase()),
        };
        report.check("read-only", passed, detail);
    }
}

/// Write as the container's root would: with an id map, as the mapped
/// root (an idmapped mount refuses a writer its map does not cover). The
/// mount's directory is opened first, as host root: the mapped root may not
/// traverse the scratch directories above it.
fn write_as_container_root(map: Option<&IdMap>, path: &Path) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let Some((uid, gid)) = map.and_then(IdMap::root) else {
        return std::fs::write(path, "written\n");
    };
    let dir = std::fs::File::open(path.parent().unwrap_or(Path::new("/")))?;
    let name = std::ffi::CString::new(path.file_name().unwrap_or_default().as_bytes())
        .map_err(|_| std::io::Error::other("NUL in a file name"))?;
    // setfsuid/setfsgid are per thread: a thread of its own, then gone.
    std::thread::spawn(move || {
        // SAFETY: plain syscalls: this thread's file system ids, then an
        // openat relative to a directory fd we own.
        let fd = unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new fd, owned here.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        std::io::Write::write_all(&mut file, b"written\n")
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked")))
}

/// An extraction plan must render as containerd's applier reads it: one
/// `upperdir=` (the snapshot's own content dir), no `lowerdir=`, no
/// `workdir=`, nothing read-only.
fn extraction_checks(options: &[String], own: Option<&Path>, report: &mut MountReport) {
    let uppers: Vec<&str> = options.iter().filter_map(|o| o.strip_prefix("upperdir=")).collect();
    let stray: Vec<&String> = options
        .iter()
        .filter(|o| o.starts_with("lowerdir=") || o.starts_with("workdir=") || *o == "ro")
        .collect();
    let own_text = own.map(|p| p.display().to_string());
    let passed =
        uppers.len() == 1 && stray.is_empty() && own_text.as_deref() == uppers.first().copied();
    let detail = if passed {
        format!("upperdir={} alone: containerd's applier writes the layer there", uppers[0])
    } else {
        format!("upperdir {uppers:?}, own content {own_text:?}, unexpected {stray:?}")
    };
    report.check("extraction plan renders as the applier expects", passed, detail);
}

/// Through an idmapped mount, what each layer wrote as host root (0:0)
/// reads as the mapped root; the snapshot's own dir is the mapped root's.
fn owner_checks(
    map: &IdMap,
    target: &Path,
    parents: &[(SnapshotId, PathBuf)],
    own: Option<&Path>,
    report: &mut MountReport,
) {
    use std::os::unix::fs::MetadataExt;
    let Some(root) = map.root() else { return };
    let owner = |p: &Path| std::fs::symlink_metadata(p).map(|m| (m.uid(), m.gid())).ok();
    let mut wrong = Vec::new();
    for (id, _) in parents {
        let seen = owner(&target.join(marker(*id)));
        if seen != Some(root) {
            wrong.push(format!("layer {id}'s file reads as {seen:?}"));
        }
    }
    let seen = owner(target);
    if seen != Some(root) {
        wrong.push(format!("the mount's root reads as {seen:?}"));
    }
    let on_disk = own.and_then(owner);
    let detail = if wrong.is_empty() {
        format!(
            "files owned by 0:0 in the layers read as {}:{} (the mapped root); own content on disk {on_disk:?}",
            root.0, root.1
        )
    } else {
        wrong.join("; ")
    };
    report.check("ids through the mount are the mapped ones", wrong.is_empty(), detail);
}

fn ids_text(ids: &[SnapshotId]) -> String {
    const SHOWN: usize = 10;
    let mut text = ids.iter().take(SHOWN).map(|id| id.to_string()).collect::<Vec<_>>().join(", ");
    if ids.len() > SHOWN {
        text.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    text
}

fn write(path: &Path, id: SnapshotId) -> Result<(), String> {
    std::fs::write(path, format!("{id}")).map_err(|e| format!("write {}: {e}", path.display()))
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A scratch root, removed (after checking nothing is mounted in it) when
/// [`Scratch::remove`] runs or the guard drops.
struct Scratch {
    root: PathBuf,
    removed: bool,
}

impl Scratch {
    fn create(base: &Path) -> Result<Scratch, String> {
        let template = base.join("wasmsnap-harness-XXXXXX");
        let root = nix::unistd::mkdtemp(&template)
            .map_err(|e| format!("create a scratch dir in {}: {e}", base.display()))?;
        Ok(Scratch { root, removed: false })
    }

    fn remove(mut self) -> Result<(), String> {
        self.removed = true;
        remove_scratch(&self.root)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.removed {
            let _ = remove_scratch(&self.root);
        }
    }
}

fn remove_scratch(root: &Path) -> Result<(), String> {
    let left = mounts_under(root).map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    for point in left.iter().rev() {
        // Detach what an earlier error path could not unmount.
        let _ = nix::mount::umount2(point.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
    let still = mounts_under(root).map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    if !still.is_empty() {
        return Err(format!(
            "left mounted: {}",
            still.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    std::fs::remove_dir_all(root).map_err(|e| format!("remove scratch {}: {e}", root.display()))
}

/// Mount points at or under `root`, from /proc/self/mountinfo.
pub fn mounts_under(root: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let code = u8::from_str_radix(&field[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn long_id_lists_are_shortened() {
        let ids: Vec<u64> = (1..=12).collect();
        assert_eq!(ids_text(&ids), "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more");
    }
}
