//! Readable differences between an expected and an actual plan: both are
//! rendered to lines (one step, one mount option, one lower layer per
//! line), then compared line by line and shown with a little context.

use std::fmt::Write as _;

use wasmsnap_plan::{CopyMode, Layout, Mount, Step};

use super::cases::ErrorExpect;
use super::failure::Failure;

/// Lines of unchanged context shown around each change.
const CONTEXT: usize = 3;

/// The lines of a layout.
pub fn layout_lines(layout: &Layout, out: &mut Vec<String>) {
    out.push("layout".into());
    for step in &layout.steps {
        out.push(format!("  {}", step_text(step)));
    }
    match &layout.content {
        Some(c) => out.push(format!("  content {c}")),
        None => out.push("  content (none)".into()),
    }
}

pub fn step_text(step: &Step) -> String {
    match step {
        Step::Mkdir { name, mode } => format!("mkdir {name} {mode:04o}"),
        Step::CopyParent { name, mode: CopyMode::Copy } => format!("copy-parent {name} copy"),
        Step::CopyParent { name, mode: CopyMode::CloneOrCopy } => {
            format!("copy-parent {name} clone-or-copy")
        }
        Step::ChownLikeParent { name } => format!("chown-like-parent {name}"),
        Step::ChownToMappedRoot { name } => format!("chown-to-mapped-root {name}"),
    }
}

/// The lines of rendered mounts; a `lowerdir=` gets one line per layer so
/// a difference points at the layer.
pub fn mounts_lines(mounts: &[Mount], out: &mut Vec<String>) {
    out.push("mounts".into());
    for (i, m) in mounts.iter().enumerate() {
        let mut head = format!("  [{i}] {} {}", m.r#type, m.source);
        if !m.target.is_empty() {
            let _ = write!(head, " -> {}", m.target);
        }
        out.push(head);
        for option in &m.options {
            match option.strip_prefix("lowerdir=") {
                Some(layers) => {
                    out.push("      lowerdir=".into());
                    out.extend(layers.split(':').map(|l| format!("        {l}")));
                }
                None => out.push(format!("      {option}")),
            }
        }
    }
}

pub fn expected_error_lines(e: &ErrorExpect, out: &mut Vec<String>) {
    out.push("error".into());
    if let Some(stage) = e.stage {
        out.push(format!("  in {}", stage.as_str()));
    }
    if let Some(kind) = e.kind {
        out.push(format!("  kind {}", kind.as_str()));
    }
    out.push(format!("  message containing {:?}", e.contains));
}

pub fn failure_lines(f: &Failure, out: &mut Vec<String>) {
    out.push("error".into());
    out.push(format!("  in {}", f.stage.as_str()));
    out.push(format!("  kind {}", f.kind.as_str()));
    for (i, line) in f.message.lines().enumerate() {
        out.push(format!("  {} {line}", if i == 0 { "message" } else { "       " }));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edit {
    Same,
    Delete,
    Insert,
}

/// A unified-style diff of `expected` (`-`) and `actual` (`+`), with
/// [`CONTEXT`] lines around each change; empty when they are equal.
pub fn diff(expected: &[String], actual: &[String]) -> String {
    let script = edit_script(expected, actual);
    if script.iter().all(|(e, _)| *e == Edit::Same) {
        return String::new();
    }
    // Which script entries to show: changes and their context.
    let mut show = vec![false; script.len()];
    for (i, (edit, _)) in script.iter().enumerate() {
        if *edit != Edit::Same {
            let lo = i.saturating_sub(CONTEXT);
            let hi = (i + CONTEXT + 1).min(script.len());
            show[lo..hi].iter_mut().for_each(|s| *s = true);
        }
    }
    let mut out = String::from("--- expected\n+++ actual\n");
    let mut skipped = 0;
    for (i, (edit, line)) in script.iter().enumerate() {
        if !show[i] {
            skipped += 1;
            continue;
        }
        if skipped > 0 {
            let _ = writeln!(
                out,
                "  ... {skipped} unchanged line{}",
                if skipped == 1 { "" } else { "s" }
            );
            skipped = 0;
        }
        let mark = match edit {
            Edit::Same => ' ',
            Edit::Delete => '-',
            Edit::Insert => '+',
        };
        let _ = writeln!(out, "{mark} {line}");
    }
    if skipped > 0 {
        let _ =
            writeln!(out, "  ... {skipped} unchanged line{}", if skipped == 1 { "" } else { "s" });
    }
    out
}

/// The shortest edit script by longest common subsequence. Quadratic, but
/// plans are at most a few hundred lines.
fn edit_script<'a>(a: &'a [String], b: &'a [String]) -> Vec<(Edit, &'a str)> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut script = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            script.push((Edit::Same, a[i].as_str()));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[at(i, j + 1)] >= lcs[at(i + 1, j)]) {
            script.push((Edit::Insert, b[j].as_str()));
            j += 1;
        } else {
            script.push((Edit::Delete, a[i].as_str()));
            i += 1;
        }
    }
    // Show deletions before insertions within each changed run.
    let mut k = 0;
    while k < script.len() {
        if script[k].0 == Edit::Same {
            k += 1;
            continue;
        }
        let end =
            script[k..].iter().position(|(e, _)| *e == Edit::Same).map_or(script.len(), |p| k + p);
        script[k..end].sort_by_key(|(e, _)| *e == Edit::Insert);
        k = end;
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn equal_is_empty() {
        assert_eq!(diff(&lines(&["a", "b"]), &lines(&["a", "b"])), "");
    }

    #[test]
    fn a_changed_line_shows_as_minus_then_plus_with_context() {
        let a = lines(&["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        let mut b = a.clone();
        b[7] = "eight".into();
        assert_eq!(
            diff(&a, &b),
            "--- expected\n+++ actual\n  ... 4 unchanged lines\n  5\n  6\n  7\n- 8\n+ eight\n  9\n"
        );
    }

    #[test]
    fn a_lowerdir_is_one_line_per_layer() {
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: lines(&["index=off", "lowerdir=/r/2:/r/1"]),
        };
        let mut out = Vec::new();
        mounts_lines(&[m], &mut out);
        assert_eq!(
            out,
            lines(&[
                "mounts",
                "  [0] overlay overlay",
                "      index=off",
                "      lowerdir=",
                "        /r/2",
                "        /r/1"
            ])
        );
    }

    #[test]
    fn steps_read_like_the_wit() {
        assert_eq!(step_text(&Step::Mkdir { name: "work".into(), mode: 0o711 }), "mkdir work 0711");
        assert_eq!(
            step_text(&Step::CopyParent { name: "fs".into(), mode: CopyMode::CloneOrCopy }),
            "copy-parent fs clone-or-copy"
        );
    }
}
