//! `--update`: write the actual answers into the case files as the new
//! expectations. Only each updated case's `expect` table is replaced; every
//! other line of the file (comments, order, formatting) stays as it was.

use std::path::Path;

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};
use wasmsnap_plan::{CopyMode, Layout, Mount, Step};

use super::cases::Expect;
use super::failure::Failure;
use super::subject::Plan;

/// A new expectation for case `index` of a file.
pub struct Update<'a> {
    pub index: usize,
    /// The expectation written before (which parts it checks).
    pub old: &'a Expect,
    pub outcome: &'a Result<Plan, Failure>,
}

/// Rewrite `file` (whose text is `text`) with `updates` applied.
pub fn rewrite(file: &Path, text: &str, updates: &[Update]) -> Result<(), String> {
    let updated = apply(text, updates).map_err(|e| format!("{}: {e}", file.display()))?;
    std::fs::write(file, updated).map_err(|e| format!("write {}: {e}", file.display()))
}

/// `text` with `updates` applied.
pub fn apply(text: &str, updates: &[Update]) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let cases = doc
        .get_mut("case")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or("no [[case]] array of tables (an inline `case = [...]` cannot be updated)")?;
    for u in updates {
        let case = cases.get_mut(u.index).ok_or_else(|| format!("case {} is gone", u.index))?;
        let old_decor = case.get("expect").and_then(Item::as_table).map(|t| t.decor().clone());
        let mut expect = expect_table(u.old, u.outcome);
        if let Some(decor) = old_decor {
            *expect.decor_mut() = decor;
        }
        case.insert("expect", Item::Table(expect));
    }
    Ok(doc.to_string())
}

fn expect_table(old: &Expect, outcome: &Result<Plan, Failure>) -> Table {
    let mut expect = Table::new();
    // `expect` itself only holds sub-tables: no bare `[case.expect]` header.
    expect.set_implicit(true);
    match outcome {
        Ok(plan) => {
            // Keep checking what was checked; a new case checks both.
            let neither = old.layout.is_none() && old.mounts.is_none();
            if neither || old.layout.is_some() {
                expect.insert("layout", Item::Table(layout_table(&plan.layout)));
            }
            if neither || old.mounts.is_some() {
                expect.insert("mounts", Item::ArrayOfTables(mounts_tables(&plan.mounts)));
            }
        }
        Err(f) => {
            let mut error = Table::new();
            error.insert("in", toml_edit::value(f.stage.as_str()));
            error.insert("kind", toml_edit::value(f.kind.as_str()));
            let first_line = f.message.lines().next().unwrap_or_default();
            error.insert("contains", toml_edit::value(first_line));
            expect.insert("error", Item::Table(error));
        }
    }
    expect
}

fn layout_table(layout: &Layout) -> Table {
    let mut table = Table::new();
    let steps = layout.steps.iter().map(|s| Value::InlineTable(step_table(s)));
    table.insert("steps", toml_edit::value(multiline(steps)));
    if let Some(content) = &layout.content {
        table.insert("content", toml_edit::value(content.as_str()));
    }
    table
}

fn step_table(step: &Step) -> InlineTable {
    let mut t = InlineTable::new();
    match step {
        Step::Mkdir { name, mode } => {
            t.insert("mkdir", name.as_str().into());
            t.insert("mode", format!("{mode:04o}").into());
        }
        Step::CopyParent { name, mode } => {
            t.insert("copy-parent", name.as_str().into());
            let mode = match mode {
                CopyMode::Copy => "copy",
                CopyMode::CloneOrCopy => "clone-or-copy",
            };
            t.insert("mode", mode.into());
        }
        Step::ChownLikeParent { name } => {
            t.insert("chown-like-parent", name.as_str().into());
        }
        Step::ChownToMappedRoot { name } => {
            t.insert("chown-to-mapped-root", name.as_str().into());
        }
    }
    t
}

