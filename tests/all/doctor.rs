//! `wasmsnap doctor` as the real binary, against a running daemon: the
//! socket checks, the policies loaded for their capabilities, containerd's
//! config, `--format json` and the exit status.

use std::path::Path;
use std::process::Command;

use crate::common::{self, Daemon};

fn doctor(args: &[&str]) -> (bool, serde_json::Value) {
    let out = Command::new(common::bin())
        .arg("doctor")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json)
}

fn status<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    let checks = report["checks"].as_array().unwrap();
    let found: Vec<_> = checks.iter().filter(|c| c["name"] == name).collect();
    assert_eq!(found.len(), 1, "one check {name} in {report:#}");
    found[0]["status"].as_str().unwrap()
}

#[test]
fn doctor_checks_a_running_daemon_and_containerds_config() {
    let mut daemon = Daemon::start();
    let (root, socket) = (daemon.root.display().to_string(), daemon.socket.display().to_string());
    let (root, socket) = (root.as_str(), socket.as_str());
    let containerd = daemon.dir.path().join("containerd.toml");
    std::fs::write(
        &containerd,
        format!(
            "version = 3\n[proxy_plugins.overlay]\n  type = \"snapshot\"\n  capabilities = [\"rebase\", \"remap-ids\"]\n  address = \"{socket}\"\n  exports = {{ root = \"{root}/overlay\" }}\n\
             [plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlay'\n\
             [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]\n  platform = 'linux/amd64'\n  snapshotter = 'overlay'\n"
        ),
    )
    .unwrap();
    let args =
        ["--root", root, "--address", socket, "--containerd-config", containerd.to_str().unwrap()];
    let (ok, report) = doctor(&args);
    assert!(ok, "{report:#}");
    assert_eq!(status(&report, "socket.reachable"), "ok");
    assert_eq!(status(&report, "socket.permissions"), "ok");
    assert_eq!(status(&report, "wasmsnap.policy.overlay"), "ok");
    assert_eq!(status(&report, "containerd.proxy_plugins.overlay"), "ok");
    assert_eq!(status(&report, "containerd.transfer.unpack_config.overlay"), "ok");
    assert_eq!(report["summary"]["fail"], 0);

    assert_eq!(status(&report, "containerd.proxy_plugins.overlay.capabilities"), "ok");

    // A mistake fails the run: a capability the policy does not have (a typo).
    let text = std::fs::read_to_string(&containerd).unwrap();
    std::fs::write(
        &containerd,
        text.replace("[\"rebase\", \"remap-ids\"]", "[\"rebase\", \"remap-id\"]"),
    )
    .unwrap();
    let (ok, report) = doctor(&args);
    assert!(!ok);
    assert_eq!(status(&report, "containerd.proxy_plugins.overlay.capabilities"), "fail");

    // The daemon gone: its socket fails.
    daemon.stop();
    let (ok, report) = doctor(&args);
    assert!(!ok);
    assert_eq!(status(&report, "socket.reachable"), "fail");
}

/// The example configs in deploy/ pass together (containerd 1.6, as Debian's).
#[test]
fn the_deploy_examples_agree() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let (_, report) = doctor(&[
        "--config",
        deploy.join("wasmsnap.toml").to_str().unwrap(),
        "--containerd-config",
        deploy.join("containerd-config.toml").to_str().unwrap(),
        "--containerd-version",
        "1.6.20",
    ]);
    let containerd_fails: Vec<_> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("containerd.") && c["status"] == "fail")
        .collect();
    assert!(containerd_fails.is_empty(), "{report:#}");
    assert_eq!(status(&report, "containerd.cri.snapshotter"), "ok");
    assert_eq!(status(&report, "wasmsnap.config"), "ok");
}
