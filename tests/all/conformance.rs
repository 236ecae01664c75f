//! containerd's own snapshotter conformance suite (`snapshots/testsuite` from
//! Debian's containerd 1.6 Go sources) against `wasmsnap serve`: every served
//! policy, three runs in a row, each case on a fresh daemon reached through
//! containerd's proxy client. The Go side is `tests/conformance/`; this builds
//! it offline in GOPATH mode and reads `go test -json`.
//!
//! A second test runs the same harness against containerd's own overlayfs and
//! native snapshotters (the peer server in `tests/peer/`): the baseline that
//! shows a failure is wasmsnap's, not the harness's.
//!
//! Needs root and Debian's `golang-go` and `golang-github-containerd-containerd-dev`.
//! Without them it fails and says what to install: a skip would hide a broken CI.
//! By hand: `tests/conformance/run.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Every policy `wasmsnap serve` serves with no config file.
const POLICIES: &[&str] = &["overlay", "native", "bind"];
/// Consecutive runs per policy, so a flaky case cannot pass by luck.
const RUNS: usize = 3;
/// containerd's snapshotters served by the peer, run once each as the baseline.
const PEER_SNAPSHOTTERS: &[&str] = &["overlay", "native"];

/// Where Debian installs Go library sources (`/usr/share/gocode/src/...`).
const DEBIAN_GOCODE: &str = "/usr/share/gocode";
const SUITE_PACKAGE: &str = "wasmsnap/conformance";
const PEER_PACKAGE: &str = "wasmsnap/peer";
/// A failed case shows at most this many of its last output lines.
const CASE_OUTPUT_LINES: usize = 80;
/// Generous: a debug daemon compiles its policies at start and the 128-layer
/// case mounts a deep overlay; `go test` fails the run (not hangs) past it.
const GO_TEST_TIMEOUT: &str = "30m";

/// Each suite run mounts hundreds of snapshots with two cases in parallel;
/// on a 2-core machine the tests here take turns rather than compete.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn wasmsnap_passes_containerds_conformance_suite() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let go = GoWorkspace::prepare();
    let daemon = Path::new(env!("CARGO_BIN_EXE_wasmsnap"));
    let mut report = Report::default();
    for policy in POLICIES {
        for run in 1..=RUNS {
            let label = format!("wasmsnap {policy}, run {run}/{RUNS}");
            go.run_suite(daemon, policy).check(&label, &mut report);
        }
    }
    assert!(
        report.problems.is_empty(),
        "containerd's conformance suite failed against wasmsnap \
         (reproduce: tests/conformance/run.sh suite {} POLICY -v):\n\n{}",
        daemon.display(),
        report.problems.join("\n\n")
    );
}

#[test]
fn containerds_own_snapshotters_pass_the_same_harness() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let go = GoWorkspace::prepare();
    let peer = go.build_peer();
    let mut report = Report::default();
    for name in PEER_SNAPSHOTTERS {
        let label = format!("containerd's {name} (peer)");
        go.run_suite(&peer, name).check(&label, &mut report);
    }
    assert!(
        report.problems.is_empty(),
        "containerd's own snapshotters failed the conformance harness, so the harness \
         (tests/conformance, tests/peer) or the machine is broken, not wasmsnap:\n\n{}",
        report.problems.join("\n\n")
    );
}

/// A GOPATH staged under the target dir: our two Go packages symlinked in,
/// Debian's sources behind them, the build cache beside them. Offline.
struct GoWorkspace {
    staging: PathBuf,
}

impl GoWorkspace {
    fn prepare() -> GoWorkspace {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the conformance suite needs root: it mounts every snapshot it makes"
        );
        match Command::new("go").arg("version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "`go version` failed ({}): {}; install Go: apt-get install golang-go",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("cannot run `go` ({e}); install Go: apt-get install golang-go"),
        }
        let testsuite = Path::new(DEBIAN_GOCODE)
            .join("src/github.com/containerd/containerd/snapshots/testsuite");
        assert!(
            testsuite.is_dir(),
            "containerd's Go sources are missing ({} does not exist); \
             install them: apt-get install golang-github-containerd-containerd-dev",
            testsuite.display()
        );

