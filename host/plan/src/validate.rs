//! The host's rules for plans. Every layout and mount plan a policy returns
//! passes through here before the host touches the disk or answers a
//! client; anything that breaks a rule is refused whole (fail closed).
//!
//! What the rules protect:
//! - **paths stay inside the snapshot tree**: names are single, plain path
//!   components; a dir-ref names the snapshot itself or one of its parents;
//!   no free option, `other` source or overlay list can carry a path;
//! - **committed layers stay immutable**: only the snapshot's own
//!   directories may be mounted writable, and a view (or a committed
//!   snapshot) mounts read-only: a `bind` is `readonly`, an `overlay` has no
//!   `upper`, an `other` mount carries `ro`. containerd's testsuite checks
//!   that a mounted view cannot be written;
//! - **the host's own options stay the host's**: `ro`/`rw`/`rbind` of a
//!   bind are rendered from `readonly`, and `ro`/`rw` of an `other` mount
//!   from its `ro` flag (a policy's `rw` is refused, so `["ro","rw"]` can
//!   never end writable); `bind`, `rbind`, `remount` and `loop` would turn
//!   any mount into a mount of a (relative) path, so no free option may
//!   carry them;
//! - **no host namespace is exposed**: containerd mounts a plan as root in
//!   the host's namespaces (during unpack and diff), so an `other` mount is
//!   only ever a `tmpfs`, with options from a short allowlist (proc, sysfs,
//!   cgroup, devpts or mqueue would hand the host's to whoever reads it);
//! - **sizes are bounded** ([`Limits`]), so a hostile plan cannot make the
//!   host allocate or render without limit.
//!
//! Validation runs on the Prepare and Mounts hot paths, so it is linear in
//! the plan's size, and allocates nothing on success for overlays whose
//! lowers are the parents in chain order (every built-in policy's); other
//! lower lists are checked with one hash set each.

use std::collections::HashSet;
use std::fmt;

use crate::model::{DirRef, Kind, Layout, MountPlan, Snapshot, SnapshotId, Step};

/// Bounds on plan sizes, and the `other` filesystem types allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Mounts in one plan.
    pub max_mounts: usize,
    /// Steps in one layout.
    pub max_steps: usize,
    /// Lower layers of one overlay (the kernel stacks at most 500).
    pub max_lower: usize,
    /// Free options of one mount.
    pub max_options: usize,
    /// Bytes of one free option.
    pub max_option_len: usize,
    /// Bytes of one directory name (`NAME_MAX` is 255).
    pub max_name_len: usize,
    /// Bytes of an `other` mount's source.
    pub max_source_len: usize,
    /// Filesystem types an `other` mount may use: only types whose source
    /// is a name, never a path or a device, and that expose nothing of the
    /// host.
    pub other_fs_types: &'static [&'static str],
}

/// The one filesystem an `other` mount may be: it mounts no host path and
/// shows nothing of the host's namespaces.
pub const OTHER_FS_TYPES: &[&str] = &["tmpfs"];

/// tmpfs options a policy may give (`key=value` for the first five, flags
/// for the rest), besides `ro`. Anything else is refused: `huge=`, `mpol=`,
/// `suid`, `dev`, `exec` and the like have no use in a snapshot's mount.
pub const TMPFS_OPTIONS: &[&str] =
    &["size", "nr_inodes", "mode", "uid", "gid", "noexec", "nosuid", "nodev"];
/// Which of [`TMPFS_OPTIONS`] take a value.
const TMPFS_VALUED: &[&str] = &["size", "nr_inodes", "mode", "uid", "gid"];

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_mounts: 16,
            max_steps: 32,
            max_lower: 500,
            max_options: 64,
            max_option_len: 1024,
            max_name_len: 255,
            max_source_len: 255,
            other_fs_types: OTHER_FS_TYPES,
        }
    }
}

