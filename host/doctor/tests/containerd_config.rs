//! `wasmsnap doctor --containerd-config`: real containerd config files,
//! correct ones and one per mistake, checked against a daemon that serves
//! `overlay`, `bind` and `wasmsnap-native`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use wasmsnap_doctor::{Report, Served, Status, check_containerd_config};

fn served() -> Served {
    Served {
        root: "/var/lib/wasmsnap".into(),
        address: "/run/wasmsnap/wasmsnap.sock".into(),
        snapshotters: ["overlay", "bind", "wasmsnap-native"]
            .into_iter()
            .map(|n| (n.to_string(), BTreeSet::new()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs").join(name)
}

fn check(name: &str, version: Option<&str>, served: &Served) -> Report {
    let mut report = Report::default();
    check_containerd_config(&file(name), version, served, &mut report);
    report
}

/// The status of the one check called `name`.
fn status(report: &Report, name: &str) -> Status {
    let found: Vec<_> = report.checks.iter().filter(|c| c.name == name).collect();
    assert_eq!(found.len(), 1, "one check {name} in:\n{}", report.to_text());
    found[0].status
}

#[test]
fn correct_configs_pass() {
    for (name, version) in
        [("v2-good.toml", "1.7.24"), ("v2-good.toml", "2.1.0"), ("v3-good.toml", "2.1")]
    {
        let report = check(name, Some(version), &served());
        let text = report.to_text();
        // v2 on containerd 2.x has no unpack_config: the CRI proxy fails, as it should.
        if name == "v2-good.toml" && version.starts_with('2') {
            assert_eq!(
                status(&report, "containerd.transfer.unpack_config.overlay"),
                Status::Fail,
                "{text}"
            );
            continue;
        }
        assert_eq!(report.worst(), Status::Ok, "{name} on {version}:\n{text}");
        assert_eq!(status(&report, "containerd.proxy_plugins.overlay"), Status::Ok);
        assert_eq!(status(&report, "containerd.cri.snapshotter"), Status::Ok);
        assert_eq!(status(&report, "containerd.cri.runtime.sandboxed"), Status::Ok, "{text}");
    }
    // Another proxy on another socket is left alone.
    let report = check("v2-good.toml", Some("1.7.24"), &served());
    assert!(report.to_text().contains("stargz: another proxy snapshotter"), "{}", report.to_text());
}

#[test]
fn a_proxy_called_native_fails() {
    let report = check("v2-native.toml", Some("1.6.20"), &served());
    assert_eq!(
        status(&report, "containerd.proxy_plugins.native"),
        Status::Fail,
        "{}",
        report.to_text()
    );
    assert_eq!(status(&report, "containerd.proxy_plugins.overlay"), Status::Ok);
}

#[test]
fn a_proxy_name_wasmsnap_does_not_serve_fails() {
    let report = check("v2-unserved.toml", Some("1.6.20"), &served());
    let text = report.to_text();
    assert_eq!(status(&report, "containerd.proxy_plugins.wasmsnap"), Status::Fail, "{text}");
    assert!(text.contains("bind, overlay, wasmsnap-native"), "names what is served:\n{text}");
    assert_eq!(status(&report, "containerd.cri.snapshotter"), Status::Fail, "{text}");
}

#[test]
fn no_proxy_on_our_socket_fails() {
    let report = check("v2-none.toml", Some("1.6.20"), &served());
    assert_eq!(status(&report, "containerd.proxy_plugins"), Status::Fail, "{}", report.to_text());
    assert_eq!(status(&report, "containerd.cri.snapshotter"), Status::Warn);
}

#[test]
fn capabilities_must_match_the_policy() {
    // Declared but not supported (today no policy supports any).
    let report = check("v3-capabilities.toml", None, &served());
    let text = report.to_text();
    assert_eq!(
        status(&report, "containerd.proxy_plugins.overlay.capabilities"),
        Status::Fail,
        "{text}"
    );
    // Supported but not declared: a warning.
    let mut with_rebase = served();
    with_rebase.snapshotters.get_mut("overlay").unwrap().insert("rebase".into());
    let report = check("v3-good.toml", None, &with_rebase);
    assert_eq!(status(&report, "containerd.proxy_plugins.overlay.capabilities"), Status::Warn);
    // Declared and supported.
    with_rebase.snapshotters.get_mut("overlay").unwrap().insert("remap-ids".into());
    let report = check("v3-capabilities.toml", None, &with_rebase);
    assert_eq!(status(&report, "containerd.proxy_plugins.overlay.capabilities"), Status::Ok);
}

#[test]
fn unpack_config_must_list_the_cri_proxy_on_containerd_2() {
    let report = check("v3-no-unpack.toml", None, &served());
    let fail = report.find("containerd.transfer.unpack_config.overlay");
    assert_eq!(fail.len(), 1, "{}", report.to_text());
    assert_eq!(fail[0].status, Status::Fail);
    assert!(fail[0].fix.as_deref().unwrap().contains("snapshotter = \"overlay\""));
    // containerd 1.x has no transfer service to configure.
    let report = check("v2-good.toml", Some("1.6.20"), &served());
    assert_eq!(status(&report, "containerd.transfer.unpack_config"), Status::Ok);
}

#[test]
fn missing_exports_root_warns() {
    let report = check("v3-no-exports.toml", None, &served());
    assert_eq!(status(&report, "containerd.proxy_plugins.overlay.exports"), Status::Warn);
    assert_eq!(report.worst(), Status::Warn, "{}", report.to_text());
}

#[test]
fn cri_names_must_be_proxies_or_containerds_own() {
    let report = check("v3-cri-names.toml", None, &served());
    let text = report.to_text();
    // Served by wasmsnap but no proxy entry for it.
    assert_eq!(status(&report, "containerd.cri.snapshotter"), Status::Fail, "{text}");
    // A name nobody has.
    assert_eq!(status(&report, "containerd.cri.runtime.kata"), Status::Fail, "{text}");
}

#[test]
fn an_unreadable_file_fails_with_the_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config.toml");
    std::fs::write(&bad, "version = 2\n[proxy_plugins\n").unwrap();
    let mut report = Report::default();
    check_containerd_config(&bad, None, &served(), &mut report);
    assert_eq!(status(&report, "containerd.config"), Status::Fail);
    assert!(report.to_text().contains("line 2"), "{}", report.to_text());
}

/// The version 2 files are ones containerd itself reads (Debian's 1.6),
/// and the `native` mistake is real: containerd panics on it.
#[test]
fn containerd_reads_the_version_2_files() {
    for name in ["v2-good.toml", "v2-native.toml", "v2-unserved.toml", "v2-none.toml"] {
        let out = std::process::Command::new("containerd")
            .args(["--config"])
            .arg(file(name))
            .args(["config", "dump"])
            .output()
            .expect("run containerd (tests/run-all.sh installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if name == "v2-native.toml" {
            assert!(!out.status.success(), "containerd took a proxy called native");
            assert!(stderr.contains("id already registered"), "{stderr}");
            continue;
        }
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("[proxy_plugins"));
    }
}
