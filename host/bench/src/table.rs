//! The printed tables.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::stats::Summary;
use super::workload::Op;

/// A target's medians, by operation.
pub type Medians = BTreeMap<Op, Summary>;

/// A table of ops/s, p50 and p99 per operation for each column, then the
/// ratios: the first column's ops/s over each other column's ("x <title>", above 1 =
/// faster) and the floor's ops/s over the first's ("x floor", 1 = at the
/// floor, below 1 = faster than the bare loop).
pub fn render(columns: &[(&str, &Medians)], floor: Option<&Medians>) -> String {
    let mut out = String::new();
    // Two header lines: the targets, then the figures under each.
    let _ = write!(out, "{:<30}", "");
    for c in columns {
        let _ = write!(out, " | {:^26}", c.0);
    }
    if floor.is_some() {
        let _ = write!(out, " | {:^17}", "floor");
    }
    for c in columns.iter().skip(1) {
        let _ = write!(out, " | {:>7}", format!("x {}", short(c.0)));
    }
    if floor.is_some() {
        let _ = write!(out, " | {:>7}", "x floor");
    }
    let _ = write!(out, "\n{:<24}{:>6}", "operation", "n");
    for _ in columns {
        let _ = write!(out, " | {:>8} {:>8} {:>8}", "ops/s", "p50", "p99");
    }
    if floor.is_some() {
        let _ = write!(out, " | {:>8} {:>8}", "ops/s", "p50");
    }
    for _ in columns.iter().skip(1) {
        let _ = write!(out, " | {:>7}", "");
    }
    if floor.is_some() {
        let _ = write!(out, " | {:>7}", "");
    }
    out.push('\n');
    for op in Op::ALL {
        let cells: Vec<Option<Summary>> = columns.iter().map(|c| c.1.get(&op).copied()).collect();
        let n = cells.iter().flatten().next().map(|s| s.count).unwrap_or(0);
        let _ = write!(out, "{:<24}{:>6}", op.label(), n);
        for cell in &cells {
            let _ = match cell {
                Some(s) => write!(
                    out,
                    " | {:>8} {:>8} {:>8}",
                    rate(s.ops_per_sec),
                    time(s.p50),
                    time(s.p99)
                ),
                None => write!(out, " | {:>26}", "-"),
            };
        }
        let floor_cell = floor.and_then(|f| f.get(&op).copied());
        if floor.is_some() {
            let _ = match floor_cell {
                Some(s) => write!(out, " | {:>8} {:>8}", rate(s.ops_per_sec), time(s.p50)),
                None => write!(out, " | {:>17}", "-"),
            };
        }
        for other in cells.iter().skip(1) {
            let _ = write!(out, " | {:>7}", ratio(cells[0], *other));
        }
        if floor.is_some() {
            let _ = write!(out, " | {:>7}", ratio(floor_cell, cells.first().copied().flatten()));
        }
        out.push('\n');
    }
    out
}

/// `a`'s ops/s over `b`'s.
fn ratio(a: Option<Summary>, b: Option<Summary>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.ops_per_sec > 0.0 => {
            format!("{:.2}", a.ops_per_sec / b.ops_per_sec)
        }
        _ => "-".into(),
    }
}

/// A column title cut to fit a ratio header.
fn short(title: &str) -> &str {
    match title {
        "containerd" => "ctrd",
        "baseline" => "base",
        t => t.get(..5).unwrap_or(t),
    }
}

fn rate(per_sec: f64) -> String {
    if per_sec >= 100.0 { format!("{per_sec:.0}") } else { format!("{per_sec:.1}") }
}

fn time(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 { format!("{us:.0}µs") } else { format!("{:.2}ms", us / 1000.0) }
}
