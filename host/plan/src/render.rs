//! Render validated mount plans to the mounts a client receives: dir-refs
//! become `<root>/snapshots/<id>/<name>`, options take containerd's order.
//!
//! Runs on every Mounts call: each string is built once, at its final size.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{DirRef, IdMap, MountPlan, SnapshotId};

/// A mount as containerd's `containerd.types.Mount` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub r#type: String,
    pub source: String,
    /// Always empty: the client mounts at its own target.
    pub target: String,
    pub options: Vec<String>,
}

/// A snapshotter name: the directory `<root>/<name>` the daemon keeps that
/// snapshotter's snapshots in (so the rendered paths contain it), and the
/// name containerd's requests carry.
pub fn check_snapshotter_name(name: &str) -> Result<(), &'static str> {
    let valid =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        return Err("a snapshotter name may use only letters, digits, '-', '_' and '.'");
    }
    if name.starts_with('.') {
        return Err(
            "a snapshotter name may not start with '.' (reserved for the host's own directories under the root)",
        );
    }
    Ok(())
}

/// The directory of snapshot `id`: `<root>/snapshots/<id>`.
pub fn snapshot_dir(root: &Path, id: SnapshotId) -> PathBuf {
    let mut dir = root.join("snapshots");
    dir.push(id.to_string());
    dir
}

/// Render `plans` (already validated) under `root`.
///
/// A bind gets `ro` or `rw`, then `rbind`, then its own options (as
/// containerd's overlay and native snapshotters order them). An overlay
/// gets the plan's options, then `workdir=`, `upperdir=` (with an upper)
/// and last `lowerdir=` (nearest first), so containerd's client can find
/// and shorten a long `lowerdir`. An `other` mount gets `ro` (if its
/// options hold `ro`) or `rw` first, as a bind does, then its other options
/// (validation refused any `rw` of the policy's, so nothing later can make
/// a read-only mount writable).
///
/// A bind or overlay that asked for it (`id_mapped`) gets the snapshot's
/// `id_map` first, as `uidmap=` and `gidmap=` (containerd's overlayfs puts
/// them first too); without an id map nothing is added.
///
/// An overlay without lowers (an extraction plan) is rendered as its
/// options and `upperdir=` alone: containerd's applier writes the layer
/// into that directory, converting whiteouts; it is never mounted.
///
/// `root` comes from the daemon's (UTF-8) config; a non-UTF-8 root would be
/// rendered lossily.
pub fn render_mounts(root: &Path, plans: &[MountPlan], id_map: Option<&IdMap>) -> Vec<Mount> {
    let root = root.to_string_lossy();
    // `/` as root would otherwise give `//snapshots`.
    let root = root.trim_end_matches('/');
    plans.iter().map(|plan| render_one(root, plan, id_map)).collect()
}

/// `uidmap=`/`gidmap=` of `id_map`, when the plan asked for them.
fn id_map_options(id_mapped: bool, id_map: Option<&IdMap>, out: &mut Vec<String>) {
    if let (true, Some(map)) = (id_mapped, id_map) {
        out.push(format!("uidmap={}", IdMap::render(&map.uid)));
        out.push(format!("gidmap={}", IdMap::render(&map.gid)));
    }
}

fn render_one(root: &str, plan: &MountPlan, id_map: Option<&IdMap>) -> Mount {
    match plan {
        MountPlan::Bind { source, readonly, options, id_mapped } => {
            let mut rendered = Vec::with_capacity(4 + options.len());
            id_map_options(*id_mapped, id_map, &mut rendered);
            rendered.push(if *readonly { "ro" } else { "rw" }.to_string());
            rendered.push("rbind".to_string());
            rendered.extend(options.iter().cloned());
            Mount {
                r#type: "bind".into(),
                source: dir_path(root, source, ""),
                target: String::new(),
                options: rendered,
            }
        }
        MountPlan::Overlay { lower, upper, work, options, id_mapped } => {
            let mut rendered = Vec::with_capacity(options.len() + 5);
            id_map_options(*id_mapped, id_map, &mut rendered);
            rendered.extend(options.iter().cloned());
            if let Some(work) = work {
                rendered.push(dir_path(root, work, "workdir="));
            }
            if let Some(upper) = upper {
                rendered.push(dir_path(root, upper, "upperdir="));
            }
            if !lower.is_empty() {
                rendered.push(lowerdir(root, lower));
            }
            Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: rendered,
            }
        }
        MountPlan::Other { fs_type, source, options } => {
            let readonly = options.iter().any(|o| o == "ro");
            let mut rendered = Vec::with_capacity(1 + options.len());
            rendered.push(if readonly { "ro" } else { "rw" }.to_string());
            rendered.extend(options.iter().filter(|o| *o != "ro" && *o != "rw").cloned());
            Mount {
                r#type: fs_type.clone(),
                source: source.clone(),
                target: String::new(),
                options: rendered,
            }
        }
    }
}