/// Where in a plan a rule was broken. Printed as e.g. `mount 0 lower 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The layout as a whole.
    Layout,
    /// Layout step `n`.
    Step(usize),
    /// The layout's `content`.
    Content,
    /// The mount plan as a whole.
    Plan,
    /// Mount `n`.
    Mount(usize),
    /// Mount `n`'s bind source.
    Source(usize),
    /// Mount `n`'s overlay lower layer `i`.
    Lower(usize, usize),
    /// Mount `n`'s overlay upper directory.
    Upper(usize),
    /// Mount `n`'s overlay work directory.
    Work(usize),
    /// Mount `n`'s free option `i`.
    Option(usize, usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Place::Layout => write!(f, "layout"),
            Place::Step(n) => write!(f, "layout step {n}"),
            Place::Content => write!(f, "layout content"),
            Place::Plan => write!(f, "mount plan"),
            Place::Mount(n) => write!(f, "mount {n}"),
            Place::Source(n) => write!(f, "mount {n} source"),
            Place::Lower(n, i) => write!(f, "mount {n} lower {i}"),
            Place::Upper(n) => write!(f, "mount {n} upper"),
            Place::Work(n) => write!(f, "mount {n} work"),
            Place::Option(n, i) => write!(f, "mount {n} option {i}"),
        }
    }
}