        let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests")
            .canonicalize()
            .expect("the repository's tests/ directory");
        let staging = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
        let packages = staging.join("src/wasmsnap");
        std::fs::create_dir_all(&packages)
            .unwrap_or_else(|e| panic!("creating {}: {e}", packages.display()));
        for name in ["conformance", "peer"] {
            link(&tests_dir.join(name), &packages.join(name));
        }
        GoWorkspace { staging }
    }

    fn go(&self) -> Command {
        let mut cmd = Command::new("go");
        let gopath = std::env::join_paths([self.staging.as_path(), Path::new(DEBIAN_GOCODE)])
            .expect("GOPATH");
        cmd.current_dir(&self.staging)
            .env("GO111MODULE", "off")
            .env("GOPATH", gopath)
            .env("GOCACHE", self.staging.join("cache"))
            .env("GOFLAGS", "")
            .env("GOPROXY", "off");
        cmd
    }

    fn build_peer(&self) -> PathBuf {
        let peer = self.staging.join("bin/peer");
        let out = self
            .go()
            .arg("build")
            .arg("-o")
            .arg(&peer)
            .arg(PEER_PACKAGE)
            .output()
            .expect("running `go build`");
        assert!(
            out.status.success(),
            "building the peer server ({PEER_PACKAGE}) failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        peer
    }

    /// One full run of the suite, each case against a fresh `daemon serve`.
    fn run_suite(&self, daemon: &Path, snapshotter: &str) -> SuiteRun {
        let started = Instant::now();
        let out = self
            .go()
            .args(["test", "-json", "-count=1", "-timeout", GO_TEST_TIMEOUT])
            .args(["-run", "^TestSnapshotterSuite$", SUITE_PACKAGE])
            .env("WASMSNAP_BIN", daemon)
            .env("WASMSNAP_SNAPSHOTTER", snapshotter)
            .output()
            .expect("running `go test`");
        SuiteRun::parse(snapshotter, &out.stdout, &out.stderr, out.status, started.elapsed())
    }
}

/// Points `link` at `target`, replacing whatever link was there.
fn link(target: &Path, link: &Path) {
    if std::fs::read_link(link).is_ok_and(|current| current == target) {
        return;
    }
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link).unwrap_or_else(|e| panic!("removing {}: {e}", link.display()));
    }
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("linking {} -> {}: {e}", link.display(), target.display()));
}

/// One `test2json` event.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Test")]
    test: Option<String>,
    #[serde(rename = "Output")]
    output: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    /// Started but never reported an end: the binary crashed or timed out.
    Unfinished,
    Passed,
    Skipped,
    Failed,
}

/// What went wrong over several runs.
#[derive(Default)]
struct Report {
    problems: Vec<String>,
    /// `snapshotter/case` whose output is already in `problems`: a case
    /// failing in every run is shown once.
    shown: BTreeSet<String>,
}

/// What one `go test` run of the suite did.
struct SuiteRun {
    snapshotter: String,
    /// Case name (the part after `TestSnapshotterSuite/`) to outcome.
    cases: BTreeMap<String, Outcome>,
    /// Output per test name; "" holds the package's own lines.
    output: BTreeMap<String, String>,
    /// Lines that were not JSON (build errors end up here) and stderr.
    other: String,
    status: ExitStatus,
    elapsed: Duration,
}

