//! `wasmsnap policy test` and `policy inspect`, run as the real binary on
//! the real components: every built-in policy's case files pass, with and
//! without `--mount` (root: real directories, real mounts); failures say
//! what happened; broken case files name file, line and key; `--update`,
//! `--filter`, `--format json` and `--junit` do what they say; nothing is
//! left mounted or on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is inside the repository")
        .to_path_buf()
}

/// A component that is not built in: one of `wasmsnap-test-artifacts`'
/// path constants, as a string.
fn extra_policy(path: &str) -> String {
    path.to_string()
}

fn wasmsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmsnap"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run wasmsnap")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status 0 and a closing line of `N passed, 0 failed` with N > 0.
fn assert_all_pass(o: &Output) -> usize {
    let out = stdout(o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{}", stderr(o));
    let last = out.lines().last().unwrap_or_default();
    let passed: usize = last
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("closing line {last:?}"));
    assert!(passed > 0, "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    passed
}

/// A scratch base for `--mount` that must be empty again afterwards, with
/// nothing mounted under it.
struct Scratch(tempfile::TempDir);

impl Scratch {
    /// In the temp dir: on this machine's disk, as the daemon's root would be.
    fn on_disk() -> Scratch {
        Scratch(tempfile::tempdir().expect("temp dir"))
    }

    /// In /dev/shm where there is one: the executor's fsyncs cost nothing on
    /// tmpfs, so deep chains set up in milliseconds, not seconds.
    fn new() -> Scratch {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            Scratch(tempfile::tempdir_in(shm).expect("temp dir in /dev/shm"))
        } else {
            Scratch::on_disk()
        }
    }

    fn path(&self) -> &str {
        self.0.path().to_str().expect("UTF-8 temp dir")
    }

    fn assert_clean(&self) {
        let left: Vec<_> =
            std::fs::read_dir(self.0.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(self.path()),
            "left mounted under {}:\n{mountinfo}",
            self.path()
        );
    }
}

fn run_suite(policy: &str, cases: &str) {
    assert_all_pass(&wasmsnap(&["policy", "test", policy, cases]));
}

fn run_suite_mounted(policy: &str, cases: &str) -> String {
    run_suite_mounted_in(Scratch::new(), policy, cases)
}

fn run_suite_mounted_in(scratch: Scratch, policy: &str, cases: &str) -> String {
    let o = wasmsnap(&["policy", "test", "--mount", "--scratch", scratch.path(), policy, cases]);
    assert_all_pass(&o);
    scratch.assert_clean();
    stdout(&o)
}

#[test]
fn overlay_cases_pass() {
    run_suite("builtin:overlay", "plugins/overlay/tests");
}

#[test]
fn native_cases_pass() {
    run_suite("builtin:native", "plugins/native/tests");
}

#[test]
fn bind_cases_pass() {
    run_suite("builtin:bind", "plugins/bind/tests");
}

#[test]
fn example_ephemeral_cases_pass() {
    run_suite(
        &extra_policy(wasmsnap_test_artifacts::EXAMPLE_EPHEMERAL),
        "plugins/examples/ephemeral/tests",
    );
}

#[test]
fn overlay_cases_pass_mounted_for_0_1_2_128_and_500_parents() {
    let out = run_suite_mounted_in(Scratch::on_disk(), "builtin:overlay", "plugins/overlay/tests");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no case {name:?} in\n{out}"))
            .to_string()
    };
    for name in [
        "active without parents",
        "active on one parent",
        "active on two parents",
        "active on 128 parents",
        "active on 500 parents",
        "view of 500 parents",
    ] {
        assert!(line(name).contains("[mounted "), "{name} was not mounted:\n{out}");
    }
    // Past one page of options the overlay goes through fsconfig, a layer at a time.
    assert!(line("active on 500 parents").contains("fsconfig lowerdir+ x500"), "{out}");
    assert!(line("active on two parents").contains("overlay mount(2)"), "{out}");
    assert!(line("active on 500 parents").contains("3/3 checks"), "{out}");
}

#[test]
fn native_cases_pass_mounted() {
    run_suite_mounted("builtin:native", "plugins/native/tests");
}

#[test]
fn bind_cases_pass_mounted() {
    run_suite_mounted("builtin:bind", "plugins/bind/tests");
}

#[test]
fn example_ephemeral_cases_pass_mounted() {
    let out = run_suite_mounted(
        &extra_policy(wasmsnap_test_artifacts::EXAMPLE_EPHEMERAL),
        "plugins/examples/ephemeral/tests",
    );
    assert!(out.contains("fsconfig lowerdir+ x500"), "{out}");
}