/// A broken rule: where, which rule (its id in brackets) and the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    // --- names -----------------------------------------------------------
    #[error("{at}: directory name is empty [name-empty]")]
    NameEmpty { at: Place },
    #[error("{at}: directory name of {len} bytes exceeds {max} [name-too-long]")]
    NameTooLong { at: Place, len: usize, max: usize },
    #[error("{at}: directory name {name:?} is `.` or `..` [name-dot]")]
    NameDot { at: Place, name: String },
    #[error(
        "{at}: directory name {name:?} contains `/`: it must be one path component [name-slash]"
    )]
    NameSlash { at: Place, name: String },
    #[error("{at}: directory name {name:?} contains NUL [name-nul]")]
    NameNul { at: Place, name: String },
    #[error(
        "{at}: directory name {name:?} contains {ch:?}: names use only ASCII letters, digits, `.`, `_` and `-` [name-charset]"
    )]
    NameCharset { at: Place, name: String, ch: char },

    // --- layouts ---------------------------------------------------------
    #[error("{at}: {count} steps exceed {max} [too-many-steps]")]
    TooManySteps { at: Place, count: usize, max: usize },
    #[error("{at}: mkdir mode {mode:#o} has bits beyond the permission bits 0o7777 [mkdir-mode]")]
    MkdirMode { at: Place, mode: u32 },
    #[error("{at}: directory {name:?} is created twice [dir-created-twice]")]
    DirCreatedTwice { at: Place, name: String },
    #[error(
        "{at}: copy-parent into {name:?}, but snapshot {id} has no parent [copy-parent-without-parent]"
    )]
    CopyParentWithoutParent { at: Place, name: String, id: SnapshotId },
    #[error(
        "{at}: chown-like-parent of {name:?}, which no earlier step created [chown-before-create]"
    )]
    ChownBeforeCreate { at: Place, name: String },
    #[error("{at}: content {name:?} is not a directory any step creates [content-not-created]")]
    ContentNotCreated { at: Place, name: String },
    #[error(
        "{at}: chown-to-mapped-root of {name:?}, but snapshot {id} has no id map (labels containerd.io/snapshot/uidmapping and gidmapping) [chown-without-id-map]"
    )]
    ChownWithoutIdMap { at: Place, name: String, id: SnapshotId },

    // --- mount plans -----------------------------------------------------
    #[error("{at}: a plan needs at least one mount [no-mounts]")]
    NoMounts { at: Place },
    #[error("{at}: {count} mounts exceed {max} [too-many-mounts]")]
    TooManyMounts { at: Place, count: usize, max: usize },
    #[error(
        "{at}: references snapshot {referenced}, which is neither snapshot {id} nor one of its parents [foreign-snapshot]"
    )]
    ForeignSnapshot { at: Place, referenced: SnapshotId, id: SnapshotId },
    #[error(
        "{at}: would mount {name:?} of snapshot {referenced} writable; only snapshot {id}'s own directories may be written [writable-parent-dir]"
    )]
    WritableParentDir { at: Place, referenced: SnapshotId, name: String, id: SnapshotId },
    #[error(
        "{at}: a {kind:?} snapshot must mount read-only, but this mount is {what} [view-writable]"
    )]
    ViewWritable { at: Place, kind: Kind, what: &'static str },
    #[error("{at}: an overlay needs at least one lower layer [overlay-no-lower]")]
    OverlayNoLower { at: Place },
    #[error(
        "{at}: a read-only overlay (no upper) of a single lower layer is refused by the kernel (\"at least 2 lowerdir are needed while upperdir nonexistent\"): mount that layer as a read-only bind [overlay-single-lower]"
    )]
    OverlaySingleLower { at: Place },
    #[error(
        "{at}: an overlay with an upper and no lower is an extraction plan, for an active snapshot without parents; snapshot {id} is {kind:?} with {parents} parents [extraction-plan]"
    )]
    ExtractionPlan { at: Place, id: SnapshotId, kind: Kind, parents: usize },
    #[error(
        "{at}: an extraction plan (upper, no lower) is rendered as `upperdir=` alone and takes no work directory [extraction-work]"
    )]
    ExtractionWork { at: Place },
    #[error("{at}: {count} lower layers exceed {max} [too-many-lowers]")]
    TooManyLowers { at: Place, count: usize, max: usize },
    #[error(
        "{at}: lower layer {name:?} of snapshot {referenced} is listed twice [duplicate-lower]"
    )]
    DuplicateLower { at: Place, referenced: SnapshotId, name: String },
    #[error("{at}: an overlay with an upper needs a work directory [upper-without-work]")]
    UpperWithoutWork { at: Place },
    #[error("{at}: a work directory without an upper is meaningless [work-without-upper]")]
    WorkWithoutUpper { at: Place },
    #[error(
        "{at}: directory {name:?} of snapshot {referenced} is used twice among upper, work and lower [overlay-dir-reused]"
    )]
    OverlayDirReused { at: Place, referenced: SnapshotId, name: String },
    #[error(
        "{at}: mounts directory {name:?} of snapshot {id} itself, which its layout does not create [own-dir-not-created]"
    )]
    OwnDirNotCreated { at: Place, name: String, id: SnapshotId },

    // --- free options ----------------------------------------------------
    #[error("{at}: {count} options exceed {max} [too-many-options]")]
    TooManyOptions { at: Place, count: usize, max: usize },
    #[error("{at}: option is empty [option-empty]")]
    OptionEmpty { at: Place },
    #[error("{at}: option of {len} bytes exceeds {max} [option-too-long]")]
    OptionTooLong { at: Place, len: usize, max: usize },
    #[error("{at}: option {option:?} contains `,`: give one option per list item [option-comma]")]
    OptionComma { at: Place, option: String },
    #[error("{at}: option {option:?} contains NUL [option-nul]")]
    OptionNul { at: Place, option: String },
    #[error(
        "{at}: option {option:?} carries a path-bearing key; the host renders every path [option-path-key]"
    )]
    OptionPathKey { at: Place, option: String },
    #[error(
        "{at}: option {option:?} carries a path (`/`); the host renders every path [option-path-value]"
    )]
    OptionPathValue { at: Place, option: String },
    #[error("{at}: option {option:?} is reserved to the host [option-reserved]")]
    OptionReserved { at: Place, option: String },
    #[error(
        "{at}: option {option:?} sets an id map by hand; ask for the snapshot's with `id-mapped` and the host renders it [option-idmap]"
    )]
    OptionIdMap { at: Place, option: String },

    // --- other mounts ----------------------------------------------------
    #[error(
        "{at}: filesystem type \"{fs_type}\" is not allowed for an other mount (only {allowed}) [other-type]"
    )]
    /// `fs_type` is the policy's, escaped and capped (`crate::untrusted`).
    OtherType { at: Place, fs_type: String, allowed: String },
    #[error(
        "{at}: tmpfs option {option:?} is not allowed (only ro, {}) [other-option]",
        TMPFS_OPTIONS.join(", ")
    )]
    OtherOption { at: Place, option: String },
    #[error(
        "{at}: tmpfs option {option:?} needs a value of digits and letters (e.g. size=64m, mode=0755) [other-option-value]"
    )]
    OtherOptionValue { at: Place, option: String },
    #[error(
        "{at}: source {value:?} contains `/`: an other mount names no path [other-source-path]"
    )]
    OtherSourcePath { at: Place, value: String },
    #[error("{at}: source {value:?} contains NUL [other-source-nul]")]
    OtherSourceNul { at: Place, value: String },
    #[error("{at}: source of {len} bytes exceeds {max} [other-source-too-long]")]
    OtherSourceTooLong { at: Place, len: usize, max: usize },
}

