//! Readiness you can rely on (docs/operating.md, "Readiness and systemd"):
//! the socket file appears only when it accepts, even with many daemons
//! starting at once on a loaded machine, and systemd hears READY, RELOADING
//! and STOPPING at the right moments on a real `NOTIFY_SOCKET`.

use crate::common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const DAEMONS: usize = 32;
const ROUNDS: usize = 5;
const START_LIMIT: Duration = Duration::from_secs(240);

/// `wasmsnap serve` on `dir`'s root and socket, logging to `dir/log`.
fn spawn(dir: &Path, config: Option<&Path>, notify: Option<&Path>) -> Child {
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("serve")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--address")
        .arg(socket_of(dir))
        .stdout(Stdio::null())
        .stderr(log)
        .env_remove("NOTIFY_SOCKET");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    if let Some(n) = notify {
        cmd.env("NOTIFY_SOCKET", n);
    }
    cmd.spawn().expect("start wasmsnap serve")
}

fn socket_of(dir: &Path) -> PathBuf {
    dir.join("run").join("wasmsnap.sock")
}

fn stop(child: &mut Child) -> std::process::ExitStatus {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).ok();
    child.wait().unwrap()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

/// Start a daemon, wait for its socket file to exist (polling every 50 µs),
/// connect at once. The connect's error, if refused.
fn race_one(dir: &Path, start: &Barrier) -> Result<(), String> {
    start.wait();
    let mut child = spawn(dir, None, None);
    let socket = socket_of(dir);
    let deadline = Instant::now() + START_LIMIT;
    while std::fs::symlink_metadata(&socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("daemon exited with {status} before its socket appeared:\n{}", log_of(dir));
        }
        assert!(Instant::now() < deadline, "no socket after {START_LIMIT:?}:\n{}", log_of(dir));
        std::thread::sleep(Duration::from_micros(50));
    }
    let connected = UnixStream::connect(&socket).map(drop).map_err(|e| e.to_string());
    let status = stop(&mut child);
    assert!(status.success(), "daemon exited with {status}:\n{}", log_of(dir));
    connected
}

/// A root whose compile cache holds the built-in policies: one daemon's start.
/// The racers start from copies of it, so that 160 starts compile nothing and
/// the tests running beside this one keep their CPU.
fn warm_root() -> tempfile::TempDir {
    let seed = tempfile::tempdir().unwrap();
    let mut child = spawn(seed.path(), None, None);
    let deadline = Instant::now() + START_LIMIT;
    while UnixStream::connect(socket_of(seed.path())).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "seed daemon exited:\n{}",
            log_of(seed.path())
        );
        assert!(Instant::now() < deadline, "seed daemon: no socket:\n{}", log_of(seed.path()));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stop(&mut child).success());
    seed
}

