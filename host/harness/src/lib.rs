//! The policy testing harness behind `wasmsnap policy test` and
//! `wasmsnap policy inspect`.
//!
//! A case file (TOML, see `docs/policy-authoring.md`) describes snapshots,
//! the operator config and the host facts, and what the policy must answer:
//! a layout, rendered mounts, or a failure. The harness loads the policy in
//! the daemon's own engine (same sandbox, same validation), runs every
//! case, and reports one line per case with a diff for each failure. With
//! `--mount` it also mounts each plan in a scratch root and checks the
//! merged view.
//!
//! - [`cases`]: parsing case files, errors naming file, line and key;
//! - [`subject`]: the policy under test in the engine;
//! - [`run`]: one case: ask, compare, mount;
//! - [`diff`], [`report`]: what the author reads;
//! - [`update`]: `--update` rewrites expectations in place;
//! - [`mount_check`], [`mount_sys`]: `--mount`;
//! - [`inspect`]: `policy inspect`.

mod cases;
mod diff;
mod failure;
mod idmapped;
pub mod inspect;
mod mount_check;
/// Public for the whole-system tests, which mount as a client (and containerd 2.x) would.
pub mod mount_sys;
mod report;
mod run;
mod subject;
mod update;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use regex::Regex;

use cases::{Case, CaseFileError};
use report::Totals;
use run::{RunOptions, Status};
use subject::Subject;

/// Every case passed (or was updated).
pub const EXIT_OK: u8 = 0;
/// Some case failed.
pub const EXIT_FAILED: u8 = 1;
/// The run could not start: a broken case file, a bad argument, an
/// unreadable policy.
pub const EXIT_BROKEN: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// What `wasmsnap policy test` was asked.
pub struct TestArgs {
    /// `builtin:NAME` or a path to a component.
    pub policy: String,
    /// Case files, or directories searched for `*.toml`.
    pub paths: Vec<PathBuf>,
    /// Run only cases whose `FILE::NAME` matches.
    pub filter: Option<String>,
    pub format: Format,
    /// Also write a JUnit XML report here.
    pub junit: Option<PathBuf>,
    pub update: bool,
    /// Mount each plan (needs root) in scratch roots under this directory.
    pub mount: Option<PathBuf>,
    /// The snapshotter name mounts are rendered for, where a case file sets
    /// none [default: the policy's name].
    pub snapshotter: Option<String>,
}

/// The snapshotter name a policy is rendered for: `given`, or the policy's
/// name (`builtin:NAME` is NAME, a file its name without extension).
pub fn snapshotter_name(policy: &str, given: Option<&str>) -> Result<String, String> {
    let name = match given {
        Some(n) => n.to_string(),
        None => match policy.strip_prefix("builtin:") {
            Some(n) => n.to_string(),
            None => std::path::Path::new(policy)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        },
    };
    wasmsnap_plan::check_snapshotter_name(&name).map_err(|e| {
        let hint = if given.is_some() { "" } else { " (name one with --snapshotter)" };
        format!("snapshotter {name:?}: {e}{hint}")
    })?;
    Ok(name)
}

/// Run the cases; returns the exit status.
pub fn test(args: &TestArgs) -> u8 {
    match try_test(args) {
        Ok(status) => status,
        Err(message) => {
            eprintln!("wasmsnap policy test: {message}");
            EXIT_BROKEN
        }
    }
}

fn try_test(args: &TestArgs) -> Result<u8, String> {
    let filter = match &args.filter {
        Some(f) => {
            Some(Regex::new(f).map_err(|e| format!("--filter {f:?} is not a valid regex: {e}"))?)
        }
        None => None,
    };
    if args.mount.is_some() && !nix::unistd::geteuid().is_root() {
        return Err("--mount needs root (it creates directories and mounts plans)".into());
    }
    let (files, cases) = load_cases(&args.paths)?;
    let wasm = wasmsnap_engine::read_policy(&args.policy).map_err(|e| format!("{e:#}"))?;
    let sha256 = wasmsnap_engine::sha256_hex(&wasm);
    let snapshotter = snapshotter_name(&args.policy, args.snapshotter.as_deref())?;
    let mut subject =
        Subject::new(&args.policy, wasm, &snapshotter).map_err(|e| format!("{e:#}"))?;

    let total = cases.len();
    let selected: Vec<Case> =
        cases.into_iter().filter(|c| filter.as_ref().is_none_or(|f| f.is_match(&c.id()))).collect();
    let options = RunOptions { update: args.update, mount: args.mount.clone() };
    let mut reports = Vec::with_capacity(selected.len());
    for case in selected {
        let report = run::run_case(&mut subject, case, &options);
        if args.format == Format::Text {
            // Stream: a long --mount run shows progress.
            print!("{}", report::text(&report));
            let _ = std::io::stdout().flush();
        }
        reports.push(report);
    }
    let totals = Totals::of(&reports, total - reports.len());

    if args.update {
        write_updates(&files, &reports)?;
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, report::junit(&args.policy, &reports))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    match args.format {
        Format::Text => println!("{}", totals.line()),
        Format::Json => println!("{}", report::json(&args.policy, &sha256, &reports, totals)),
    }
    Ok(if totals.failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// Parse every case file; all broken files are reported, then the run stops.
fn load_cases(paths: &[PathBuf]) -> Result<(BTreeMap<PathBuf, String>, Vec<Case>), String> {
    let files = cases::discover(paths)?;
    let mut texts = BTreeMap::new();
    let mut all = Vec::new();
    let mut broken: Vec<CaseFileError> = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
        match cases::parse(&file, &text) {
            Ok(cases) => all.extend(cases),
            Err(e) => broken.push(e),
        }
        texts.insert(file, text);
    }
    if !broken.is_empty() {
        let list = broken.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
        return Err(format!(
            "broken case file{}:\n{list}",
            if broken.len() == 1 { "" } else { "s" }
        ));
    }
    Ok((texts, all))
}

fn write_updates(
    files: &BTreeMap<PathBuf, String>,
    reports: &[run::CaseReport],
) -> Result<(), String> {
    for (file, text) in files {
        let updates: Vec<update::Update> = reports
            .iter()
            .filter(|r| r.status == Status::Updated && &r.case.file == file)
            .map(|r| update::Update {
                index: r.case.index,
                old: &r.case.expect,
                outcome: &r.outcome,
            })
            .collect();
        if updates.is_empty() {
            continue;
        }
        update::rewrite(file, text, &updates)?;
        eprintln!(
            "updated {} case{} in {}: review the diff before committing",
            updates.len(),
            if updates.len() == 1 { "" } else { "s" },
            file.display()
        );
    }
    Ok(())
}