impl ValidationError {
    /// The id of the broken rule, e.g. `name-dot`: stable, for tests and logs.
    pub fn rule(&self) -> &'static str {
        use ValidationError::*;
        match self {
            NameEmpty { .. } => "name-empty",
            NameTooLong { .. } => "name-too-long",
            NameDot { .. } => "name-dot",
            NameSlash { .. } => "name-slash",
            NameNul { .. } => "name-nul",
            NameCharset { .. } => "name-charset",
            TooManySteps { .. } => "too-many-steps",
            MkdirMode { .. } => "mkdir-mode",
            DirCreatedTwice { .. } => "dir-created-twice",
            CopyParentWithoutParent { .. } => "copy-parent-without-parent",
            ChownBeforeCreate { .. } => "chown-before-create",
            ContentNotCreated { .. } => "content-not-created",
            ChownWithoutIdMap { .. } => "chown-without-id-map",
            NoMounts { .. } => "no-mounts",
            TooManyMounts { .. } => "too-many-mounts",
            ForeignSnapshot { .. } => "foreign-snapshot",
            WritableParentDir { .. } => "writable-parent-dir",
            ViewWritable { .. } => "view-writable",
            OverlayNoLower { .. } => "overlay-no-lower",
            OverlaySingleLower { .. } => "overlay-single-lower",
            ExtractionPlan { .. } => "extraction-plan",
            ExtractionWork { .. } => "extraction-work",
            TooManyLowers { .. } => "too-many-lowers",
            DuplicateLower { .. } => "duplicate-lower",
            UpperWithoutWork { .. } => "upper-without-work",
            WorkWithoutUpper { .. } => "work-without-upper",
            OverlayDirReused { .. } => "overlay-dir-reused",
            OwnDirNotCreated { .. } => "own-dir-not-created",
            TooManyOptions { .. } => "too-many-options",
            OptionEmpty { .. } => "option-empty",
            OptionTooLong { .. } => "option-too-long",
            OptionComma { .. } => "option-comma",
            OptionNul { .. } => "option-nul",
            OptionPathKey { .. } => "option-path-key",
            OptionPathValue { .. } => "option-path-value",
            OptionReserved { .. } => "option-reserved",
            OptionIdMap { .. } => "option-idmap",
            OtherType { .. } => "other-type",
            OtherOption { .. } => "other-option",
            OtherOptionValue { .. } => "other-option-value",
            OtherSourcePath { .. } => "other-source-path",
            OtherSourceNul { .. } => "other-source-nul",
            OtherSourceTooLong { .. } => "other-source-too-long",
        }
    }
}

type Checked = Result<(), ValidationError>;

/// Check a layout the policy returned for snapshot `s`.
pub fn validate_layout(s: &Snapshot, l: &Layout, limits: &Limits) -> Checked {
    if l.steps.len() > limits.max_steps {
        return Err(ValidationError::TooManySteps {
            at: Place::Layout,
            count: l.steps.len(),
            max: limits.max_steps,
        });
    }
    for (n, step) in l.steps.iter().enumerate() {
        let at = Place::Step(n);
        // Steps before this one: a name is created once, chowned after.
        let earlier = &l.steps[..n];
        match step {
            Step::Mkdir { name, mode } => {
                check_name(at, name, limits)?;
                if *mode > 0o7777 {
                    return Err(ValidationError::MkdirMode { at, mode: *mode });
                }
                check_created_once(at, name, earlier)?;
            }
            Step::CopyParent { name, .. } => {
                check_name(at, name, limits)?;
                if s.parent_ids.is_empty() {
                    return Err(ValidationError::CopyParentWithoutParent {
                        at,
                        name: name.clone(),
                        id: s.id,
                    });
                }
                check_created_once(at, name, earlier)?;
            }
            Step::ChownLikeParent { name } => {
                check_name(at, name, limits)?;
                if !earlier.iter().any(|e| created_name(e) == Some(name)) {
                    return Err(ValidationError::ChownBeforeCreate { at, name: name.clone() });
                }
            }
            Step::ChownToMappedRoot { name } => {
                check_name(at, name, limits)?;
                if !earlier.iter().any(|e| created_name(e) == Some(name)) {
                    return Err(ValidationError::ChownBeforeCreate { at, name: name.clone() });
                }
                if s.id_map.is_none() {
                    return Err(ValidationError::ChownWithoutIdMap {
                        at,
                        name: name.clone(),
                        id: s.id,
                    });
                }
            }
        }
    }
    if let Some(content) = &l.content {
        check_name(Place::Content, content, limits)?;
        if !l.steps.iter().any(|e| created_name(e) == Some(content)) {
            return Err(ValidationError::ContentNotCreated {
                at: Place::Content,
                name: content.clone(),
            });
        }
    }
    Ok(())
}

