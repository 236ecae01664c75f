//! `wasmsnap bench` runs its whole workload against a real daemon and
//! prints the table (a smoke test: timings are printed, never asserted),
//! once with its own Rust client and once through containerd's Go proxy
//! client (`--go-client`, tests/goclient), then the daemon's flushes per
//! operation, counted with strace.
//!
//! The Go client is built as the conformance tests build theirs: offline in
//! GOPATH mode from Debian's `golang-go` and
//! `golang-github-containerd-containerd-dev`, in the same staging GOPATH
//! and cache. Without them it fails and says what to install (a skip would
//! hide a broken CI).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{BIN, Daemon};

#[test]
fn bench_prints_a_table_for_a_small_workload() {
    let stdout = bench_against_a_daemon(&[]);
    assert!(stdout.contains("client: wasmsnap's Rust client"), "no client line in:\n{stdout}");
}

#[test]
fn bench_through_containerds_go_client_prints_every_row() {
    let goclient = build_goclient();
    let stdout = bench_against_a_daemon(&["--go-client".as_ref(), goclient.as_os_str()]);
    assert!(
        stdout.contains("client: containerd's Go proxy client"),
        "no client line in:\n{stdout}"
    );
}

/// Runs the depth-3 workload against a fresh daemon, checks every row has
/// figures and nothing is left behind, and returns what bench printed.
fn bench_against_a_daemon(extra: &[&std::ffi::OsStr]) -> String {
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
        .args(extra)
        .output()
        .expect("run wasmsnap bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
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
        "  prepare",
        "  commit",
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
    check_flush_table(&stdout, &daemon.root);
    // The workload removed everything it made (Cleanup ran after it).
    let left: Vec<_> = std::fs::read_dir(daemon.snapshots_dir("overlay")).unwrap().collect();
    assert!(left.is_empty(), "snapshot dirs left behind: {left:?}");
    stdout
}

/// Builds tests/goclient with `tests/conformance/run.sh goclient` (which
/// checks for Go and containerd's sources and names the packages to
/// install) in the conformance tests' staging GOPATH, so the cache is shared.
fn build_goclient() -> PathBuf {
    let run_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance/run.sh");
    let staging = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    let out = Command::new("sh")
        .arg(&run_sh)
        .arg("goclient")
        .env("GO_STAGING", &staging)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", run_sh.display()));
    assert!(
        out.status.success(),
        "building the Go client (tests/goclient) with {} failed ({}):\n{}{}",
        run_sh.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let built = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(built.is_file(), "{} printed {built:?}, which is not a file", run_sh.display());
    built
}

/// With strace installed, the flush table has a prepare+commit and a remove
/// row for the daemon; where its root is on a disk (not tmpfs), a
/// prepare+commit makes at least one flush: its record's commit.
fn check_flush_table(stdout: &str, root: &Path) {
    let strace_missing = Command::new("strace").arg("-V").output().is_err();
    if strace_missing {
        assert!(
            stdout.contains("flush count skipped: strace is not installed"),
            "no line saying the flush count was skipped:\n{stdout}"
        );
        return;
    }
    let flushes_per_op = |operation: &str| -> f64 {
        let line = stdout
            .lines()
            .skip_while(|l| !l.starts_with("flushes per operation"))
            .find(|l| l.split_whitespace().take(3).eq(["target", "overlay", operation]))
            .unwrap_or_else(|| panic!("no {operation} row in the flush table:\n{stdout}"));
        let figure = line.split_whitespace().nth(4).unwrap_or_default();
        figure.parse().unwrap_or_else(|_| panic!("no flushes/op in {line:?}"))
    };
    let per_prepare_commit = flushes_per_op("prepare+commit");
    assert!(flushes_per_op("remove") >= 0.0);
    let fs_type = filesystem_type(root);
    if fs_type.as_deref() != Some("tmpfs") {
        assert!(
            per_prepare_commit > 0.0,
            "no flush per prepare+commit on {fs_type:?} at {}:\n{stdout}",
            root.display()
        );
    }
    // The flush floor (docs/crash-safety.md, "Power loss"): one redb commit
    // each for the Prepare and the Commit, no directory fsync (containerd's
    // bolt makes 4).
    assert!(
        per_prepare_commit <= 2.0,
        "{per_prepare_commit} flushes per prepare+commit on {fs_type:?}, more than the 2 of the records:\n{stdout}"
    );
}

/// The file system type `findmnt` reports for `path`, if it runs.
fn filesystem_type(path: &Path) -> Option<String> {
    let out = Command::new("findmnt").args(["-no", "FSTYPE", "-T"]).arg(path).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
