//! Output: one line per case (and the reasons under a failing one), JSON
//! for tools, JUnit XML for CI systems.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::failure::Failure;
use super::mount_check::MountReport;
use super::run::{CaseReport, Status};

/// Counts for the closing line.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub updated: usize,
    /// Cases the filter left out.
    pub filtered_out: usize,
}

impl Totals {
    pub fn of(reports: &[CaseReport], filtered_out: usize) -> Totals {
        let count = |s: Status| reports.iter().filter(|r| r.status == s).count();
        Totals {
            passed: count(Status::Pass),
            failed: count(Status::Fail),
            updated: count(Status::Updated),
            filtered_out,
        }
    }

    /// `N passed, N failed` (the closing line CI tools read), then extras.
    pub fn line(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.updated > 0 {
            let _ = write!(line, ", {} updated", self.updated);
        }
        if self.filtered_out > 0 {
            let _ = write!(line, ", {} filtered out", self.filtered_out);
        }
        line
    }
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The text report of one case: its line, then for a failure the reason,
/// the policy's failure and the diff, indented.
pub fn text(r: &CaseReport) -> String {
    let status = match r.status {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Updated => "UPDATED",
    };
    let mut out = format!(
        "{status:<7} {}:{}  {}  ({:.1} ms)",
        r.case.file.display(),
        r.case.line,
        r.case.name,
        ms(r.duration)
    );
    if let Some(m) = &r.mount {
        let _ = write!(out, "  {}", mount_summary(m));
    } else if let Some(why) = r.mount_skipped {
        let _ = write!(out, "  [not mounted: {why}]");
    }
    out.push('\n');
    if r.status != Status::Fail {
        return out;
    }
    let indent = |text: &str, out: &mut String| {
        for line in text.lines() {
            let _ = writeln!(out, "        {line}");
        }
    };
    if let Some(problem) = &r.problem {
        indent(problem, &mut out);
    }
    if !r.diff.is_empty() {
        indent(&r.diff, &mut out);
    }
    if let Some(m) = &r.mount {
        for c in m.checks.iter().filter(|c| !c.passed) {
            indent(&format!("mount check failed: {}: {}", c.name, c.detail), &mut out);
        }
        if let Some(e) = &m.error {
            indent(&format!("mount: {e}"), &mut out);
        }
    }
    out
}

fn mount_summary(m: &MountReport) -> String {
    if m.error.is_some() {
        return "[mount failed]".to_string();
    }
    let passed = m.checks.iter().filter(|c| c.passed).count();
    format!(
        "[mounted {}: {passed}/{} checks; setup {:.0} ms, mount+check {:.0} ms, cleanup {:.0} ms]",
        m.methods.join(" + "),
        m.checks.len(),
        m.setup_ms,
        m.mount_ms,
        m.cleanup_ms
    )
}

#[derive(Serialize)]
struct JsonRun<'a> {
    policy: &'a str,
    sha256: &'a str,
    cases: Vec<JsonCase<'a>>,
    #[serde(flatten)]
    totals: Totals,
}

#[derive(Serialize)]
struct JsonCase<'a> {
    file: String,
    line: usize,
    name: &'a str,
    status: &'static str,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    diff: &'a str,
    /// The policy's failure, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a Failure>,
    /// The plan it gave, if it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    actual: Option<JsonPlan<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mount: Option<&'a MountReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mount_skipped: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    layout: &'a wasmsnap_plan::Layout,
    mounts: &'a [wasmsnap_plan::Mount],
}

/// The whole run as one JSON document.
pub fn json(policy: &str, sha256: &str, reports: &[CaseReport], totals: Totals) -> String {
    let cases = reports
        .iter()
        .map(|r| JsonCase {
            file: r.case.file.display().to_string(),
            line: r.case.line,
            name: &r.case.name,
            status: match r.status {
                Status::Pass => "pass",
                Status::Fail => "fail",
                Status::Updated => "updated",
            },
            duration_ms: ms(r.duration),
            problem: r.problem.as_deref(),
            diff: &r.diff,
            failure: r.outcome.as_ref().err(),
            actual: r
                .outcome
                .as_ref()
                .ok()
                .map(|p| JsonPlan { layout: &p.layout, mounts: &p.mounts }),
            mount: r.mount.as_ref(),
            mount_skipped: r.mount_skipped,
        })
        .collect();
    serde_json::to_string_pretty(&JsonRun { policy, sha256, cases, totals })
        .expect("reports serialize")
}

/// JUnit XML: one `<testsuite>` per case file, one `<testcase>` per case.
pub fn junit(policy: &str, reports: &[CaseReport]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let totals = Totals::of(reports, 0);
    let total_time: f64 = reports.iter().map(|r| r.duration.as_secs_f64()).sum();
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{total_time:.6}\">",
        xml(&format!("wasmsnap policy test {policy}")),
        reports.len(),
        totals.failed
    );
    let mut files: Vec<&Path> = Vec::new();
    for r in reports {
        if !files.contains(&r.case.file.as_path()) {
            files.push(&r.case.file);
        }
    }
    for file in files {
        let in_file: Vec<&CaseReport> = reports.iter().filter(|r| r.case.file == file).collect();
        let failures = in_file.iter().filter(|r| r.status == Status::Fail).count();
        let time: f64 = in_file.iter().map(|r| r.duration.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.6}\">",
            xml(&file.display().to_string()),
            in_file.len()
        );
        for r in in_file {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" line=\"{}\" time=\"{:.6}\"",
                xml(&file.display().to_string()),
                xml(&r.case.name),
                xml(&file.display().to_string()),
                r.case.line,
                r.duration.as_secs_f64()
            );
            if r.status == Status::Fail {
                let message = r.problem.as_deref().unwrap_or("failed");
                let body = text(r);
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    xml(message),
                    xml(&body)
                );
            } else {
                let _ = writeln!(out, "/>");
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escape for XML text and attributes; drop characters XML 1.0 forbids.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_drops_control_characters() {
        assert_eq!(xml("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }

    #[test]
    fn the_closing_line_is_the_plain_count() {
        let t = Totals { passed: 3, failed: 1, updated: 0, filtered_out: 2 };
        assert_eq!(t.line(), "3 passed, 1 failed, 2 filtered out");
    }
}
