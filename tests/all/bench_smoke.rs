//! `wasmsnap bench` runs its whole workload against a real daemon and
//! prints the table (a smoke test: timings are printed, never asserted).

use crate::common;

use std::process::Command;

use common::{BIN, Daemon};

#[test]
fn bench_prints_a_table_for_a_small_workload() {
    let daemon = Daemon::start();
    let floor_dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "bench",
            "--snapshotter",
            "overlay",
            "--depth",
            "3",
            "--runs",
            "1",
            "--workers",
            "2",
            "--churn",
            "2",
        ])
        .arg("--address")
        .arg(&daemon.socket)
        .arg("--dir")
        .arg(floor_dir.path())
        .output()
        .expect("run wasmsnap bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wasmsnap bench failed ({}):\n{stdout}\n{stderr}\ndaemon log:\n{}",
        out.status,
        daemon.logs()
    );
    println!("{stdout}");
    for row in [
        "prepare+commit (chain)",
        "stat (every layer)",
        "list all",
        "view on top",
        "mounts (views)",
        "remove views",
        "churn prepare+remove",
        "remove chain",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{stdout}"));
        // Every row of this run has numbers: a count, then ops/s.
        let fields: Vec<&str> = line[row.len()..].split_whitespace().collect();
        assert!(
            fields[0].parse::<usize>().is_ok_and(|n| n > 0),
            "row {row:?} has no count: {line}"
        );
        assert!(fields[2].parse::<f64>().is_ok(), "row {row:?} has no ops/s: {line}");
    }
    // The workload removed everything it made (Cleanup ran after it).
    let left: Vec<_> = std::fs::read_dir(daemon.snapshots_dir("overlay")).unwrap().collect();
    assert!(left.is_empty(), "snapshot dirs left behind: {left:?}");
}