/// The directory a step creates, if it creates one.
fn created_name(step: &Step) -> Option<&String> {
    match step {
        Step::Mkdir { name, .. } | Step::CopyParent { name, .. } => Some(name),
        Step::ChownLikeParent { .. } | Step::ChownToMappedRoot { .. } => None,
    }
}

fn check_created_once(at: Place, name: &String, earlier: &[Step]) -> Checked {
    if earlier.iter().any(|e| created_name(e) == Some(name)) {
        return Err(ValidationError::DirCreatedTwice { at, name: name.clone() });
    }
    Ok(())
}

/// Why a list of parent ids is not a chain of snapshot `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAChain {
    /// The snapshot is among its own parents.
    OwnId(SnapshotId),
    /// A parent comes twice (the first repeated).
    Repeated(SnapshotId),
}

impl fmt::Display for NotAChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAChain::OwnId(id) => write!(f, "id {id} is also one of the parents"),
            NotAChain::Repeated(id) => write!(f, "parent id {id} is listed twice"),
        }
    }
}

/// Whether `parent_ids` can be the chain of snapshot `id`: distinct and
/// without `id`, as the metastore's walk gives them. [`validate_mounts`]
/// relies on it; callers that take parents from a person (case files,
/// `policy plan`) check with this.
pub fn check_chain(id: SnapshotId, parent_ids: &[SnapshotId]) -> Result<(), NotAChain> {
    if parent_ids.contains(&id) {
        return Err(NotAChain::OwnId(id));
    }
    let mut seen = HashSet::with_capacity(parent_ids.len());
    match parent_ids.iter().find(|p| !seen.insert(**p)) {
        Some(&dup) => Err(NotAChain::Repeated(dup)),
        None => Ok(()),
    }
}

/// Check a mount plan the policy returned for snapshot `s`, whose
/// `parent_ids` are a chain ([`check_chain`]).
pub fn validate_mounts(s: &Snapshot, mounts: &[MountPlan], limits: &Limits) -> Checked {
    if mounts.is_empty() {
        return Err(ValidationError::NoMounts { at: Place::Plan });
    }
    if mounts.len() > limits.max_mounts {
        return Err(ValidationError::TooManyMounts {
            at: Place::Plan,
            count: mounts.len(),
            max: limits.max_mounts,
        });
    }
    let read_only = matches!(s.kind, Kind::View | Kind::Committed);
    for (n, mount) in mounts.iter().enumerate() {
        match mount {
            MountPlan::Bind { source, readonly, options, .. } => {
                check_dir_ref(Place::Source(n), s, source, limits)?;
                if !readonly {
                    if read_only {
                        return Err(ValidationError::ViewWritable {
                            at: Place::Mount(n),
                            kind: s.kind,
                            what: "a read-write bind",
                        });
                    }
                    check_writable(Place::Source(n), s, source)?;
                }
                check_options(n, options, OptionSet::Bind, limits)?;
            }
            MountPlan::Overlay { lower, upper, work, options, .. } => {
                check_overlay(n, s, lower, upper.as_ref(), work.as_ref(), limits)?;
                if read_only && upper.is_some() {
                    return Err(ValidationError::ViewWritable {
                        at: Place::Mount(n),
                        kind: s.kind,
                        what: "an overlay with an upper",
                    });
                }
                check_options(n, options, OptionSet::Overlay, limits)?;
            }
            MountPlan::Other { fs_type, source, options } => {
                check_other(n, fs_type, source, limits)?;
                check_options(n, options, OptionSet::Other, limits)?;
                check_tmpfs_options(n, options)?;
                if read_only && !options.iter().any(|o| o == "ro") {
                    return Err(ValidationError::ViewWritable {
                        at: Place::Mount(n),
                        kind: s.kind,
                        what: "an other mount without `ro`",
                    });
                }
            }
        }
    }
    Ok(())
}

