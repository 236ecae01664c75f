//! Case files: TOML, one or more `[[case]]`s each, with optional
//! `[defaults]` shared by the file's cases. See `docs/policy-authoring.md`
//! for the format. Parsing resolves every case to a snapshot, a config,
//! host facts and an expectation, or fails naming file, line and key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml_edit::Document;
use wasmsnap_plan::{CopyMode, HostFacts, Kind, Layout, Mount, Snapshot, SnapshotId, Step};

use super::failure::{FailureKind, Stage};
use wasmsnap_toml_place::{KeyPath, line_col, path_at, span_of};

/// The daemon's root mounts are rendered under unless a file sets
/// `defaults.root`: fixed, so expected mounts are exact strings. As in the
/// daemon, a snapshotter's snapshots live in `<root>/<snapshotter>/snapshots/`.
pub const DEFAULT_ROOT: &str = "/var/lib/wasmsnap";

/// The most parents a count may ask for (the kernel stacks 500 overlay
/// layers; a little more lets a case check the host refuses the rest).
const MAX_PARENT_COUNT: u64 = 4096;

/// A case file that cannot be used: the message names file, line and key.
#[derive(Debug)]
pub struct CaseFileError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for CaseFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for CaseFileError {}

/// One resolved case.
#[derive(Clone, Debug)]
pub struct Case {
    pub file: PathBuf,
    /// Its index among the file's `[[case]]`s.
    pub index: usize,
    pub line: usize,
    pub name: String,
    pub snapshot: Snapshot,
    pub config: Vec<(String, String)>,
    pub facts: HostFacts,
    /// The daemon's root (`--root`, `root =`).
    pub root: PathBuf,
    /// The snapshotter's name, if the file sets one (`defaults.snapshotter`);
    /// else the run's default (`--snapshotter`, or the policy's name).
    pub snapshotter: Option<String>,
    /// `false`: `--mount` skips this case (its facts are not this host's).
    pub mount: bool,
    pub expect: Expect,
}

impl Case {
    /// `FILE::NAME`, what `--filter` matches and reports print.
    pub fn id(&self) -> String {
        format!("{}::{}", self.file.display(), self.name)
    }

    /// Where the daemon serving this policy as its snapshotter (`default`
    /// unless the file names one) keeps it, and renders mounts under:
    /// `<root>/<snapshotter>`.
    pub fn store_root(&self, default: &str) -> PathBuf {
        self.root.join(self.snapshotter.as_deref().unwrap_or(default))
    }
}

/// What a case expects. Empty only before `--update` fills it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    pub layout: Option<Layout>,
    pub mounts: Option<Vec<Mount>>,
    pub error: Option<ErrorExpect>,
}

impl Expect {
    pub fn is_empty(&self) -> bool {
        self.layout.is_none() && self.mounts.is_none() && self.error.is_none()
    }
}

/// An expected failure: its message contains `contains`; `stage` and
/// `kind`, when given, must match too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorExpect {
    pub stage: Option<Stage>,
    pub kind: Option<FailureKind>,
    pub contains: String,
}