const SNAPSHOTS: &str = "/snapshots/";

/// Bytes of `<root>/snapshots/<id>/<name>`.
fn path_len(root: &str, dir: &DirRef) -> usize {
    root.len() + SNAPSHOTS.len() + decimal_len(dir.snapshot) + 1 + dir.name.len()
}

fn push_path(out: &mut String, root: &str, dir: &DirRef) {
    out.push_str(root);
    out.push_str(SNAPSHOTS);
    push_decimal(out, dir.snapshot);
    out.push('/');
    out.push_str(&dir.name);
}

/// `prefix` followed by the rendered path of `dir`.
fn dir_path(root: &str, dir: &DirRef, prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + path_len(root, dir));
    out.push_str(prefix);
    push_path(&mut out, root, dir);
    out
}

/// `lowerdir=a:b:c`, nearest first.
fn lowerdir(root: &str, lower: &[DirRef]) -> String {
    const KEY: &str = "lowerdir=";
    let len = KEY.len() + lower.iter().map(|d| path_len(root, d) + 1).sum::<usize>();
    let mut out = String::with_capacity(len);
    out.push_str(KEY);
    for (i, dir) in lower.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        push_path(&mut out, root, dir);
    }
    out
}

/// `n` in decimal, without the formatting machinery: a render writes one
/// per layer, and `write!` was most of a deep chain's render.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(snapshot: u64, name: &str) -> DirRef {
        DirRef { snapshot, name: name.into() }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn mount(t: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: t.into(),
            source: source.into(),
            target: String::new(),
            options: strings(options),
        }
    }

    const ROOT: &str = "/var/lib/wasmsnap";

    #[test]
    fn decimals_are_written_as_display_writes_them() {
        for n in [0, 7, 9, 10, 99, 100, 12345, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
            assert_eq!(decimal_len(n), n.to_string().len());
        }
    }

    #[test]
    fn snapshot_dir_is_under_snapshots() {
        assert_eq!(
            snapshot_dir(Path::new(ROOT), 42),
            PathBuf::from("/var/lib/wasmsnap/snapshots/42")
        );
    }

    #[test]
    fn bind_puts_ro_or_rw_then_rbind_then_its_options() {
        let plans = [
            MountPlan::Bind {
                source: dir(9, "fs"),
                readonly: false,
                options: vec![],
                id_mapped: false,
            },
            MountPlan::Bind {
                source: dir(3, "fs"),
                readonly: true,
                options: strings(&["nosuid"]),
                id_mapped: false,
            },
        ];
        assert_eq!(
            render_mounts(Path::new(ROOT), &plans, None),
            vec![
                mount("bind", "/var/lib/wasmsnap/snapshots/9/fs", &["rw", "rbind"]),
                mount("bind", "/var/lib/wasmsnap/snapshots/3/fs", &["ro", "rbind", "nosuid"]),
            ]
        );
    }

    #[test]
    fn active_overlay_is_options_then_work_upper_lower() {
        let plan = MountPlan::Overlay {
            lower: vec![dir(3, "fs"), dir(2, "fs"), dir(1, "fs")],
            upper: Some(dir(9, "fs")),
            work: Some(dir(9, "work")),
            options: strings(&["index=off", "volatile"]),
            id_mapped: false,
        };
        assert_eq!(
            render_mounts(Path::new(ROOT), &[plan], None),
            vec![mount(
                "overlay",
                "overlay",
                &[
                    "index=off",
                    "volatile",
                    "workdir=/var/lib/wasmsnap/snapshots/9/work",
                    "upperdir=/var/lib/wasmsnap/snapshots/9/fs",
                    "lowerdir=/var/lib/wasmsnap/snapshots/3/fs:/var/lib/wasmsnap/snapshots/2/fs:/var/lib/wasmsnap/snapshots/1/fs",
                ]
            )]
        );
    }

    #[test]
    fn read_only_overlay_has_lowerdir_only() {
        let plan = MountPlan::Overlay {
            lower: vec![dir(10, "fs"), dir(1, "fs")],
            upper: None,
            work: None,
            options: vec![],
            id_mapped: false,
        };
        assert_eq!(
            render_mounts(Path::new("/r/"), &[plan], None),
            vec![mount("overlay", "overlay", &["lowerdir=/r/snapshots/10/fs:/r/snapshots/1/fs"])]
        );
    }

    #[test]
    fn other_gets_ro_or_rw_first_like_a_bind() {
        let other = |options: &[&str]| MountPlan::Other {
            fs_type: "tmpfs".into(),
            source: "tmpfs".into(),
            options: strings(options),
        };
        let plans = [other(&["size=1m"]), other(&["nosuid", "ro", "mode=0755"])];
        assert_eq!(
            render_mounts(Path::new(ROOT), &plans, None),
            vec![
                mount("tmpfs", "tmpfs", &["rw", "size=1m"]),
                mount("tmpfs", "tmpfs", &["ro", "nosuid", "mode=0755"]),
            ]
        );
        // Validation refuses `rw` from a policy; were one to slip through,
        // it still could not follow (and override) the host's `ro`.
        let rendered = render_mounts(Path::new(ROOT), &[other(&["ro", "rw"])], None);
        assert_eq!(rendered, vec![mount("tmpfs", "tmpfs", &["ro"])]);
    }

    #[test]
    fn root_slash_renders_without_double_slash() {
        let plan = MountPlan::Bind {
            source: dir(u64::MAX, "fs"),
            readonly: true,
            options: vec![],
            id_mapped: false,
        };
        assert_eq!(
            render_mounts(Path::new("/"), &[plan], None)[0].source,
            "/snapshots/18446744073709551615/fs"
        );
    }

    #[test]
    fn capacity_is_exact() {
        let d = dir(1234567, "work");
        let rendered = dir_path(ROOT, &d, "workdir=");
        assert_eq!(rendered.capacity(), rendered.len());
        let lower = lowerdir(ROOT, &[dir(0, "fs"), dir(99, "fs")]);
        // One byte spare: the capacity counts a separator per layer.
        assert!(lower.capacity() <= lower.len() + 1, "{} vs {}", lower.capacity(), lower.len());
        for n in [0, 9, 10, 99, 100, u64::MAX] {
            assert_eq!(decimal_len(n), n.to_string().len());
        }
    }

    #[test]
    fn serializes_with_a_type_field() {
        let json = serde_json::to_string(&mount("bind", "/s", &["ro"])).unwrap();
        assert_eq!(json, r#"{"type":"bind","source":"/s","target":"","options":["ro"]}"#);
    }

    #[test]
    fn id_mapped_mounts_carry_the_map_first_and_extraction_is_upperdir_alone() {
        let map = IdMap {
            uid: crate::idmap::parse(crate::idmap::UID_LABEL, "0:100000:65536").unwrap(),
            gid: crate::idmap::parse(crate::idmap::GID_LABEL, "0:200000:65536,65536:1:1").unwrap(),
        };
        let plans = [
            MountPlan::Bind {
                source: dir(9, "fs"),
                readonly: false,
                options: vec![],
                id_mapped: true,
            },
            MountPlan::Overlay {
                lower: vec![],
                upper: Some(dir(9, "fs")),
                work: None,
                options: strings(&["index=off"]),
                id_mapped: false,
            },
        ];
        assert_eq!(
            render_mounts(Path::new("/r"), &plans, Some(&map)),
            vec![
                mount(
                    "bind",
                    "/r/snapshots/9/fs",
                    &["uidmap=0:100000:65536", "gidmap=0:200000:65536,65536:1:1", "rw", "rbind"]
                ),
                mount("overlay", "overlay", &["index=off", "upperdir=/r/snapshots/9/fs"]),
            ]
        );
        // Asked for, but the snapshot has no map: nothing is added.
        assert_eq!(render_mounts(Path::new("/r"), &plans[..1], None)[0].options, ["rw", "rbind"]);
    }
}