fn check_overlay(
    n: usize,
    s: &Snapshot,
    lower: &[DirRef],
    upper: Option<&DirRef>,
    work: Option<&DirRef>,
    limits: &Limits,
) -> Checked {
    if lower.is_empty() {
        let Some(upper) = upper else {
            return Err(ValidationError::OverlayNoLower { at: Place::Mount(n) });
        };
        // containerd's applier writes a layer straight into `upperdir=`
        // of a lone overlay mount; only a parentless extraction may ask.
        if s.kind != Kind::Active || !s.parent_ids.is_empty() {
            return Err(ValidationError::ExtractionPlan {
                at: Place::Mount(n),
                id: s.id,
                kind: s.kind,
                parents: s.parent_ids.len(),
            });
        }
        if work.is_some() {
            return Err(ValidationError::ExtractionWork { at: Place::Work(n) });
        }
        check_dir_ref(Place::Upper(n), s, upper, limits)?;
        return check_writable(Place::Upper(n), s, upper);
    }
    if lower.len() > limits.max_lower {
        return Err(ValidationError::TooManyLowers {
            at: Place::Mount(n),
            count: lower.len(),
            max: limits.max_lower,
        });
    }
    // The usual plan: the parents, nearest first. Those are parents, and
    // distinct (a chain, see `check_chain`), so only their names need a look.
    let in_chain_order = lower.len() <= s.parent_ids.len()
        && lower.iter().zip(&s.parent_ids).all(|(dir, parent)| dir.snapshot == *parent);
    if in_chain_order {
        for (i, dir) in lower.iter().enumerate() {
            check_name(Place::Lower(n, i), &dir.name, limits)?;
        }
    } else {
        check_any_lowers(n, s, lower, limits)?;
    }
    match (upper, work) {
        // Scoped to overlays without an upper: with an upper, one lower is fine.
        (None, None) if lower.len() == 1 => {
            Err(ValidationError::OverlaySingleLower { at: Place::Mount(n) })
        }
        (Some(_), None) => Err(ValidationError::UpperWithoutWork { at: Place::Mount(n) }),
        (None, Some(_)) => Err(ValidationError::WorkWithoutUpper { at: Place::Mount(n) }),
        (None, None) => Ok(()),
        (Some(upper), Some(work)) => {
            check_dir_ref(Place::Upper(n), s, upper, limits)?;
            check_writable(Place::Upper(n), s, upper)?;
            check_dir_ref(Place::Work(n), s, work, limits)?;
            check_writable(Place::Work(n), s, work)?;
            for (at, dir) in [(Place::Upper(n), upper), (Place::Work(n), work)] {
                let reused = lower.contains(dir) || (at == Place::Work(n) && work == upper);
                if reused {
                    return Err(ValidationError::OverlayDirReused {
                        at,
                        referenced: dir.snapshot,
                        name: dir.name.clone(),
                    });
                }
            }
            Ok(())
        }
    }
}

/// Lowers in any order: each a dir-ref of the snapshot or a parent, none
/// twice; hash sets keep it linear (up to `max_lower` lowers on a chain of
/// up to a thousand parents).
fn check_any_lowers(n: usize, s: &Snapshot, lower: &[DirRef], limits: &Limits) -> Checked {
    let parents: HashSet<SnapshotId> = s.parent_ids.iter().copied().collect();
    let mut seen: HashSet<(SnapshotId, &str)> = HashSet::with_capacity(lower.len());
    for (i, dir) in lower.iter().enumerate() {
        let at = Place::Lower(n, i);
        check_name(at, &dir.name, limits)?;
        if dir.snapshot != s.id && !parents.contains(&dir.snapshot) {
            return Err(ValidationError::ForeignSnapshot {
                at,
                referenced: dir.snapshot,
                id: s.id,
            });
        }
        if !seen.insert((dir.snapshot, dir.name.as_str())) {
            return Err(ValidationError::DuplicateLower {
                at,
                referenced: dir.snapshot,
                name: dir.name.clone(),
            });
        }
    }
    Ok(())
}