#[test]
fn the_socket_file_appears_only_when_it_accepts() {
    let seed = warm_root();
    let mut refused = Vec::new();
    for round in 0..ROUNDS {
        let dirs: Vec<tempfile::TempDir> =
            (0..DAEMONS).map(|_| tempfile::tempdir().unwrap()).collect();
        for d in &dirs {
            let cp = Command::new("cp")
                .arg("-a")
                .arg(seed.path().join("root"))
                .arg(d.path())
                .status()
                .unwrap();
            assert!(cp.success());
        }
        let start = Arc::new(Barrier::new(DAEMONS));
        let threads: Vec<_> = dirs
            .iter()
            .map(|d| {
                let dir = d.path().to_path_buf();
                let start = start.clone();
                std::thread::spawn(move || race_one(&dir, &start))
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            if let Err(e) = t.join().expect("racer panicked") {
                refused.push(format!("round {round}, daemon {i}: {e}"));
            }
        }
        eprintln!("round {round}: {} refused so far", refused.len());
    }
    assert!(
        refused.is_empty(),
        "{} of {} connects made as soon as the socket file appeared failed:\n{}",
        refused.len(),
        DAEMONS * ROUNDS,
        refused.join("\n")
    );
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads `MONOTONIC_USEC`.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid, writable timespec.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The next notify message, as `KEY=VALUE` lines.
fn next_message(notify: &UnixDatagram, dir: &Path) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notify message: {e}; log:\n{}", log_of(dir)));
    String::from_utf8(buf[..n].to_vec()).unwrap().lines().map(str::to_string).collect()
}

fn value<'m>(message: &'m [String], key: &str) -> Option<&'m str> {
    message.iter().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn systemd_hears_ready_reloading_and_stopping_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let config = dir.join("config.toml");
    let section = "[snapshotters.bind]\npolicy = \"builtin:bind\"\n";
    std::fs::write(&config, section).unwrap();
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(START_LIMIT)).unwrap();
    let socket = socket_of(dir);

    let mut child = spawn(dir, Some(&config), Some(&notify_path));
    let starting = next_message(&notify, dir);
    assert_eq!(value(&starting, "READY"), None, "ready before recovery: {starting:?}");
    assert!(value(&starting, "STATUS").is_some_and(|s| s.starts_with("starting")), "{starting:?}");

    let ready = next_message(&notify, dir);
    assert_eq!(value(&ready, "READY"), Some("1"), "{ready:?}");
    let serving = format!("serving bind on {}", socket.display());
    assert_eq!(value(&ready, "STATUS"), Some(serving.as_str()), "{ready:?}");
    // The socket accepts by the time systemd hears READY=1, with its mode.
    let m = std::fs::symlink_metadata(&socket).expect("socket file at READY=1");
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o7777, 0o660);
    UnixStream::connect(&socket).expect("the socket accepts at READY=1");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listed = rt.block_on(async {
        let mut client = common::connect(&socket).await;
        let req = common::api::ListSnapshotsRequest { snapshotter: "bind".into(), filters: vec![] };
        client.list(req).await?.into_inner().message().await
    });
    assert!(listed.is_ok(), "a request at READY=1: {listed:?}");

    // A reload that changes the policy's limits.
    std::fs::write(&config, format!("{section}limits = {{ call_timeout_ms = 2000 }}\n")).unwrap();
    let before = monotonic_usec();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
    let reloading = next_message(&notify, dir);
    assert_eq!(value(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let usec: u64 = value(&reloading, "MONOTONIC_USEC").expect("MONOTONIC_USEC").parse().unwrap();
    assert!(
        (before..=monotonic_usec()).contains(&usec),
        "MONOTONIC_USEC={usec} is not between the SIGHUP ({before}) and now"
    );
    let reloaded = next_message(&notify, dir);
    assert_eq!(value(&reloaded, "READY"), Some("1"), "{reloaded:?}");
    assert_eq!(
        value(&reloaded, "STATUS"),
        Some(format!("{serving}; last reload changed [\"bind\"]").as_str())
    );

    // A broken config: still RELOADING then READY, and the status says so.
    std::fs::write(&config, "not toml [").unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
    assert_eq!(value(&next_message(&notify, dir), "RELOADING"), Some("1"));
    let failed = next_message(&notify, dir);
    assert_eq!(value(&failed, "READY"), Some("1"), "{failed:?}");
    assert!(value(&failed, "STATUS").is_some_and(|s| s.contains("last reload failed")));

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let stopping = next_message(&notify, dir);
    assert_eq!(value(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}:\n{}", log_of(dir));
    assert!(!socket.exists(), "socket file left after exit");
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(notify.recv(&mut buf).is_err(), "a message after STOPPING=1");
}

#[test]
fn a_file_that_is_not_a_socket_at_the_address_stops_the_start_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let socket = socket_of(dir);
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    std::fs::write(&socket, "not a socket").unwrap();
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(START_LIMIT)).unwrap();
    let mut child = spawn(dir, None, Some(&notify_path));
    let status = child.wait().unwrap();
    assert!(!status.success());
    let log = log_of(dir);
    assert!(log.contains("exists and is not a socket; refusing to replace it"), "{log}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "not a socket");
    let left: Vec<_> = std::fs::read_dir(socket.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["wasmsnap.sock"], "the temporary name is left");
    // systemd heard no READY=1.
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.recv(&mut buf) {
        let m = String::from_utf8_lossy(&buf[..n]);
        assert!(!m.contains("READY=1"), "READY=1 from a daemon that did not start: {m}");
    }
}

/// The unit's settings, as `Key=value` lines (comments dropped).
fn unit_settings(unit: &str) -> Vec<&str> {
    unit.lines().filter(|l| l.contains('=') && !l.starts_with('#')).collect()
}

#[test]
fn the_unit_waits_for_ready_and_keeps_containerd_ordered_after_it() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/wasmsnap.service");
    let unit = std::fs::read_to_string(&path).unwrap();
    let settings = unit_settings(&unit);
    for wanted in [
        "Type=notify",
        "After=local-fs.target",
        "Before=containerd.service",
        "WantedBy=multi-user.target containerd.service",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(settings.contains(&wanted), "{} lacks {wanted}", path.display());
    }
    // Readiness is the daemon's to say: no polling for the socket file.
    assert!(!settings.iter().any(|s| s.starts_with("ExecStartPost=")));

    // systemd itself parses it (warnings are printed, the exit code stays 0).
    let Ok(_) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: unit not verified by systemd");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("wasmsnap.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/wasmsnap", &common::bin())).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}