fn mounts_tables(mounts: &[Mount]) -> ArrayOfTables {
    let mut tables = ArrayOfTables::new();
    for m in mounts {
        let mut t = Table::new();
        t.insert("type", toml_edit::value(m.r#type.as_str()));
        t.insert("source", toml_edit::value(m.source.as_str()));
        if !m.target.is_empty() {
            t.insert("target", toml_edit::value(m.target.as_str()));
        }
        t.insert(
            "options",
            toml_edit::value(multiline(m.options.iter().map(|o| Value::from(o.as_str())))),
        );
        tables.push(t);
    }
    tables
}

/// An array with one value per line: reviewable, and diffs well in git.
fn multiline(values: impl Iterator<Item = Value>) -> Array {
    let mut array = Array::new();
    for mut v in values {
        v.decor_mut().set_prefix("\n    ");
        array.push_formatted(v);
    }
    if !array.is_empty() {
        array.set_trailing_comma(true);
        array.set_trailing("\n");
    }
    array
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{FailureKind, Stage};

    fn plan() -> Plan {
        Plan {
            layout: Layout {
                steps: vec![Step::Mkdir { name: "fs".into(), mode: 0o755 }],
                content: Some("fs".into()),
            },
            plans: Vec::new(),
            mounts: vec![Mount {
                r#type: "bind".into(),
                source: "/r/snapshots/1/fs".into(),
                target: String::new(),
                options: vec!["rw".into(), "rbind".into()],
            }],
        }
    }

    const FILE: &str = "# top comment\n[[case]]\nname = \"a\" # why a\nkind = \"active\"\n\n[[case]]\nname = \"b\"\nkind = \"view\"\n[case.expect]\nlayout = { steps = [] }\n\n# trailing comment\n";

    #[test]
    fn writes_layout_and_mounts_for_a_new_case_and_keeps_the_rest() {
        let empty = Expect::default();
        let outcome = Ok(plan());
        let text = apply(FILE, &[Update { index: 0, old: &empty, outcome: &outcome }]).unwrap();
        assert!(text.starts_with("# top comment\n[[case]]\nname = \"a\" # why a\n"), "{text}");
        assert!(text.contains("[case.expect.layout]\nsteps = [\n    { mkdir = \"fs\", mode = \"0755\" },\n]\ncontent = \"fs\"\n"), "{text}");
        assert!(text.contains("[[case.expect.mounts]]\ntype = \"bind\"\nsource = \"/r/snapshots/1/fs\"\noptions = [\n    \"rw\",\n    \"rbind\",\n]\n"), "{text}");
        assert!(text.contains("# trailing comment"), "{text}");
        // What was written parses back to the same expectation.
        let cases = crate::cases::parse(Path::new("t.toml"), &text).unwrap();
        assert_eq!(cases[0].expect.layout.as_ref(), Some(&plan().layout));
        assert_eq!(cases[0].expect.mounts.as_ref(), Some(&plan().mounts));
        assert_eq!(cases[1].name, "b");
    }

    #[test]
    fn keeps_checking_only_what_was_checked() {
        let cases = crate::cases::parse(Path::new("t.toml"), FILE).unwrap();
        let outcome = Ok(plan());
        let text =
            apply(FILE, &[Update { index: 1, old: &cases[1].expect, outcome: &outcome }]).unwrap();
        let again = crate::cases::parse(Path::new("t.toml"), &text).unwrap();
        assert_eq!(again[1].expect.layout.as_ref(), Some(&plan().layout));
        assert_eq!(again[1].expect.mounts, None, "{text}");
    }

    #[test]
    fn a_failure_becomes_an_error_expectation() {
        let empty = Expect::default();
        let outcome = Err(Failure {
            stage: Stage::Layout,
            kind: FailureKind::Trap,
            message: "wasm trap: unreachable\nguest output:\npanicked".into(),
        });
        let text = apply(FILE, &[Update { index: 0, old: &empty, outcome: &outcome }]).unwrap();
        assert!(text.contains("[case.expect.error]\nin = \"layout\"\nkind = \"trap\"\ncontains = \"wasm trap: unreachable\"\n"), "{text}");
        let again = crate::cases::parse(Path::new("t.toml"), &text).unwrap();
        assert_eq!(again[0].expect.error.as_ref().unwrap().kind, Some(FailureKind::Trap));
    }
}
