//! The plan validator (`wasmsnap_plan::validate_layout` and
//! `validate_mounts`), the host's only defence against a hostile policy: on
//! any plan it answers (never panics), and a plan it accepts renders to
//! mounts that stay inside the snapshot tree: every path is
//! `<root>/snapshots/<id>/<name>` of the snapshot or one of its parents,
//! only the snapshot's own directories are writable, a view or committed
//! snapshot mounts read-only, and no free option carries a path or a bind.

use std::path::Path;

use wasmsnap_plan::validate::{OTHER_FS_TYPES, TMPFS_OPTIONS};
use wasmsnap_plan::{
    CopyMode, DirRef, Kind, Layout, Limits, MountPlan, Snapshot, Step, render_mounts,
    validate_layout, validate_mounts,
};

use super::input::Input;

const NAMES: &[&str] = &[
    "fs", "work", "upper", "diff", "a-b_c.1", "", ".", "..", "a/b", "/", "x\0", "fs ", "é", "a:b",
    "a,b", "a=b", "a\\b", "...", "-", ".hidden",
];
const OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "rbind",
    "bind",
    "remount",
    "loop",
    "index=off",
    "userxattr",
    "volatile",
    "metacopy=on",
    "redirect_dir=on",
    "lowerdir=/x",
    "upperdir=x",
    "workdir=y",
    "x-containerd.mkdir.path=/a",
    "size=10m",
    "mode=0755",
    "nodev",
    "a,b",
    "",
    "a\0b",
    "uid=0",
    "datadir=/d",
    "ro,bind",
    "x-containerd.mkdir.path=a",
];
const FS_TYPES: &[&str] =
    &["tmpfs", "proc", "overlay", "bind", "ext4", "cgroup2", "", "tmpfs/x", "nfs"];
const SOURCES: &[&str] = &["tmpfs", "none", "/dev/sda", "../x", "", "a\0b", "shm"];
const ROOT: &str = "/r";

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let snapshot = snapshot(&mut input);
    let limits = Limits::default();
    let layout = layout(&mut input);
    if validate_layout(&snapshot, &layout, &limits).is_ok() {
        check_layout(&snapshot, &layout);
    }
    let plans: Vec<MountPlan> = (0..input.below(4)).map(|_| mount(&mut input, &snapshot)).collect();
    if validate_mounts(&snapshot, &plans, &limits).is_ok() {
        check_rendered(&snapshot, &plans);
    }
}

fn snapshot(input: &mut Input) -> Snapshot {
    let id = 1 + input.below(8) as u64;
    let mut parent_ids = Vec::new();
    for _ in 0..input.below(4) {
        let p = 1 + input.below(12) as u64;
        if p != id && !parent_ids.contains(&p) {
            parent_ids.push(p);
        }
    }
    let kind = [Kind::Active, Kind::View, Kind::Committed][input.below(3)];
    Snapshot { id, kind, parent_ids, labels: Vec::new(), id_map: None }
}

fn layout(input: &mut Input) -> Layout {
    let steps = (0..input.below(6))
        .map(|_| match input.below(3) {
            0 => Step::Mkdir {
                name: input.word(NAMES),
                mode: if input.flag() { 0o755 } else { input.u32() },
            },
            1 => Step::CopyParent {
                name: input.word(NAMES),
                mode: if input.flag() { CopyMode::Copy } else { CopyMode::CloneOrCopy },
            },
            _ => Step::ChownLikeParent { name: input.word(NAMES) },
        })
        .collect();
    let content = input.flag().then(|| input.word(NAMES));
    Layout { steps, content }
}

fn dir_ref(input: &mut Input, s: &Snapshot) -> DirRef {
    // Mostly the snapshot or a parent; sometimes a foreign one.
    let snapshot = match input.below(4) {
        0 => 1 + input.below(16) as u64,
        1 | 2 if !s.parent_ids.is_empty() => s.parent_ids[input.below(s.parent_ids.len())],
        _ => s.id,
    };
    DirRef { snapshot, name: input.word(NAMES) }
}