// --- the file as written ---------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default, rename = "case")]
    cases: Vec<RawCase>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    kind: Option<String>,
    parents: Option<toml::Value>,
    root: Option<String>,
    snapshotter: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    facts: RawFacts,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    mount: Option<bool>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFacts {
    overlay: Option<bool>,
    userxattr: Option<bool>,
    index_param: Option<bool>,
    reflink: Option<bool>,
    page_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    kind: Option<String>,
    parents: Option<toml::Value>,
    id: Option<u64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    facts: RawFacts,
    mount: Option<bool>,
    expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    layout: Option<RawLayout>,
    mounts: Option<Vec<RawMount>>,
    error: Option<RawError>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayout {
    #[serde(default)]
    steps: Vec<RawStep>,
    content: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    mkdir: Option<String>,
    #[serde(rename = "copy-parent")]
    copy_parent: Option<String>,
    #[serde(rename = "chown-like-parent")]
    chown_like_parent: Option<String>,
    #[serde(rename = "chown-to-mapped-root")]
    chown_to_mapped_root: Option<String>,
    mode: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    #[serde(rename = "type")]
    fs_type: String,
    source: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawError {
    #[serde(rename = "in")]
    stage: Option<String>,
    kind: Option<String>,
    contains: String,
}

// --- parsing -----------------------------------------------------------------

/// Parse the case file `file` with contents `text`.
pub fn parse(file: &Path, text: &str) -> Result<Vec<Case>, CaseFileError> {
    let doc = Document::parse(text.to_string()).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let (line, column) = line_col(text, offset);
        CaseFileError {
            file: file.into(),
            line,
            column,
            key: String::new(),
            message: e.message().trim().to_string(),
        }
    })?;
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let (line, column) = line_col(text, span.start);
        let key = path_at(&doc, &span).to_string();
        CaseFileError {
            file: file.into(),
            line,
            column,
            key,
            message: e.message().trim().to_string(),
        }
    })?;
    let at = Locator { file, text, doc: &doc };
    if raw.cases.is_empty() {
        return Err(at.error(KeyPath::default(), "no [[case]] in this file".into()));
    }
    let mut names = BTreeSet::new();
    let mut cases = Vec::with_capacity(raw.cases.len());
    for (index, rc) in raw.cases.iter().enumerate() {
        let path = KeyPath::default().key("case").index(index);
        if !names.insert(rc.name.clone()) {
            return Err(at.error(
                path.key("name"),
                format!("a case named {:?} comes earlier in this file", rc.name),
            ));
        }
        cases.push(resolve(&at, &raw.defaults, rc, index, path)?);
    }
    Ok(cases)
}

/// Turns key paths into complaints that name file, line and key.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
    doc: &'a Document<String>,
}

impl Locator<'_> {
    fn error(&self, path: KeyPath, message: String) -> CaseFileError {
        let offset = span_of(self.doc, &path).map_or(0, |s| s.start);
        let (line, column) = line_col(self.text, offset);
        CaseFileError { file: self.file.into(), line, column, key: path.to_string(), message }
    }

    fn line(&self, path: &KeyPath) -> usize {
        line_col(self.text, span_of(self.doc, path).map_or(0, |s| s.start)).0
    }
}

fn resolve(
    at: &Locator,
    defaults: &RawDefaults,
    rc: &RawCase,
    index: usize,
    path: KeyPath,
) -> Result<Case, CaseFileError> {
    let kind_text = rc.kind.as_deref().or(defaults.kind.as_deref()).ok_or_else(|| {
        at.error(
            path.clone().key("name"),
            format!(
                "case {:?} has no `kind` (view, active or committed), nor does [defaults]",
                rc.name
            ),
        )
    })?;
    let kind_path = if rc.kind.is_some() {
        path.clone().key("kind")
    } else {
        KeyPath::default().key("defaults").key("kind")
    };
    let kind = parse_kind(kind_text).ok_or_else(|| {
        at.error(kind_path, format!("unknown kind {kind_text:?} (view, active, committed)"))
    })?;

    let parent_ids = match (&rc.parents, &defaults.parents) {
        (Some(v), _) => parse_parents(v).map_err(|m| at.error(path.clone().key("parents"), m))?,
        (None, Some(v)) => parse_parents(v)
            .map_err(|m| at.error(KeyPath::default().key("defaults").key("parents"), m))?,
        (None, None) => Vec::new(),
    };
    let id = rc.id.unwrap_or_else(|| parent_ids.iter().max().map_or(1, |m| m + 1));
    if let Err(e) = wasmsnap_plan::check_chain(id, &parent_ids) {
        let key = match e {
            wasmsnap_plan::NotAChain::OwnId(_) => "id",
            wasmsnap_plan::NotAChain::Repeated(_) => "parents",
        };
        return Err(at.error(path.clone().key(key), e.to_string()));
    }

    let mut labels = defaults.labels.clone();
    labels.extend(rc.labels.clone());
    // Checked as the daemon checks a Prepare's labels: a bad map is a
    // broken case file (the daemon would refuse it before the policy).
    let id_map = wasmsnap_plan::idmap::from_labels(
        labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| {
        let in_case = rc.labels.contains_key(e.label);
        let table = if in_case { path.clone() } else { KeyPath::default().key("defaults") };
        at.error(table.key("labels").key(e.label), format!("invalid id map: {e}"))
    })?;
    let mut config = BTreeMap::new();
    for (source, table) in
        [(KeyPath::default().key("defaults"), &defaults.config), (path.clone(), &rc.config)]
    {
        for (k, v) in table {
            let text = config_value(v).ok_or_else(|| {
                at.error(
                    source.clone().key("config").key(k),
                    "config values are strings, numbers or booleans".into(),
                )
            })?;
            config.insert(k.clone(), text);
        }
    }
    let facts = apply_facts(apply_facts(typical_facts(), &defaults.facts), &rc.facts);
    let root = PathBuf::from(defaults.root.as_deref().unwrap_or(DEFAULT_ROOT));
    if !root.is_absolute() {
        return Err(at.error(
            KeyPath::default().key("defaults").key("root"),
            "root must be an absolute path".into(),
        ));
    }
    if let Some(name) = &defaults.snapshotter {
        wasmsnap_plan::check_snapshotter_name(name).map_err(|e| {
            at.error(KeyPath::default().key("defaults").key("snapshotter"), e.into())
        })?;
    }
    let expect = match &rc.expect {
        None => Expect::default(),
        Some(e) => resolve_expect(at, e, path.clone().key("expect"))?,
    };
    Ok(Case {
        file: at.file.to_path_buf(),
        index,
        line: at.line(&path),
        name: rc.name.clone(),
        snapshot: Snapshot { id, kind, parent_ids, labels: labels.into_iter().collect(), id_map },
        config: config.into_iter().collect(),
        facts,
        root,
        snapshotter: defaults.snapshotter.clone(),
        mount: rc.mount.or(defaults.mount).unwrap_or(true),
        expect,
    })
}