impl SuiteRun {
    fn parse(
        snapshotter: &str,
        stdout: &[u8],
        stderr: &[u8],
        status: ExitStatus,
        elapsed: Duration,
    ) -> SuiteRun {
        let mut run = SuiteRun {
            snapshotter: snapshotter.to_string(),
            cases: BTreeMap::new(),
            output: BTreeMap::new(),
            other: String::from_utf8_lossy(stderr).into_owned(),
            status,
            elapsed,
        };
        for line in String::from_utf8_lossy(stdout).lines() {
            let Ok(event) = serde_json::from_str::<Event>(line) else {
                run.other.push_str(line);
                run.other.push('\n');
                continue;
            };
            let test = event.test.unwrap_or_default();
            if let Some(text) = event.output {
                run.output.entry(test.clone()).or_default().push_str(&text);
            }
            let Some((_, case)) = test.split_once('/') else {
                continue;
            };
            let outcome = match event.action.as_str() {
                "run" => Outcome::Unfinished,
                "pass" => Outcome::Passed,
                "skip" => Outcome::Skipped,
                "fail" => Outcome::Failed,
                _ => continue,
            };
            run.cases.insert(case.to_string(), outcome);
        }
        run
    }

    fn named(&self, outcome: Outcome) -> Vec<&str> {
        self.cases.iter().filter(|(_, o)| **o == outcome).map(|(name, _)| name.as_str()).collect()
    }

    /// Prints the summary line and adds what went wrong, if anything, to the report.
    fn check(&self, label: &str, report: &mut Report) {
        let passed = self.named(Outcome::Passed);
        let skipped = self.named(Outcome::Skipped);
        let mut failed = self.named(Outcome::Failed);
        failed.extend(self.named(Outcome::Unfinished));
        let summary = format!(
            "conformance, {label}: {} cases run, {} passed, {} skipped [{}], {} failed [{}] in {:.1}s",
            self.cases.len(),
            passed.len(),
            skipped.len(),
            skipped.join(", "),
            failed.len(),
            failed.join(", "),
            self.elapsed.as_secs_f64()
        );
        // Straight to the process's stderr, past the test harness's capture:
        // the summary belongs in every CI log, not only in failed ones.
        let _ = writeln!(std::io::stderr(), "{summary}");

        if self.status.success() && failed.is_empty() && !self.cases.is_empty() {
            return;
        }
        let mut problem = format!("{summary}\ngo test: {}", self.status);
        if self.cases.is_empty() {
            problem.push_str("\nno case ran");
        }
        for case in &failed {
            if !report.shown.insert(format!("{}/{case}", self.snapshotter)) {
                problem.push_str(&format!("\n--- {case}: as in the earlier run above"));
                continue;
            }
            let output = self.output.get(&format!("TestSnapshotterSuite/{case}"));
            problem.push_str(&format!(
                "\n--- {case}:\n{}",
                output.map_or("(no output)".into(), |o| last_lines(o))
            ));
        }
        // The parent test and the package carry setup errors and panics.
        for key in ["TestSnapshotterSuite", ""] {
            if let Some(text) = self.output.get(key) {
                problem.push_str(&format!(
                    "\n--- {}:\n{text}",
                    if key.is_empty() { "package" } else { key }
                ));
            }
        }
        if !self.other.trim().is_empty() {
            problem.push_str(&format!("\n--- other output:\n{}", self.other));
        }
        report.problems.push(problem);
    }
}

/// A case's log without test2json's progress markers and the suite's
/// "unmount DIR" notes (the 128-layer case logs hundreds), cut to its last
/// lines, where the failure is.
fn last_lines(output: &str) -> String {
    let noise = |line: &&str| {
        line.starts_with("=== ") || line.trim_start().starts_with("helpers_unix.go:33: unmount ")
    };
    let lines: Vec<&str> = output.lines().filter(|line| !noise(line)).collect();
    let skip = lines.len().saturating_sub(CASE_OUTPUT_LINES);
    let mut text = String::new();
    if skip > 0 {
        text.push_str(&format!("    ({skip} earlier lines left out; run.sh with -v shows all)\n"));
    }
    for line in &lines[skip..] {
        text.push_str(line);
        text.push('\n');
    }
    text
}