fn options(input: &mut Input) -> Vec<String> {
    (0..input.below(4)).map(|_| input.word(OPTIONS)).collect()
}

fn mount(input: &mut Input, s: &Snapshot) -> MountPlan {
    match input.below(3) {
        0 => MountPlan::Bind {
            source: dir_ref(input, s),
            readonly: input.flag(),
            options: options(input),
            id_mapped: false,
        },
        1 => {
            let lower = (0..input.below(5)).map(|_| dir_ref(input, s)).collect();
            let upper = input.flag().then(|| dir_ref(input, s));
            let work = input.flag().then(|| dir_ref(input, s));
            MountPlan::Overlay { lower, upper, work, options: options(input), id_mapped: false }
        }
        _ => MountPlan::Other {
            fs_type: input.word(FS_TYPES),
            source: input.word(SOURCES),
            options: options(input),
        },
    }
}

fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0', ',', ':', '='])
}

fn check_layout(s: &Snapshot, layout: &Layout) {
    let mut created = Vec::new();
    for step in &layout.steps {
        match step {
            Step::Mkdir { name, mode } => {
                assert!(plain_name(name) && *mode <= 0o7777, "accepted {step:?}");
                assert!(!created.contains(name), "accepted a second {name:?}");
                created.push(name.clone());
            }
            Step::CopyParent { name, .. } => {
                assert!(
                    plain_name(name) && !s.parent_ids.is_empty(),
                    "accepted {step:?} for {s:?}"
                );
                assert!(!created.contains(name), "accepted a second {name:?}");
                created.push(name.clone());
            }
            Step::ChownLikeParent { name } => {
                assert!(created.contains(name), "accepted a chown before {name:?} exists")
            }
            Step::ChownToMappedRoot { name } => {
                assert!(created.contains(name), "accepted a chown before {name:?} exists");
                assert!(s.id_map.is_some(), "accepted a mapped-root chown without an id map");
            }
        }
    }
    if let Some(content) = &layout.content {
        assert!(created.contains(content), "accepted content {content:?} that no step creates");
    }
}

/// The snapshot's or a parent's directory, as rendered; which one.
fn owner_of(path: &str, s: &Snapshot) -> u64 {
    let rest = path.strip_prefix(ROOT).and_then(|p| p.strip_prefix("/snapshots/"));
    let rest = rest.unwrap_or_else(|| panic!("path {path:?} outside {ROOT}/snapshots"));
    let (id, name) =
        rest.split_once('/').unwrap_or_else(|| panic!("path {path:?} names no directory"));
    let id: u64 = id.parse().unwrap_or_else(|_| panic!("path {path:?}: {id:?} is not an id"));
    assert!(
        id == s.id || s.parent_ids.contains(&id),
        "path {path:?} names snapshot {id}, not {s:?}'s"
    );
    assert!(plain_name(name), "path {path:?}: {name:?} is not one plain component");
    id
}