/// Check a snapshot's layout and mounts together, both valid on their own:
/// every directory of the snapshot itself that a mount names must be one
/// its layout creates, or the mount fails later with ENOENT. Run where both
/// are known (Prepare, View, the harness); Mounts of an existing snapshot
/// has only the mounts.
pub fn validate_plan(s: &Snapshot, layout: &Layout, mounts: &[MountPlan]) -> Checked {
    for (n, mount) in mounts.iter().enumerate() {
        let own = |at: Place, dir: &DirRef| -> Checked {
            if dir.snapshot != s.id {
                return Ok(());
            }
            let created = layout.steps.iter().any(|e| created_name(e) == Some(&dir.name));
            if !created {
                return Err(ValidationError::OwnDirNotCreated {
                    at,
                    name: dir.name.clone(),
                    id: s.id,
                });
            }
            Ok(())
        };
        match mount {
            MountPlan::Bind { source, .. } => own(Place::Source(n), source)?,
            MountPlan::Overlay { lower, upper, work, .. } => {
                for (i, dir) in lower.iter().enumerate() {
                    own(Place::Lower(n, i), dir)?;
                }
                if let Some(upper) = upper {
                    own(Place::Upper(n), upper)?;
                }
                if let Some(work) = work {
                    own(Place::Work(n), work)?;
                }
            }
            MountPlan::Other { .. } => {}
        }
    }
    Ok(())
}

fn check_dir_ref(at: Place, s: &Snapshot, dir: &DirRef, limits: &Limits) -> Checked {
    check_name(at, &dir.name, limits)?;
    if dir.snapshot != s.id && !s.parent_ids.contains(&dir.snapshot) {
        return Err(ValidationError::ForeignSnapshot { at, referenced: dir.snapshot, id: s.id });
    }
    Ok(())
}

/// A directory mounted writable must be the snapshot's own: parents are
/// committed layers that other snapshots share.
fn check_writable(at: Place, s: &Snapshot, dir: &DirRef) -> Checked {
    if dir.snapshot != s.id {
        return Err(ValidationError::WritableParentDir {
            at,
            referenced: dir.snapshot,
            name: dir.name.clone(),
            id: s.id,
        });
    }
    Ok(())
}

/// A directory name: one plain path component. The charset is narrow on
/// purpose: names are rendered into overlay's `lowerdir=a:b` inside a
/// comma-separated mount data string, where `:`, `,`, `=` or `\` would
/// change the meaning, and into /proc/self/mountinfo, which escapes spaces.
fn check_name(at: Place, name: &str, limits: &Limits) -> Checked {
    let owned = || name.to_owned();
    if name.is_empty() {
        return Err(ValidationError::NameEmpty { at });
    }
    if name.len() > limits.max_name_len {
        return Err(ValidationError::NameTooLong { at, len: name.len(), max: limits.max_name_len });
    }
    // The usual name passes on this one pass over its bytes.
    if name.bytes().all(plain_name_byte) && name != "." && name != ".." {
        return Ok(());
    }
    if name == "." || name == ".." {
        return Err(ValidationError::NameDot { at, name: owned() });
    }
    if name.contains('/') {
        return Err(ValidationError::NameSlash { at, name: owned() });
    }
    if name.contains('\0') {
        return Err(ValidationError::NameNul { at, name: owned() });
    }
    let ch = name.chars().find(|&c| !c.is_ascii() || !plain_name_byte(c as u8)).unwrap_or('?');
    Err(ValidationError::NameCharset { at, name: owned(), ch })
}

fn plain_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Which mount a free option list belongs to: each reserves other flags.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OptionSet {
    Bind,
    Overlay,
    Other,
}

/// Flags that make containerd (or mount(8)) bind or loop-mount the source
/// as a path, or re-mount something else: never from a policy.
const RESERVED_EVERYWHERE: &[&str] = &["bind", "rbind", "remount", "loop"];
/// A bind's read-only flag is rendered from `readonly`; a later `rw` in the
/// free options would silently win over the host's `ro`.
const RESERVED_FOR_BIND: &[&str] = &["ro", "rw"];
/// An `other` mount's read-only flag is its `ro` option, rendered first by
/// the host; an `rw` anywhere would win over it.
const RESERVED_FOR_OTHER: &[&str] = &["rw"];

/// containerd's mount code idmaps lowerdirs or the bind source by these.
const ID_MAP_KEYS: &[&str] = &["uidmap", "gidmap"];

/// Option keys that take a path, besides any key ending in `dir`.
const PATH_KEYS: &[&str] = &["x-containerd.mkdir.path"];
/// Keys ending in `dir` that take no path.
const PATHLESS_DIR_KEYS: &[&str] = &["redirect_dir"];

fn check_options(n: usize, options: &[String], set: OptionSet, limits: &Limits) -> Checked {
    if options.len() > limits.max_options {
        return Err(ValidationError::TooManyOptions {
            at: Place::Mount(n),
            count: options.len(),
            max: limits.max_options,
        });
    }
    for (i, option) in options.iter().enumerate() {
        check_option(Place::Option(n, i), option, set, limits)?;
    }
    Ok(())
}

