//! Running cases: ask the policy, compare with the expectation, optionally
//! mount the plan, and say what happened.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cases::{Case, ErrorExpect, Expect};
use super::diff::{diff, expected_error_lines, failure_lines, layout_lines, mounts_lines};
use super::failure::Failure;
use super::mount_check::{self, MountReport};
use super::subject::{Plan, Subject};

/// How to run.
pub struct RunOptions {
    /// Record actual answers as expectations instead of failing.
    pub update: bool,
    /// Mount each plan under this scratch base and check it.
    pub mount: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// `--update` rewrote the expectation.
    Updated,
}

/// What one case did.
pub struct CaseReport {
    pub case: Case,
    pub status: Status,
    pub duration: Duration,
    /// Why it failed, one line.
    pub problem: Option<String>,
    /// Expected against actual, when they differ.
    pub diff: String,
    pub outcome: Result<Plan, Failure>,
    pub mount: Option<MountReport>,
    /// Why `--mount` did not mount this case.
    pub mount_skipped: Option<&'static str>,
}

pub fn run_case(subject: &mut Subject, case: Case, options: &RunOptions) -> CaseReport {
    // Loading (compiling the component, `init`) is not timed: the first
    // case would carry it for all.
    let _ = subject.policy(&case.config, &case.facts);
    let started = Instant::now();
    let outcome = subject.evaluate(&case);
    let duration = started.elapsed();
    let mismatch = compare(&case.expect, &outcome);
    let (status, problem, diff) = match mismatch {
        None => (Status::Pass, None, String::new()),
        Some(_) if options.update => (Status::Updated, None, String::new()),
        Some((problem, diff)) => (Status::Fail, Some(problem), diff),
    };
    let mut report = CaseReport {
        case,
        status,
        duration,
        problem,
        diff,
        outcome,
        mount: None,
        mount_skipped: None,
    };
    if let Some(scratch) = &options.mount {
        mount(subject, &mut report, scratch);
    }
    report
}

fn mount(subject: &mut Subject, report: &mut CaseReport, scratch: &std::path::Path) {
    let case = &report.case;
    let Ok(plan) = &report.outcome else {
        report.mount_skipped = Some("the policy gave no plan");
        return;
    };
    if !case.mount {
        report.mount_skipped = Some("the case sets mount = false");
        return;
    }
    let policy = match subject.policy(&case.config, &case.facts) {
        Ok(p) => p,
        Err(_) => {
            report.mount_skipped = Some("the policy did not load");
            return;
        }
    };
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as usize);
    // The plan is rendered under the case's fixed root; mount the same
    // plan rendered under the scratch root the check creates.
    let checked = mount_check::check(&policy, &case.snapshot, plan, scratch, page_size);
    if !checked.passed() && report.status != Status::Fail {
        report.status = Status::Fail;
        report.problem = Some(match &checked.error {
            Some(_) => "mounting the plan failed".to_string(),
            None => "the mounted plan failed a check".to_string(),
        });
    }
    report.mount = Some(checked);
}

/// `None` when `outcome` meets `expect`; else a one-line problem and a diff.
pub fn compare(expect: &Expect, outcome: &Result<Plan, Failure>) -> Option<(String, String)> {
    let mut expected = Vec::new();
    let mut actual = Vec::new();
    if expect.is_empty() {
        match outcome {
            Ok(plan) => {
                layout_lines(&plan.layout, &mut actual);
                mounts_lines(&plan.mounts, &mut actual);
            }
            Err(f) => failure_lines(f, &mut actual),
        }
        let problem = "the case has no expectation yet: run with --update to record the actual answer, then review it";
        return Some((problem.into(), diff(&expected, &actual)));
    }
    match (&expect.error, outcome) {
        (Some(e), Err(f)) => {
            if error_matches(e, f) {
                return None;
            }
            expected_error_lines(e, &mut expected);
            failure_lines(f, &mut actual);
            Some((format!("it failed, but not as expected: {f}"), diff(&expected, &actual)))
        }
        (Some(e), Ok(plan)) => {
            expected_error_lines(e, &mut expected);
            layout_lines(&plan.layout, &mut actual);
            mounts_lines(&plan.mounts, &mut actual);
            Some((
                "expected a failure, but the policy gave a plan".into(),
                diff(&expected, &actual),
            ))
        }
        (None, Err(f)) => {
            plan_lines(expect, &mut expected);
            failure_lines(f, &mut actual);
            Some((f.to_string(), diff(&expected, &actual)))
        }
        (None, Ok(plan)) => {
            plan_lines(expect, &mut expected);
            if expect.layout.is_some() {
                layout_lines(&plan.layout, &mut actual);
            }
            if expect.mounts.is_some() {
                mounts_lines(&plan.mounts, &mut actual);
            }
            let text = diff(&expected, &actual);
            if text.is_empty() {
                return None;
            }
            let what = match (
                expect.layout.as_ref().map(|l| *l == plan.layout),
                expect.mounts.as_ref().map(|m| *m == plan.mounts),
            ) {
                (Some(false), Some(false)) => {
                    "the layout and the mounts differ from the expectation"
                }
                (Some(false), _) => "the layout differs from the expectation",
                _ => "the mounts differ from the expectation",
            };
            Some((what.into(), text))
        }
    }
}

fn plan_lines(expect: &Expect, out: &mut Vec<String>) {
    if let Some(layout) = &expect.layout {
        layout_lines(layout, out);
    }
    if let Some(mounts) = &expect.mounts {
        mounts_lines(mounts, out);
    }
}

fn error_matches(e: &ErrorExpect, f: &Failure) -> bool {
    e.stage.is_none_or(|s| s == f.stage)
        && e.kind.is_none_or(|k| k == f.kind)
        && f.message.contains(&e.contains)
}