fn parse_kind(s: &str) -> Option<Kind> {
    match s {
        "view" => Some(Kind::View),
        "active" => Some(Kind::Active),
        "committed" => Some(Kind::Committed),
        _ => None,
    }
}

/// `parents = N` (ids N..1, nearest first, as a chain is numbered) or
/// `parents = [ids...]` (nearest first).
fn parse_parents(v: &toml::Value) -> Result<Vec<SnapshotId>, String> {
    match v {
        toml::Value::Integer(n) if (0..=MAX_PARENT_COUNT as i64).contains(n) => {
            Ok((1..=*n as u64).rev().collect())
        }
        toml::Value::Integer(n) => {
            Err(format!("a parent count must be 0 to {MAX_PARENT_COUNT}, got {n}"))
        }
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
                other => Err(format!("parent ids are non-negative integers, got {other}")),
            })
            .collect(),
        other => Err(format!(
            "expected a parent count or a list of parent ids (nearest first), got {other}"
        )),
    }
}

fn config_value(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The facts a case gets unless it says otherwise: a typical host (overlay,
/// no userxattr, the `index` parameter, no reflink, 4 KiB pages). Fixed, not
/// probed, so a case gives the same plan on every machine. The same as
/// `wasmsnap_guest::testing::facts()`.
pub fn typical_facts() -> HostFacts {
    HostFacts {
        overlay: true,
        userxattr: false,
        index_param: true,
        reflink: false,
        page_size: 4096,
    }
}

fn apply_facts(mut facts: HostFacts, raw: &RawFacts) -> HostFacts {
    facts.overlay = raw.overlay.unwrap_or(facts.overlay);
    facts.userxattr = raw.userxattr.unwrap_or(facts.userxattr);
    facts.index_param = raw.index_param.unwrap_or(facts.index_param);
    facts.reflink = raw.reflink.unwrap_or(facts.reflink);
    facts.page_size = raw.page_size.unwrap_or(facts.page_size);
    facts
}

fn resolve_expect(at: &Locator, raw: &RawExpect, path: KeyPath) -> Result<Expect, CaseFileError> {
    if raw.error.is_some() && (raw.layout.is_some() || raw.mounts.is_some()) {
        return Err(at.error(
            path.key("error"),
            "expect.error cannot stand beside expect.layout or expect.mounts: a case either fails or gives a plan".into(),
        ));
    }
    let layout = match &raw.layout {
        None => None,
        Some(l) => Some(resolve_layout(at, l, path.clone().key("layout"))?),
    };
    let mounts = raw.mounts.as_ref().map(|ms| {
        ms.iter()
            .map(|m| Mount {
                r#type: m.fs_type.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
                options: m.options.clone(),
            })
            .collect()
    });
    let error = match &raw.error {
        None => None,
        Some(e) => {
            let p = path.clone().key("error");
            let stage = match &e.stage {
                None => None,
                Some(s) => Some(Stage::parse(s).ok_or_else(|| {
                    at.error(p.clone().key("in"), format!("unknown stage {s:?} ({})", Stage::NAMES))
                })?),
            };
            let kind = match &e.kind {
                None => None,
                Some(k) => Some(FailureKind::parse(k).ok_or_else(|| {
                    at.error(
                        p.clone().key("kind"),
                        format!("unknown failure kind {k:?} ({})", FailureKind::NAMES),
                    )
                })?),
            };
            Some(ErrorExpect { stage, kind, contains: e.contains.clone() })
        }
    };
    Ok(Expect { layout, mounts, error })
}

fn resolve_layout(at: &Locator, raw: &RawLayout, path: KeyPath) -> Result<Layout, CaseFileError> {
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (i, s) in raw.steps.iter().enumerate() {
        let p = path.clone().key("steps").index(i);
        let step = match (&s.mkdir, &s.copy_parent, &s.chown_like_parent, &s.chown_to_mapped_root) {
            (None, None, None, Some(name)) => {
                if s.mode.is_some() {
                    return Err(
                        at.error(p.key("mode"), "chown-to-mapped-root takes no mode".into())
                    );
                }
                Step::ChownToMappedRoot { name: name.clone() }
            }
            (Some(name), None, None, None) => {
                let mode = match &s.mode {
                    None => 0o755,
                    Some(m) => {
                        parse_permissions(m).map_err(|msg| at.error(p.clone().key("mode"), msg))?
                    }
                };
                Step::Mkdir { name: name.clone(), mode }
            }
            (None, Some(name), None, None) => {
                let mode = match &s.mode {
                    None => CopyMode::Copy,
                    Some(toml::Value::String(m)) if m == "copy" => CopyMode::Copy,
                    Some(toml::Value::String(m)) if m == "clone-or-copy" => CopyMode::CloneOrCopy,
                    Some(other) => {
                        return Err(at.error(
                            p.key("mode"),
                            format!("copy mode is \"copy\" or \"clone-or-copy\", got {other}"),
                        ));
                    }
                };
                Step::CopyParent { name: name.clone(), mode }
            }
            (None, None, Some(name), None) => {
                if s.mode.is_some() {
                    return Err(at.error(p.key("mode"), "chown-like-parent takes no mode".into()));
                }
                Step::ChownLikeParent { name: name.clone() }
            }
            _ => {
                return Err(at.error(
                    p,
                    "a step has exactly one of `mkdir`, `copy-parent`, `chown-like-parent`, `chown-to-mapped-root`"
                        .into(),
                ));
            }
        };
        steps.push(step);
    }
    Ok(Layout { steps, content: raw.content.clone() })
}

/// `"0755"` (octal text) or an integer (write `0o755` in TOML).
fn parse_permissions(v: &toml::Value) -> Result<u32, String> {
    let mode = match v {
        toml::Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .map_err(|_| format!("mode {s:?} is not an octal number such as \"0755\""))?,
        toml::Value::Integer(n) => {
            u32::try_from(*n).map_err(|_| format!("mode {n} is out of range"))?
        }
        other => return Err(format!("mode is octal text such as \"0755\", got {other}")),
    };
    Ok(mode)
}

/// Every `*.toml` under `paths` (files as given, directories searched
/// recursively), sorted within each directory so runs are reproducible.
/// A directory search skips what is not a case file in a crate: hidden
/// entries, `target/`, `Cargo.toml` and `rust-toolchain.toml`.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            collect_dir(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    if files.is_empty() {
        return Err(format!(
            "no case files (*.toml) in {}",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(files)
}

fn collect_dir(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort();
    for entry in entries {
        let name = entry.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.')
            || name == "target"
            || name == "Cargo.toml"
            || name == "rust-toolchain.toml"
        {
            continue;
        }
        if entry.is_dir() {
            collect_dir(&entry, files)?;
        } else if entry.extension().is_some_and(|e| e == "toml") {
            files.push(entry);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "cases_tests.rs"]
mod tests;