#[test]
fn expected_failures_of_a_misbehaving_policy_pass() {
    let policy = extra_policy(wasmsnap_test_artifacts::MISBEHAVE);
    let scratch = Scratch::new();
    assert_all_pass(&wasmsnap(&["policy", "test", &policy, "tests/policies/misbehave/cases"]));
    assert_all_pass(&wasmsnap(&[
        "policy",
        "test",
        "--mount",
        "--scratch",
        scratch.path(),
        &policy,
        "tests/policies/misbehave/cases",
    ]));
    scratch.assert_clean();
}

#[test]
fn each_failure_says_which_of_trap_declared_or_invalid_plan_and_why() {
    let policy = extra_policy(wasmsnap_test_artifacts::MISBEHAVE);
    let scratch = Scratch::new();
    let o = wasmsnap(&[
        "policy",
        "test",
        "--mount",
        "--scratch",
        scratch.path(),
        &policy,
        "tests/policies/misbehave/failing",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.ends_with("0 passed, 5 failed\n"), "{out}");
    // A trap, with the guest's panic message.
    assert!(out.contains("the policy trapped in layout (trap)"), "{out}");
    assert!(out.contains("misbehave: trap in layout of snapshot 3 as asked"), "{out}");
    // A declared error, with its message.
    assert!(out.contains("the policy declared an error in mounts (declared): failed: misbehave: declared failure in mounts"), "{out}");
    // An invalid plan, naming the rule.
    assert!(out.contains("the host refused the policy's plan in mounts (invalid-plan)"), "{out}");
    assert!(out.contains("[foreign-snapshot]"), "{out}");
    // The wrong kind of failure is a failure too.
    assert!(out.contains("it failed, but not as expected: the policy trapped in mounts"), "{out}");
    // A plan that differs shows the difference, option by option.
    assert!(out.contains("-       ro\n        +       rw\n"), "{out}");
    // The mounted check of a plan that ignores its parents fails, naming them.
    assert!(out.contains("mount check failed: every layer visible: missing layers: 2, 1"), "{out}");
    scratch.assert_clean();
}

#[test]
fn a_plan_the_kernel_refuses_fails_the_case_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "refused.toml",
        "[[case]]\nname = \"an option overlayfs does not know\"\nkind = \"active\"\nparents = 3\nconfig = { mount_options = \"no_such_overlay_option\" }\n\n[case.expect]\nlayout = { steps = [{ mkdir = \"fs\", mode = \"0755\" }, { mkdir = \"work\", mode = \"0711\" }, { chown-like-parent = \"fs\" }], content = \"fs\" }\n",
    );
    // Without --mount the plan is what the case expects.
    assert_all_pass(&wasmsnap(&["policy", "test", "builtin:overlay", &file]));
    let scratch = Scratch::new();
    let o = wasmsnap(&[
        "policy",
        "test",
        "--mount",
        "--scratch",
        scratch.path(),
        "builtin:overlay",
        &file,
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("[mount failed]"), "{out}");
    assert!(out.contains("mounting the plan failed"), "{out}");
    // The kernel's own reason, not a bare EINVAL.
    assert!(out.contains("[kernel: overlay: Unknown parameter 'no_such_overlay_option'"), "{out}");
    scratch.assert_clean();
}

