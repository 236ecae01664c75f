//! One test per rule: a plan that breaks exactly that rule is refused, and
//! the error names the rule. Plus the good shapes every built-in policy
//! returns, which must pass.

use super::*;
use crate::model::{CopyMode, Kind, Layout, MountPlan, Snapshot, Step};

/// Snapshot 9 with parents 3, 2, 1 (nearest first).
fn active() -> Snapshot {
    Snapshot { id: 9, kind: Kind::Active, parent_ids: vec![3, 2, 1], labels: vec![], id_map: None }
}

fn view() -> Snapshot {
    Snapshot { kind: Kind::View, ..active() }
}

fn orphan() -> Snapshot {
    Snapshot { parent_ids: vec![], ..active() }
}

fn dir(snapshot: u64, name: &str) -> DirRef {
    DirRef { snapshot, name: name.into() }
}

fn mkdir(name: &str) -> Step {
    Step::Mkdir { name: name.into(), mode: 0o755 }
}

fn layout(steps: Vec<Step>, content: Option<&str>) -> Layout {
    Layout { steps, content: content.map(Into::into) }
}

/// The overlay policy's layout for an active snapshot.
fn good_layout() -> Layout {
    layout(
        vec![
            mkdir("fs"),
            Step::Mkdir { name: "work".into(), mode: 0o711 },
            Step::ChownLikeParent { name: "fs".into() },
        ],
        Some("fs"),
    )
}

fn overlay(
    lower: Vec<DirRef>,
    upper_work: Option<(DirRef, DirRef)>,
    options: &[&str],
) -> MountPlan {
    let (upper, work) = upper_work.unzip();
    MountPlan::Overlay {
        lower,
        upper,
        work,
        options: options.iter().map(|o| o.to_string()).collect(),
        id_mapped: false,
    }
}

/// The overlay policy's plan for an active snapshot.
fn good_overlay(options: &[&str]) -> MountPlan {
    overlay(
        vec![dir(3, "fs"), dir(2, "fs"), dir(1, "fs")],
        Some((dir(9, "fs"), dir(9, "work"))),
        options,
    )
}

fn bind(source: DirRef, readonly: bool, options: &[&str]) -> MountPlan {
    MountPlan::Bind {
        source,
        readonly,
        options: options.iter().map(|o| o.to_string()).collect(),
        id_mapped: false,
    }
}

