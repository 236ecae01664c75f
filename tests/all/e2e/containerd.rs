//! A private containerd for the test: its own root, state directory, sockets
//! and config file under a temp directory, with `[proxy_plugins]` entries
//! pointing at wasmsnap. Nothing of the machine's containerd is used.
//!
//! containerd 1.6 hard-codes `/run/containerd` for its shims' sockets and
//! runc's state, so it runs in a private mount namespace whose `/run` is a
//! fresh tmpfs: the host's `/run` is never written, and every mount
//! containerd or its shims make (unpack, container rootfs) dies with that
//! namespace.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{cleanup, command, tools};

/// Plugins the test does not need; CRI is the slow one. (The old
/// `io.containerd.runtime.v1.linux` must stay: 1.6's tasks service requires
/// it even when every task runs on runc.v2.) containerd's own
/// `native` snapshotter is left out so nothing else answers to that name.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.native",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
];

/// The namespace for calls that touch no images or containers.
pub const CONTROL_NAMESPACE: &str = "wasmsnap-e2e";

pub struct Containerd {
    child: Option<Child>,
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Where `ctr run` puts its stdio FIFOs (containerd 1.6 would use /run/containerd/fifo).
    pub fifo_dir: PathBuf,
    /// Namespaces `ctr` was pointed at: their cgroups are removed at the end.
    namespaces: RefCell<BTreeSet<String>>,
}

impl Containerd {
    /// Start containerd under `dir` with one proxy snapshotter per
    /// `(name, socket)`, and wait until it answers.
    pub fn start(dir: &Path, proxies: &[(String, PathBuf)]) -> Containerd {
        let tmp = std::env::temp_dir();
        assert!(
            !dir.starts_with("/run")
                && !tmp.starts_with("/run")
                && proxies.iter().all(|(_, s)| !s.starts_with("/run")),
            "the test's directories must not be under /run: containerd runs with a private /run (TMPDIR={})",
            tmp.display()
        );
        let c = Containerd {
            child: None,
            dir: dir.to_path_buf(),
            root: dir.join("root"),
            state: dir.join("state"),
            socket: dir.join("containerd.sock"),
            config: dir.join("config.toml"),
            log: dir.join("containerd.log"),
            fifo_dir: dir.join("fifo"),
            namespaces: RefCell::new(BTreeSet::new()),
        };
        for d in [&c.root, &c.state, &c.fifo_dir, &dir.join("tmp")] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        std::fs::write(&c.config, c.config_toml(proxies)).expect("write containerd config");
        c.spawn()
    }

    fn config_toml(&self, proxies: &[(String, PathBuf)]) -> String {
        let q = |p: &Path| toml_string(&p.to_string_lossy());
        let mut s = String::new();
        writeln!(s, "version = 2").unwrap();
        writeln!(s, "root = {}", q(&self.root)).unwrap();
        writeln!(s, "state = {}", q(&self.state)).unwrap();
        let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|p| toml_string(p)).collect();
        writeln!(s, "disabled_plugins = [{}]", disabled.join(", ")).unwrap();
        writeln!(s, "\n[grpc]\n  address = {}", q(&self.socket)).unwrap();
        writeln!(s, "\n[ttrpc]\n  address = {}", q(&self.dir.join("containerd.sock.ttrpc")))
            .unwrap();
        writeln!(
            s,
            "\n[debug]\n  address = {}\n  level = \"debug\"",
            q(&self.dir.join("debug.sock"))
        )
        .unwrap();
        writeln!(s, "\n[metrics]\n  address = \"\"").unwrap();
        for (name, socket) in proxies {
            writeln!(
                s,
                "\n[proxy_plugins.{}]\n  type = \"snapshot\"\n  address = {}",
                toml_string(name),
                q(socket)
            )
            .unwrap();
        }
        s
    }

    fn spawn(mut self) -> Containerd {
        let log = std::fs::File::create(&self.log).expect("containerd log file");
        // The shell mounts the private /run (unshare made the namespace and
        // stopped propagation), then becomes containerd, so our child's pid
        // is containerd's.
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg("mount -n -t tmpfs -o mode=0755,size=64m wasmsnap-e2e-run /run && mkdir -p /run/containerd && exec \"$@\"")
            .arg("sh")
            .arg("containerd")
            .arg("--config")
            .arg(&self.config)
            .env("PATH", tools::search_path())
            .env("TMPDIR", self.dir.join("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd (through unshare)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited with {status} before it answered:\n{}", self.logs());
            }
            if self.socket.exists()
                && command::run(self.ctr(CONTROL_NAMESPACE).arg("version"), Duration::from_secs(5))
                    .is_ok_and(|out| out.status.success())
            {
                return self;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 30 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr` talking to this containerd, in `namespace`.
    pub fn ctr(&self, namespace: &str) -> Command {
        self.namespaces.borrow_mut().insert(namespace.to_string());
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(namespace)
            .env("PATH", tools::search_path());
        c
    }

    /// The directory of snapshots of one of containerd's built-in snapshotters.
    pub fn builtin_snapshots_dir(&self, snapshotter: &str) -> PathBuf {
        self.root.join(format!("io.containerd.snapshotter.v1.{snapshotter}")).join("snapshots")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kill the shims and their containers, then containerd (SIGTERM, then
    /// SIGKILL after 10 s).
    pub fn stop(&mut self) {
        cleanup::kill_pids(&cleanup::shim_trees(&self.socket));
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Shims started while containerd was shutting down.
        cleanup::kill_pids(&cleanup::shim_trees(&self.socket));
        for ns in self.namespaces.borrow().iter() {
            cleanup::remove_cgroups(ns);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