#[test]
fn a_component_of_another_contract_version_is_told_apart() {
    // Built by wasmsnap-test-artifacts against wasmsnap:policy@0.3.0.
    let policy = extra_policy(wasmsnap_test_artifacts::WRONG_VERSION);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "version.toml",
        "[[case]]\nname = \"refused at load\"\nkind = \"active\"\n[case.expect.error]\nin = \"init\"\nkind = \"version\"\ncontains = \"built for wasmsnap:policy@0.3.0, but this host supports wasmsnap:policy@0.1.0, 0.2.0\"\n",
    );
    assert_all_pass(&wasmsnap(&["policy", "test", &policy, &file]));
    let o = wasmsnap(&["policy", "inspect", &policy]);
    assert!(stdout(&o).contains("contract: wasmsnap:policy@0.3.0 (NOT supported: this host supports wasmsnap:policy@0.1.0, 0.2.0)"), "{}", stdout(&o));
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_broken_case_file_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "broken.toml",
        "[[case]]\nname = \"a\"\nkind = \"active\"\nparents = 1\n\n[[case]]\nname = \"b\"\nkind = \"active\"\nparents = \"three\"\n",
    );
    let o = wasmsnap(&["policy", "test", "builtin:overlay", &file]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "{file}:9:1: key `case[1].parents`: expected a parent count or a list of parent ids"
        )),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty(), "no case ran: {}", stdout(&o));

    let syntax = write(dir.path(), "syntax.toml", "[[case]]\nname = \"a\nkind = \"view\"\n");
    let o = wasmsnap(&["policy", "test", "builtin:overlay", &syntax]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("{syntax}:2:")), "{}", stderr(&o));

    let unknown = write(
        dir.path(),
        "unknown.toml",
        "[[case]]\nname = \"a\"\nkind = \"view\"\n[case.expect]\nlayuot = {}\n",
    );
    let o = wasmsnap(&["policy", "test", "builtin:overlay", &unknown]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!(
            "{unknown}:5:1: key `case[0].expect.layuot`: unknown field `layuot`"
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn update_records_the_actual_plans_and_keeps_the_rest_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = "# my cases\n[[case]]\nname = \"new\" # a comment\nkind = \"active\"\nparents = 2\n\n[[case]]\nname = \"stale\"\nkind = \"view\"\nparents = 1\n\n[[case.expect.mounts]]\ntype = \"bind\"\nsource = \"/nowhere\"\noptions = []\n";
    let file = write(dir.path(), "cases.toml", text);
    let before = wasmsnap(&["policy", "test", "builtin:overlay", &file]);
    assert_eq!(before.status.code(), Some(1), "{}", stdout(&before));
    assert!(stdout(&before).contains("the case has no expectation yet"), "{}", stdout(&before));

    let updated = wasmsnap(&["policy", "test", "--update", "builtin:overlay", &file]);
    assert_eq!(updated.status.code(), Some(0), "{}", stdout(&updated));
    assert!(stdout(&updated).ends_with("0 passed, 0 failed, 2 updated\n"), "{}", stdout(&updated));
    let rewritten = std::fs::read_to_string(&file).unwrap();
    assert!(
        rewritten.starts_with("# my cases\n[[case]]\nname = \"new\" # a comment\n"),
        "{rewritten}"
    );
    assert!(
        rewritten.contains("\"upperdir=/var/lib/wasmsnap/overlay/snapshots/3/fs\""),
        "{rewritten}"
    );
    assert!(
        rewritten.contains("source = \"/var/lib/wasmsnap/overlay/snapshots/1/fs\""),
        "{rewritten}"
    );
    // The stale case checked mounts only, and still does.
    let stale = &rewritten[rewritten.find("name = \"stale\"").unwrap()..];
    assert!(!stale.contains("[case.expect.layout]"), "{rewritten}");

    assert_eq!(assert_all_pass(&wasmsnap(&["policy", "test", "builtin:overlay", &file])), 2);
}

#[test]
fn filter_selects_cases_by_file_and_name() {
    let o = wasmsnap(&[
        "policy",
        "test",
        "--filter",
        "overlay.toml::view of",
        "builtin:overlay",
        "plugins/overlay/tests",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    // "view of one parent" and "view of two parents", not "view without parents".
    assert_eq!(out.lines().filter(|l| l.starts_with("PASS")).count(), 2, "{out}");
    assert!(
        out.lines().last().unwrap().starts_with("2 passed, 0 failed, 20 filtered out"),
        "{out}"
    );
    let o =
        wasmsnap(&["policy", "test", "--filter", "(", "builtin:overlay", "plugins/overlay/tests"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--filter \"(\" is not a valid regex"), "{}", stderr(&o));
}

#[test]
fn json_and_junit_reports() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let policy = extra_policy(wasmsnap_test_artifacts::MISBEHAVE);
    let o = wasmsnap(&[
        "policy",
        "test",
        "--format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
        &policy,
        "tests/policies/misbehave",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON document");
    assert_eq!(report["failed"], 5);
    assert_eq!(report["passed"], 8);
    let sha = &report["sha256"];
    assert_eq!(sha.as_str().unwrap().len(), 64);
    let cases = report["cases"].as_array().unwrap();
    let trap = cases.iter().find(|c| c["name"] == "expects a plan, the policy traps").unwrap();
    assert_eq!(trap["status"], "fail");
    assert_eq!(trap["failure"]["kind"], "trap");
    assert_eq!(trap["failure"]["in"], "layout");
    assert!(trap["diff"].as_str().unwrap().contains("+   kind trap"));
    let good = cases.iter().find(|c| c["name"] == "behaves without the label").unwrap();
    assert_eq!(good["status"], "pass");
    assert_eq!(good["actual"]["mounts"][0]["type"], "bind");

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("tests=\"13\" failures=\"5\""), "{xml}");
    assert!(xml.contains("<failure message=\"the policy trapped in layout (trap)"), "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 2, "{xml}");
}

#[test]
fn inspect_shows_contract_exports_size_and_sha256() {
    let o = wasmsnap(&["policy", "inspect", "builtin:overlay"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("contract: wasmsnap:policy@0.2.0 (supported)"), "{out}");
    assert!(out.contains("wasmsnap:policy/policy@0.2.0 (instance): init, layout, mounts"), "{out}");
    assert!(out.contains("containerd: capabilities = [\"rebase\", \"remap-ids\"]"), "{out}");

    let path = extra_policy(wasmsnap_test_artifacts::EXAMPLE_EPHEMERAL);
    let o = wasmsnap(&["policy", "inspect", "--format", "json", &path]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(json["size"], bytes.len());
    use sha2::Digest;
    assert_eq!(json["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(json["wit_package"], "wasmsnap:policy@0.2.0");
    assert_eq!(json["supported"], true);
    // The example declares no capabilities; its 0.1 build is still supported.
    assert_eq!(json["capabilities"], serde_json::json!([]));
    let o =
        wasmsnap(&["policy", "inspect", "--format", "json", wasmsnap_test_artifacts::EXAMPLE_V0_1]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(json["wit_package"], "wasmsnap:policy@0.1.0");
    assert_eq!(json["supported"], true);
    assert_eq!(json["capabilities"], serde_json::json!([]));

    let o = wasmsnap(&["policy", "inspect", "Cargo.toml"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not a valid component"), "{}", stderr(&o));
}

#[test]
fn inspect_tries_the_link_and_names_an_import_the_sandbox_lacks() {
    // The overlay policy with one WASI import renamed (everywhere, so the
    // component stays valid): it compiles, but the daemon cannot link it.
    let bytes = wasmsnap_engine::builtin("overlay").unwrap();
    let (from, to) = (b"wasi:cli/environment@0.2.6", b"wasi:cli/environmenz@0.2.6");
    let mut patched = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            patched.extend_from_slice(to);
            i += from.len();
        } else {
            patched.push(bytes[i]);
            i += 1;
        }
    }
    assert_ne!(patched, bytes, "the import to rename is not there");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "unlinkable.wasm", "");
    std::fs::write(&path, &patched).unwrap();

    let o = wasmsnap(&["policy", "inspect", &path]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.contains("(supported)"), "{out}");
    assert!(
        out.contains(
            "contract: wasmsnap:policy@0.2.0 (NOT loadable: cannot link it into the sandbox"
        ),
        "{out}"
    );
    assert!(out.contains("wasi:cli/environmenz@0.2.6"), "{out}");
    let o = wasmsnap(&["policy", "inspect", "--format", "json", &path]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(json["link_error"].as_str().unwrap().contains("wasi:cli/environmenz@0.2.6"), "{json}");
    // The load says the same.
    let file = write(
        dir.path(),
        "c.toml",
        "[[case]]\nname = \"x\"\nkind = \"active\"\n[case.expect.error]\nkind = \"load\"\ncontains = \"wasi:cli/environmenz@0.2.6\"\n",
    );
    assert_all_pass(&wasmsnap(&["policy", "test", &path, &file]));
}

#[test]
fn init_is_timed_apart_from_the_calls() {
    // init spins until its 1 s deadline: the case line must say so.
    let policy = extra_policy(wasmsnap_test_artifacts::HOSTILE);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "slow.toml",
        "[[case]]\nname = \"init spins\"\nkind = \"active\"\nconfig = { do = \"loop\", in = \"init\" }\n[case.expect.error]\nin = \"init\"\nkind = \"timeout\"\ncontains = \"time limit\"\n\n[[case]]\nname = \"same config, init not run again\"\nkind = \"view\"\nconfig = { do = \"loop\", in = \"init\" }\n[case.expect.error]\nin = \"init\"\ncontains = \"time limit\"\n",
    );
    let o = wasmsnap(&["policy", "test", &policy, &file]);
    let out = stdout(&o);
    assert_all_pass(&o);
    let first = out.lines().find(|l| l.contains("init spins")).unwrap();
    let init_ms: f64 = first
        .split("; init ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no init time in {first:?}"));
    assert!(init_ms >= 900.0, "{first}");
    let second = out.lines().find(|l| l.contains("not run again")).unwrap();
    assert!(!second.contains("; init "), "{second}");

    let o = wasmsnap(&["policy", "test", "--format", "json", &policy, &file]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["cases"][0]["init_ms"].as_f64().unwrap() >= 900.0, "{report}");
    assert!(report["cases"][1].get("init_ms").is_none(), "{report}");
}

#[test]
fn plan_takes_every_kind_and_modes_read_as_in_case_files() {
    for kind in ["active", "view", "committed"] {
        let o =
            wasmsnap(&["policy", "plan", "builtin:overlay", "--kind", kind, "--parents", "2,1"]);
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(plan["snapshot"]["kind"], kind);
    }
    let o = wasmsnap(&[
        "policy",
        "plan",
        "builtin:overlay",
        "--kind",
        "active",
        "--parents",
        "1",
        "--root",
        "/srv/ws",
        "--snapshotter",
        "fast",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["layout"]["steps"][0]["mode"], "0755", "{plan}");
    assert_eq!(plan["layout"]["steps"][1]["mode"], "0711", "{plan}");
    let options = plan["mounts"][0]["options"].to_string();
    assert!(options.contains("upperdir=/srv/ws/fast/snapshots/2/fs"), "{options}");
    // And in a case's JSON report.
    let o = wasmsnap(&[
        "policy",
        "test",
        "--format",
        "json",
        "builtin:overlay",
        "plugins/overlay/tests/overlay.toml",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = report.to_string();
    assert!(text.contains("\"mode\":\"0755\"") && !text.contains("\"mode\":493"), "{text:.2000}");
}

/// `--parents` is a chain, as the daemon's and the case files' are: an id
/// twice, or the snapshot's own, is refused by name before any policy runs.
#[test]
fn plan_refuses_parents_that_are_not_a_chain() {
    for (args, says) in [
        (&["--parents", "2,2,1"][..], "parent id 2 is listed twice"),
        (&["--parents", "3,2", "--id", "2"][..], "id 2 is also one of the parents"),
    ] {
        let mut argv = vec!["policy", "plan", "builtin:overlay", "--kind", "active"];
        argv.extend_from_slice(args);
        let o = wasmsnap(&argv);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_plan_the_kernel_would_refuse_is_refused_by_name() {
    let policy = extra_policy(wasmsnap_test_artifacts::BAD_PLANS);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "refused.toml",
        "[defaults]\nkind = \"view\"\nparents = 2\n\n[[case]]\nname = \"one read-only lower\"\nconfig = { case = \"single-lower\" }\n[case.expect.error]\nkind = \"invalid-plan\"\ncontains = \"[overlay-single-lower]\"\n\n[[case]]\nname = \"a directory the layout does not make\"\nkind = \"active\"\nconfig = { case = \"unmade-dir\" }\n[case.expect.error]\nin = \"mounts\"\nkind = \"invalid-plan\"\ncontains = \"[own-dir-not-created]\"\n",
    );
    let o = wasmsnap(&["policy", "test", "--format", "json", &policy, &file]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["passed"], 2, "{report}");
    let message = report["cases"][0]["failure"]["message"].as_str().unwrap();
    assert!(message.contains("mount that layer as a read-only bind"), "{message}");
}

/// A policy's 3 MiB error message with terminal escapes (issue 17 item 7,
/// issue 13 item 8): the harness's text, JSON and JUnit output carry it
/// escaped and cut to 1 KiB, so the report stays small and the terminal
/// clean. Before, a 40 MB message made a 40 MB diff and a 170 MB JSON report.
#[test]
fn a_huge_hostile_error_message_is_capped_in_every_report() {
    let policy = extra_policy(wasmsnap_test_artifacts::HOSTILE);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "huge.toml",
        "[[case]]\nname = \"expects a plan, the policy declares a huge error\"\nkind = \"active\"\nparents = 1\nlabels = { \"containerd.io/snapshot/wasmsnap-test.do\" = \"declare-huge\" }\n\n[case.expect.layout]\nsteps = [{ mkdir = \"fs\", mode = \"0755\" }]\ncontent = \"fs\"\n",
    );
    let junit = dir.path().join("junit.xml");
    for format in ["text", "json"] {
        let o = wasmsnap(&[
            "policy",
            "test",
            "--format",
            format,
            "--junit",
            junit.to_str().unwrap(),
            &policy,
            &file,
        ]);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(1), "{format}: {}", &out[..out.len().min(4000)]);
        assert!(out.len() < 16 << 10, "{format}: a report of {} bytes", out.len());
        assert!(!out.contains('\u{1b}'), "{format}: a raw escape reached the report");
        assert!(out.contains("(truncated, 3145778 bytes)"), "{format}: {out}");
        let xml = std::fs::read_to_string(&junit).unwrap();
        assert!(xml.len() < 16 << 10 && !xml.contains('\u{1b}'), "junit: {} bytes", xml.len());
    }
}