fn other(fs_type: &str, source: &str, options: &[&str]) -> MountPlan {
    MountPlan::Other {
        fs_type: fs_type.into(),
        source: source.into(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

fn mounts(s: &Snapshot, plan: Vec<MountPlan>) -> Result<(), ValidationError> {
    validate_mounts(s, &plan, &Limits::default())
}

fn lay(s: &Snapshot, l: Layout) -> Result<(), ValidationError> {
    validate_layout(s, &l, &Limits::default())
}

/// Refused with `rule`, and the message names it.
#[track_caller]
fn refused(result: Result<(), ValidationError>, rule: &str) -> ValidationError {
    let err = result.expect_err("the plan must be refused");
    assert_eq!(err.rule(), rule, "wrong rule for: {err}");
    assert!(
        err.to_string().contains(&format!("[{rule}]")),
        "message does not name the rule: {err}"
    );
    err
}

// --- good plans pass -------------------------------------------------------

#[test]
fn the_overlay_policys_plans_pass() {
    lay(&active(), good_layout()).unwrap();
    lay(&orphan(), good_layout()).unwrap();
    lay(
        &view(),
        layout(vec![mkdir("fs"), Step::ChownLikeParent { name: "fs".into() }], Some("fs")),
    )
    .unwrap();
    mounts(
        &active(),
        vec![good_overlay(&["index=off", "userxattr", "volatile", "redirect_dir=on"])],
    )
    .unwrap();
    mounts(&orphan(), vec![bind(dir(9, "fs"), false, &[])]).unwrap();
    mounts(&view(), vec![bind(dir(3, "fs"), true, &["nosuid"])]).unwrap();
    mounts(&view(), vec![overlay(vec![dir(3, "fs"), dir(2, "fs")], None, &["index=off"])]).unwrap();
    mounts(&active(), vec![other("tmpfs", "tmpfs", &["size=64m", "mode=0755"])]).unwrap();
    mounts(&view(), vec![other("tmpfs", "none", &["ro"])]).unwrap();
}

#[test]
fn native_style_copy_parent_passes_and_content_may_be_absent() {
    let copy = Step::CopyParent { name: "fs".into(), mode: CopyMode::CloneOrCopy };
    lay(&active(), layout(vec![copy], Some("fs"))).unwrap();
    lay(&view(), layout(vec![], None)).unwrap();
    // chown-like-parent without a parent does nothing: allowed.
    lay(
        &orphan(),
        layout(vec![mkdir("fs"), Step::ChownLikeParent { name: "fs".into() }], Some("fs")),
    )
    .unwrap();
}

// --- names -----------------------------------------------------------------

#[test]
fn name_empty() {
    refused(mounts(&active(), vec![bind(dir(9, ""), false, &[])]), "name-empty");
}

#[test]
fn name_too_long() {
    refused(lay(&active(), layout(vec![mkdir(&"a".repeat(256))], None)), "name-too-long");
}

#[test]
fn name_dot() {
    let err = refused(mounts(&view(), vec![bind(dir(3, ".."), true, &[])]), "name-dot");
    assert!(err.to_string().starts_with("mount 0 source:"), "{err}");
    refused(lay(&active(), layout(vec![mkdir(".")], None)), "name-dot");
}

#[test]
fn name_slash() {
    let plan = overlay(vec![dir(3, "fs"), dir(2, "../../../etc")], None, &[]);
    let err = refused(mounts(&view(), vec![plan]), "name-slash");
    assert!(err.to_string().contains("mount 0 lower 1"), "{err}");
}

#[test]
fn name_nul() {
    refused(lay(&active(), layout(vec![mkdir("fs\0")], None)), "name-nul");
}

#[test]
fn name_charset() {
    // `:` would split overlay's lowerdir list; `,` would start a new option.
    let err = refused(
        mounts(&view(), vec![overlay(vec![dir(3, "fs:x"), dir(2, "fs")], None, &[])]),
        "name-charset",
    );
    assert!(err.to_string().contains("':'"), "{err}");
    refused(mounts(&orphan(), vec![bind(dir(9, "fs,upperdir=x"), false, &[])]), "name-charset");
}

// --- layouts ---------------------------------------------------------------

#[test]
fn too_many_steps() {
    let steps = (0..33).map(|i| mkdir(&format!("d{i}"))).collect();
    refused(lay(&active(), layout(steps, None)), "too-many-steps");
}

#[test]
fn mkdir_mode() {
    let err = refused(
        lay(&active(), layout(vec![Step::Mkdir { name: "fs".into(), mode: 0o40755 }], None)),
        "mkdir-mode",
    );
    assert!(err.to_string().contains("0o40755"), "{err}");
}

#[test]
fn dir_created_twice() {
    let copy = Step::CopyParent { name: "fs".into(), mode: CopyMode::Copy };
    refused(lay(&active(), layout(vec![mkdir("fs"), copy], None)), "dir-created-twice");
}

#[test]
fn copy_parent_without_parent() {
    let copy = Step::CopyParent { name: "fs".into(), mode: CopyMode::Copy };
    refused(lay(&orphan(), layout(vec![copy], Some("fs"))), "copy-parent-without-parent");
}

#[test]
fn chown_before_create() {
    let steps = vec![Step::ChownLikeParent { name: "fs".into() }, mkdir("fs")];
    refused(lay(&active(), layout(steps, Some("fs"))), "chown-before-create");
}

#[test]
fn content_not_created() {
    let err =
        refused(lay(&active(), layout(vec![mkdir("fs")], Some("rootfs"))), "content-not-created");
    assert!(err.to_string().contains("\"rootfs\""), "{err}");
}

// --- mount plans -----------------------------------------------------------

#[test]
fn no_mounts() {
    refused(mounts(&active(), vec![]), "no-mounts");
}

#[test]
fn too_many_mounts() {
    refused(mounts(&active(), vec![bind(dir(9, "fs"), false, &[]); 17]), "too-many-mounts");
}

#[test]
fn foreign_snapshot() {
    let err = refused(mounts(&view(), vec![bind(dir(4, "fs"), true, &[])]), "foreign-snapshot");
    assert!(err.to_string().contains("snapshot 4"), "{err}");
}

#[test]
fn writable_parent_dir() {
    refused(mounts(&active(), vec![bind(dir(3, "fs"), false, &[])]), "writable-parent-dir");
    let upper_is_parent = overlay(vec![dir(2, "fs")], Some((dir(3, "fs"), dir(9, "work"))), &[]);
    refused(mounts(&active(), vec![upper_is_parent]), "writable-parent-dir");
}

#[test]
fn view_writable() {
    refused(mounts(&view(), vec![bind(dir(9, "fs"), false, &[])]), "view-writable");
    refused(mounts(&view(), vec![good_overlay(&[])]), "view-writable");
    refused(mounts(&view(), vec![other("tmpfs", "tmpfs", &[])]), "view-writable");
    let committed = Snapshot { kind: Kind::Committed, ..active() };
    refused(mounts(&committed, vec![good_overlay(&[])]), "view-writable");
}

#[test]
fn overlay_no_lower() {
    refused(mounts(&active(), vec![overlay(vec![], None, &[])]), "overlay-no-lower");
    refused(mounts(&orphan(), vec![overlay(vec![], None, &[])]), "overlay-no-lower");
}

/// An upper and no lower: containerd's applier writes into `upperdir=`.
fn extraction(work: Option<DirRef>) -> MountPlan {
    MountPlan::Overlay {
        lower: vec![],
        upper: Some(dir(9, "fs")),
        work,
        options: vec!["index=off".into()],
        id_mapped: false,
    }
}

#[test]
fn extraction_plan_only_for_a_parentless_active() {
    mounts(&orphan(), vec![extraction(None)]).unwrap();
    refused(mounts(&active(), vec![extraction(None)]), "extraction-plan");
    let view = Snapshot { kind: Kind::View, ..orphan() };
    refused(mounts(&view, vec![extraction(None)]), "extraction-plan");
    refused(mounts(&orphan(), vec![extraction(Some(dir(9, "work")))]), "extraction-work");
    let foreign = MountPlan::Overlay {
        lower: vec![],
        upper: Some(dir(3, "fs")),
        work: None,
        options: vec![],
        id_mapped: false,
    };
    refused(mounts(&orphan(), vec![foreign]), "foreign-snapshot");
}

#[test]
fn option_idmap() {
    for option in ["uidmap=0:0:4294967294", "gidmap=0:1:1", "UIDMAP=0:0:1"] {
        refused(mounts(&active(), vec![bind(dir(9, "fs"), false, &[option])]), "option-idmap");
        refused(mounts(&active(), vec![good_overlay(&[option])]), "option-idmap");
    }
}

#[test]
fn chown_without_id_map() {
    let steps = vec![mkdir("fs"), Step::ChownToMappedRoot { name: "fs".into() }];
    refused(lay(&active(), layout(steps.clone(), Some("fs"))), "chown-without-id-map");
    let mapped = Snapshot {
        id_map: Some(crate::IdMap {
            uid: vec![crate::IdRange { container: 0, host: 100000, size: 65536 }],
            gid: vec![crate::IdRange { container: 0, host: 100000, size: 65536 }],
        }),
        ..active()
    };
    lay(&mapped, layout(steps, Some("fs"))).unwrap();
    let early = vec![Step::ChownToMappedRoot { name: "fs".into() }, mkdir("fs")];
    refused(lay(&mapped, layout(early, Some("fs"))), "chown-before-create");
}

#[test]
fn too_many_lowers() {
    let parents: Vec<u64> = (1..=501).rev().collect();
    let s = Snapshot {
        id: 502,
        kind: Kind::View,
        parent_ids: parents.clone(),
        labels: vec![],
        id_map: None,
    };
    let lower = parents.iter().map(|&p| dir(p, "fs")).collect();
    refused(mounts(&s, vec![overlay(lower, None, &[])]), "too-many-lowers");
    // 500 is the kernel's limit, and allowed.
    let s = Snapshot {
        id: 501,
        kind: Kind::View,
        parent_ids: parents[1..].to_vec(),
        labels: vec![],
        id_map: None,
    };
    let lower = parents[1..].iter().map(|&p| dir(p, "fs")).collect();
    mounts(&s, vec![overlay(lower, None, &[])]).unwrap();
}

#[test]
fn duplicate_lower() {
    let err = refused(
        mounts(&view(), vec![overlay(vec![dir(3, "fs"), dir(2, "fs"), dir(3, "fs")], None, &[])]),
        "duplicate-lower",
    );
    assert!(err.to_string().contains("mount 0 lower 2"), "{err}");
}

/// Lowers out of chain order take the other path (hash sets): the same
/// rules, each named at the first lower that breaks it.
#[test]
fn lowers_out_of_chain_order() {
    let out_of_order = |lower| mounts(&view(), vec![overlay(lower, None, &[])]);
    out_of_order(vec![dir(1, "fs"), dir(3, "fs"), dir(2, "fs")]).unwrap();
    let err = refused(out_of_order(vec![dir(2, "fs"), dir(4, "fs")]), "foreign-snapshot");
    assert!(err.to_string().contains("mount 0 lower 1"), "{err}");
    // The chain's order up to a point, then a stranger.
    refused(out_of_order(vec![dir(3, "fs"), dir(2, "fs"), dir(7, "fs")]), "foreign-snapshot");
    refused(out_of_order(vec![dir(1, "fs"), dir(3, "f,s")]), "name-charset");
    // The same snapshot twice, under two names, is two lowers.
    out_of_order(vec![dir(2, "fs"), dir(2, "other")]).unwrap();
}

#[test]
fn overlay_single_lower() {
    for s in [view(), active(), Snapshot { kind: Kind::Committed, ..active() }] {
        let err = refused(
            mounts(&s, vec![overlay(vec![dir(3, "fs")], None, &[])]),
            "overlay-single-lower",
        );
        assert!(err.to_string().contains("read-only bind"), "{err}");
    }
    // With an upper, one lower is what the kernel accepts.
    mounts(&active(), vec![overlay(vec![dir(3, "fs")], Some((dir(9, "fs"), dir(9, "work"))), &[])])
        .unwrap();
}

#[test]
fn own_dir_not_created() {
    let plan = vec![good_overlay(&[])];
    validate_plan(&active(), &good_layout(), &plan).unwrap();
    let only_fs = layout(vec![mkdir("fs")], Some("fs"));
    let err = validate_plan(&active(), &only_fs, &plan).unwrap_err();
    assert_eq!(err.rule(), "own-dir-not-created");
    assert!(
        err.to_string().contains("mount 0 work")
            && err.to_string().contains("[own-dir-not-created]"),
        "{err}"
    );
    // A bind of an own directory no step makes; a copy-parent creates one.
    let bind_fs = vec![bind(dir(9, "fs"), false, &[])];
    let err = validate_plan(&active(), &layout(vec![mkdir("other")], None), &bind_fs).unwrap_err();
    assert_eq!(err.rule(), "own-dir-not-created", "{err}");
    let copy = Step::CopyParent { name: "fs".into(), mode: CopyMode::CloneOrCopy };
    validate_plan(&active(), &layout(vec![copy], Some("fs")), &bind_fs).unwrap();
    // Parents' directories were made by their own layouts: not checked here.
    let parent = vec![bind(dir(3, "fs"), true, &[])];
    validate_plan(&view(), &layout(vec![], None), &parent).unwrap();
}

#[test]
fn upper_without_work() {
    let plan = MountPlan::Overlay {
        lower: vec![dir(3, "fs")],
        upper: Some(dir(9, "fs")),
        work: None,
        options: vec![],
        id_mapped: false,
    };
    refused(mounts(&active(), vec![plan]), "upper-without-work");
}

#[test]
fn work_without_upper() {
    let plan = MountPlan::Overlay {
        lower: vec![dir(3, "fs")],
        upper: None,
        work: Some(dir(9, "work")),
        options: vec![],
        id_mapped: false,
    };
    refused(mounts(&active(), vec![plan]), "work-without-upper");
}

#[test]
fn overlay_dir_reused() {
    let same = overlay(vec![dir(3, "fs")], Some((dir(9, "fs"), dir(9, "fs"))), &[]);
    refused(mounts(&active(), vec![same]), "overlay-dir-reused");
    let upper_in_lower =
        overlay(vec![dir(9, "fs"), dir(3, "fs")], Some((dir(9, "fs"), dir(9, "work"))), &[]);
    refused(mounts(&active(), vec![upper_in_lower]), "overlay-dir-reused");
}

// --- free options ----------------------------------------------------------

#[test]
fn too_many_options() {
    let options: Vec<String> = (0..65).map(|i| format!("o{i}")).collect();
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    refused(mounts(&active(), vec![good_overlay(&options)]), "too-many-options");
}

#[test]
fn option_empty() {
    refused(mounts(&active(), vec![good_overlay(&["index=off", ""])]), "option-empty");
}

#[test]
fn option_too_long() {
    let long = format!("x={}", "a".repeat(1023));
    refused(mounts(&active(), vec![good_overlay(&[&long])]), "option-too-long");
}

#[test]
fn option_comma() {
    let err =
        refused(mounts(&active(), vec![good_overlay(&["index=off,lowerdir=x"])]), "option-comma");
    assert!(err.to_string().contains("mount 0 option 0"), "{err}");
}

#[test]
fn option_nul() {
    refused(mounts(&active(), vec![good_overlay(&["volatile\0"])]), "option-nul");
}

#[test]
fn option_path_key() {
    // Every path-bearing key of overlay, with or without a path in it.
    for option in [
        "lowerdir=x",
        "upperdir=..",
        "workdir=w",
        "datadir=d",
        "lowerdir+=x",
        "datadir+=d",
        "LowerDir=x",
        "lowerdir",
    ] {
        refused(mounts(&active(), vec![good_overlay(&[option])]), "option-path-key");
    }
    refused(mounts(&orphan(), vec![bind(dir(9, "fs"), false, &["upperdir=x"])]), "option-path-key");
    refused(mounts(&active(), vec![other("tmpfs", "t", &["workdir=x"])]), "option-path-key");
    refused(
        mounts(&active(), vec![other("tmpfs", "t", &["x-containerd.mkdir.path=x"])]),
        "option-path-key",
    );
}

/// Found by the plan_validator fuzzer: a key ending in a multi-byte
/// character made the `...dir` check slice inside it (a panic).
#[test]
fn option_keys_ending_in_multibyte_characters() {
    for option in ["xé", "é=1", "a\u{1F600}", "dié", "\u{FFFD}\u{FFFD}=x"] {
        mounts(&active(), vec![good_overlay(&[option])]).unwrap();
    }
    refused(mounts(&active(), vec![good_overlay(&["éDIR=x"])]), "option-path-key");
}

#[test]
fn option_path_value() {
    refused(mounts(&active(), vec![good_overlay(&["xino=/etc"])]), "option-path-value");
    refused(mounts(&orphan(), vec![bind(dir(9, "fs"), false, &["/etc"])]), "option-path-value");
}

#[test]
fn option_reserved() {
    // A later `rw` would win over the host's `ro`.
    refused(mounts(&view(), vec![bind(dir(3, "fs"), true, &["rw"])]), "option-reserved");
    // `bind` would make containerd bind the source "overlay" as a path.
    refused(mounts(&active(), vec![good_overlay(&["bind"])]), "option-reserved");
    refused(mounts(&active(), vec![other("tmpfs", "t", &["loop"])]), "option-reserved");
    refused(mounts(&active(), vec![other("tmpfs", "t", &["remount"])]), "option-reserved");
}

// --- other mounts ----------------------------------------------------------

#[test]
fn other_type() {
    // Paths, and the filesystems that show the host's namespaces (containerd
    // mounts a plan as root in them during unpack and diff).
    let host_views = ["proc", "sysfs", "cgroup", "cgroup2", "mqueue", "devpts", "ramfs"];
    for fs_type in ["bind", "rbind", "overlay", "ext4", "xfs", "fuse.sshfs", "", "TMPFS"]
        .into_iter()
        .chain(host_views)
    {
        let err = refused(mounts(&active(), vec![other(fs_type, "x", &[])]), "other-type");
        assert!(err.to_string().contains("only tmpfs"), "names the allowed type: {err}");
    }
}

#[test]
fn other_type_is_echoed_escaped_and_capped() {
    let hostile = format!("\u{1b}[2J\nlevel=ERROR forged{}", "x".repeat(100_000));
    let err = refused(mounts(&active(), vec![other(&hostile, "x", &[])]), "other-type");
    let text = err.to_string();
    assert!(text.len() < 1400, "{} bytes", text.len());
    assert!(!text.contains('\u{1b}') && !text.contains('\n'), "{text}");
    assert!(text.contains(&format!("(truncated, {} bytes)", hostile.len())), "{text}");
}

#[test]
fn other_option() {
    for option in ["suid", "dev", "exec", "huge=always", "mpol=bind", "NOSUID", "Size=1m", "sync"] {
        refused(mounts(&active(), vec![other("tmpfs", "t", &[option])]), "other-option");
    }
    // The allowlist, each as it is meant to be given.
    let good = ["size=64m", "size=50%", "nr_inodes=1k", "mode=1777", "uid=0", "gid=0"];
    let flags = ["noexec", "nosuid", "nodev"];
    let all: Vec<&str> = good.iter().chain(&flags).copied().collect();
    mounts(&active(), vec![other("tmpfs", "t", &all)]).unwrap();
    mounts(&view(), vec![other("tmpfs", "t", &[&["ro"], &all[..]].concat())]).unwrap();
}

#[test]
fn other_option_value() {
    for option in ["size=", "mode", "uid=0 0", "gid=-1", "noexec=1", "size=1m\u{1b}"] {
        refused(mounts(&active(), vec![other("tmpfs", "t", &[option])]), "other-option-value");
    }
}

#[test]
fn other_rw_is_the_hosts_to_render() {
    // `ro` then `rw`: mount(8) and the kernel take the last, so this view
    // would be writable; the host renders `ro`/`rw` itself.
    refused(mounts(&view(), vec![other("tmpfs", "t", &["ro", "rw"])]), "option-reserved");
    refused(mounts(&active(), vec![other("tmpfs", "t", &["rw"])]), "option-reserved");
}

#[test]
fn other_source_path() {
    refused(mounts(&active(), vec![other("tmpfs", "/etc", &[])]), "other-source-path");
}

#[test]
fn other_source_nul() {
    refused(mounts(&active(), vec![other("tmpfs", "t\0", &[])]), "other-source-nul");
}

#[test]
fn other_source_too_long() {
    refused(
        mounts(&active(), vec![other("tmpfs", &"t".repeat(256), &[])]),
        "other-source-too-long",
    );
}