fn check_option(at: Place, option: &str, set: OptionSet, limits: &Limits) -> Checked {
    let owned = || option.to_owned();
    if option.is_empty() {
        return Err(ValidationError::OptionEmpty { at });
    }
    if option.len() > limits.max_option_len {
        return Err(ValidationError::OptionTooLong {
            at,
            len: option.len(),
            max: limits.max_option_len,
        });
    }
    if option.contains(',') {
        return Err(ValidationError::OptionComma { at, option: owned() });
    }
    if option.contains('\0') {
        return Err(ValidationError::OptionNul { at, option: owned() });
    }
    let (key, value) = option.split_once('=').unwrap_or((option, ""));
    let key = key.trim();
    if is_path_key(key) {
        return Err(ValidationError::OptionPathKey { at, option: owned() });
    }
    if value.contains('/') || key.contains('/') {
        return Err(ValidationError::OptionPathValue { at, option: owned() });
    }
    let reserved = |list: &[&str]| list.iter().any(|r| key.eq_ignore_ascii_case(r));
    if reserved(RESERVED_EVERYWHERE)
        || (set == OptionSet::Bind && reserved(RESERVED_FOR_BIND))
        || (set == OptionSet::Other && reserved(RESERVED_FOR_OTHER))
    {
        return Err(ValidationError::OptionReserved { at, option: owned() });
    }
    // The host renders these from the snapshot's checked id map; one by
    // hand could map a container's root to any host user.
    if reserved(ID_MAP_KEYS) {
        return Err(ValidationError::OptionIdMap { at, option: owned() });
    }
    Ok(())
}

/// `lowerdir`, `upperdir`, `workdir`, `datadir`, their `+` forms, and any
/// other `...dir` key: overlay's and others' path-bearing keys all end so.
fn is_path_key(key: &str) -> bool {
    let bare = key.strip_suffix('+').unwrap_or(key);
    // Bytes, not a str slice: the key may end in a multi-byte character.
    let ends_in_dir =
        bare.len() >= 3 && bare.as_bytes()[bare.len() - 3..].eq_ignore_ascii_case(b"dir");
    let pathless = PATHLESS_DIR_KEYS.iter().any(|k| bare.eq_ignore_ascii_case(k));
    (ends_in_dir && !pathless) || PATH_KEYS.iter().any(|k| bare.eq_ignore_ascii_case(k))
}

fn check_other(n: usize, fs_type: &str, source: &str, limits: &Limits) -> Checked {
    let at = Place::Mount(n);
    if !limits.other_fs_types.contains(&fs_type) {
        return Err(ValidationError::OtherType {
            at,
            // Nothing bounded the type before: it is echoed capped.
            fs_type: crate::untrusted(fs_type),
            allowed: limits.other_fs_types.join(", "),
        });
    }
    if source.len() > limits.max_source_len {
        return Err(ValidationError::OtherSourceTooLong {
            at,
            len: source.len(),
            max: limits.max_source_len,
        });
    }
    if source.contains('/') {
        return Err(ValidationError::OtherSourcePath { at, value: source.to_owned() });
    }
    if source.contains('\0') {
        return Err(ValidationError::OtherSourceNul { at, value: source.to_owned() });
    }
    Ok(())
}

/// The options of an `other` mount (a tmpfs, after [`check_other`]): only
/// `ro` and the [`TMPFS_OPTIONS`], valued ones with a plain value. Matched
/// exactly: the kernel and containerd match them case-sensitively, so
/// `NOSUID` would be no flag at all.
fn check_tmpfs_options(n: usize, options: &[String]) -> Checked {
    for (i, option) in options.iter().enumerate() {
        let at = Place::Option(n, i);
        if option == "ro" {
            continue;
        }
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option.as_str(), None),
        };
        if !TMPFS_OPTIONS.contains(&key) {
            return Err(ValidationError::OtherOption { at, option: option.clone() });
        }
        let plain =
            |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'%');
        let valued = TMPFS_VALUED.contains(&key);
        match value {
            Some(v) if valued && plain(v) => {}
            None if !valued => {}
            _ => return Err(ValidationError::OtherOptionValue { at, option: option.clone() }),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