fn check_rendered(s: &Snapshot, plans: &[MountPlan]) {
    let read_only = s.kind != Kind::Active;
    for (plan, m) in plans.iter().zip(render_mounts(Path::new(ROOT), plans, s.id_map.as_ref())) {
        match plan {
            MountPlan::Bind { .. } => {
                assert_eq!(m.r#type, "bind", "{m:?}");
                let id = owner_of(&m.source, s);
                let flag = &m.options[0];
                assert!(flag == "ro" || flag == "rw", "{m:?}");
                assert_eq!(m.options[1], "rbind", "{m:?}");
                assert!(
                    flag == "ro" || (!read_only && id == s.id),
                    "writable bind of someone else's dir: {m:?} for {s:?}"
                );
                m.options[2..].iter().for_each(|o| check_free_option(o, &m));
                assert!(
                    !m.options[2..].iter().any(|o| o == "ro" || o == "rw"),
                    "a free ro/rw beside the host's: {m:?}"
                );
            }
            MountPlan::Overlay { lower, upper, .. } if lower.is_empty() => {
                // An extraction plan: the host's upperdir= alone, last, the
                // snapshot's own, on a parentless active snapshot.
                assert_eq!(m.r#type, "overlay", "{m:?}");
                assert!(s.kind == Kind::Active && s.parent_ids.is_empty(), "{m:?} for {s:?}");
                assert!(upper.is_some(), "an overlay with no lower and no upper: {m:?}");
                let (free, host) = m.options.split_at(m.options.len() - 1);
                free.iter().for_each(|o| check_free_option(o, &m));
                let upper = host[0].strip_prefix("upperdir=").unwrap_or_else(|| panic!("{m:?}"));
                assert_eq!(owner_of(upper, s), s.id, "an upperdir of someone else: {m:?}");
            }
            MountPlan::Overlay { upper, .. } => {
                assert_eq!(m.r#type, "overlay", "{m:?}");
                assert!(!(read_only && upper.is_some()), "read-only {s:?} got an upper: {m:?}");
                // The host's own, last: workdir=, upperdir= (with an upper), lowerdir=.
                let own = if upper.is_some() { 3 } else { 1 };
                let (free, host) = m.options.split_at(m.options.len() - own);
                free.iter().for_each(|o| check_free_option(o, &m));
                let lower = host
                    .last()
                    .and_then(|o| o.strip_prefix("lowerdir="))
                    .unwrap_or_else(|| panic!("{m:?}"));
                lower.split(':').for_each(|p| _ = owner_of(p, s));
                if upper.is_some() {
                    let work = host[0].strip_prefix("workdir=").unwrap_or_else(|| panic!("{m:?}"));
                    let upper =
                        host[1].strip_prefix("upperdir=").unwrap_or_else(|| panic!("{m:?}"));
                    assert_eq!(owner_of(work, s), s.id, "a workdir of someone else: {m:?}");
                    assert_eq!(owner_of(upper, s), s.id, "an upperdir of someone else: {m:?}");
                }
            }
            MountPlan::Other { .. } => {
                assert!(
                    OTHER_FS_TYPES.contains(&m.r#type.as_str()),
                    "an other mount of type {:?}: {m:?}",
                    m.r#type
                );
                assert!(!m.source.contains('/'), "an other mount with a path source: {m:?}");
                // The host's `ro`/`rw` first, then only allowlisted tmpfs options.
                let (host, free) = m.options.split_first().unwrap_or_else(|| panic!("{m:?}"));
                assert!(host == "ro" || host == "rw", "{m:?}");
                assert!(!read_only || host == "ro", "read-only {s:?}: {m:?}");
                for o in free {
                    check_free_option(o, &m);
                    let key = o.split('=').next().unwrap_or("");
                    assert!(TMPFS_OPTIONS.contains(&key), "tmpfs option {o:?}: {m:?}");
                }
            }
        }
    }
}

/// An option the policy chose: no path, no path-bearing key, nothing that
/// turns the mount into a bind or a re-mount, one option only.
fn check_free_option(o: &str, m: &wasmsnap_plan::Mount) {
    let key = o.split('=').next().unwrap_or("");
    let key = key.strip_suffix('+').unwrap_or(key);
    assert!(!o.is_empty() && !o.contains([',', '\0', '/']), "free option {o:?}: {m:?}");
    assert!(!matches!(o, "bind" | "rbind" | "remount" | "loop"), "free option {o:?}: {m:?}");
    let path_key =
        (key.ends_with("dir") && key != "redirect_dir") || key == "x-containerd.mkdir.path";
    assert!(!(path_key && o.contains('=')), "path-bearing free option {o:?}: {m:?}");
    let id_map = key.eq_ignore_ascii_case("uidmap") || key.eq_ignore_ascii_case("gidmap");
    assert!(!id_map, "a hand-written id map {o:?}: {m:?}");
}
