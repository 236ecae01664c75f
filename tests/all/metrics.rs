//! `serve --metrics-address`: the exposition checked by `promtool`, and a
//! real Prometheus server scraping a daemon under a small workload (both
//! from Debian's `prometheus` package, which tests/run-all.sh installs).

use crate::common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::scrape::{http_get, sample, scrape_unix};
use common::{Daemon, api};

const S: &str = "overlay";

fn prepare(key: &str, parent: &str) -> api::PrepareSnapshotRequest {
    api::PrepareSnapshotRequest {
        snapshotter: S.into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }
}

fn commit(name: &str, key: &str) -> api::CommitSnapshotRequest {
    api::CommitSnapshotRequest {
        snapshotter: S.into(),
        name: name.into(),
        key: key.into(),
        labels: HashMap::new(),
        parent: String::new(),
    }
}

/// A loopback port free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scrape_tcp(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (status, body) = http_get(&mut s, "127.0.0.1", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Prepare, commit, view, Mounts (cached), Stat of a missing key, a request
/// to a snapshotter not served, and a remove: `n` layers.
async fn workload(daemon: &Daemon, n: usize, tag: &str) {
    let mut client = daemon.client().await;
    let mut parent = String::new();
    for i in 0..n {
        let key = format!("{tag}-extract-{i}");
        client.prepare(prepare(&key, &parent)).await.unwrap();
        let name = format!("{tag}-layer-{i}");
        client.commit(commit(&name, &key)).await.unwrap();
        parent = name;
    }
    let top = format!("{tag}-container");
    client.prepare(prepare(&top, &parent)).await.unwrap();
    client.mounts(api::MountsRequest { snapshotter: S.into(), key: top.clone() }).await.unwrap();
    client.usage(api::UsageRequest { snapshotter: S.into(), key: top.clone() }).await.unwrap();
    let missing =
        client.stat(api::StatSnapshotRequest { snapshotter: S.into(), key: "nope".into() });
    assert_eq!(missing.await.unwrap_err().code(), tonic::Code::NotFound);
    let mut other = prepare("x", "");
    other.snapshotter = "made-up-name".into();
    assert_eq!(client.prepare(other).await.unwrap_err().code(), tonic::Code::NotFound);
    client
        .view(api::ViewSnapshotRequest {
            snapshotter: S.into(),
            key: format!("{tag}-view"),
            parent,
            labels: HashMap::new(),
        })
        .await
        .unwrap();
    client.remove(api::RemoveSnapshotRequest { snapshotter: S.into(), key: top }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_accepts_the_exposition_and_it_counts_what_happened() {
    let port = free_port();
    let daemon = Daemon::start_with(&["--metrics-address", &format!("127.0.0.1:{port}")]);
    workload(&daemon, 3, "a").await;
    let text = scrape_tcp(port);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (tests/run-all.sh installs Debian's prometheus)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let count = |op: &str, code: &str| {
        let series = format!(
            "wasmsnap_rpc_duration_seconds_count{{snapshotter=\"overlay\",op=\"{op}\",code=\"{code}\"}}"
        );
        sample(&text, &series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(count("prepare", "OK"), 4.0);
    assert_eq!(count("commit", "OK"), 3.0);
    assert_eq!(count("stat", "NotFound"), 1.0);
    assert_eq!(count("remove", "OK"), 1.0);
    // A name not served is counted, under a label no served name can have.
    let unknown = "wasmsnap_rpc_duration_seconds_count{snapshotter=\".unknown\",op=\"prepare\",code=\"NotFound\"}";
    assert_eq!(sample(&text, unknown), Some(1.0), "{text}");
    assert!(!text.contains("made-up-name"));
    // Snapshots by kind: three layers, a view; the container was removed.
    let kind = |k: &str| {
        sample(&text, &format!("wasmsnap_snapshots{{snapshotter=\"overlay\",kind=\"{k}\"}}"))
    };
    assert_eq!(
        (kind("committed"), kind("view"), kind("active")),
        (Some(3.0), Some(1.0), Some(0.0)),
        "{text}"
    );
    // Each Prepare/View asked the policy for a layout and mounts.
    assert!(
        text.contains(
            "wasmsnap_policy_call_duration_seconds_count{snapshotter=\"overlay\",policy_sha256=\""
        ),
        "{text}"
    );
    assert!(text.contains("wit_version=\"0.2.0\",call=\"layout\"} 5"), "{text}");
    // Group commit: every commit in a group of at least one.
    let commits = text
        .lines()
        .find(|l| {
            l.starts_with("wasmsnap_metastore_group_commit_size_sum{snapshotter=\"overlay\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(commits >= 9.0, "prepares, commits, view, remove commit: {commits}\n{text}");
    assert!(text.contains(
        "wasmsnap_policy_info{snapshotter=\"overlay\",policy=\"builtin:overlay\",sha256=\""
    ));
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&text, "process_open_fds").unwrap() > 3.0);
    assert!(sample(&text, "process_threads").unwrap() >= 2.0);
    assert!(!text.contains("# EOF"), "the Prometheus text format, not OpenMetrics");
    assert!(text.contains("# TYPE wasmsnap_removal_failures_total counter\n"), "{text}");

    // Prometheus asks for OpenMetrics, and gets it.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n").unwrap();
    let mut om = String::new();
    s.read_to_string(&mut om).unwrap();
    assert!(om.contains("application/openmetrics-text"), "{om}");
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE wasmsnap_removal_failures counter\n"));

    // Anything but GET /metrics is refused.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(http_get(&mut s, "127.0.0.1", "/").0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_on_a_unix_socket_and_a_reload_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("metrics.sock");
    let config = dir.path().join("wasmsnap.toml");
    std::fs::write(&config, "[snapshotters.overlay]\npolicy = \"builtin:overlay\"\n").unwrap();
    let mut daemon = Daemon::start_with(&[
        "--metrics-address",
        socket.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    workload(&daemon, 1, "u").await;
    let scrape = || scrape_unix(&socket);
    let text = scrape();
    assert!(text.contains("wasmsnap_rpc_duration_seconds_bucket{le=\"0.0001\",snapshotter=\"overlay\",op=\"prepare\",code=\"OK\"}"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o660);

    // A reload that fails (a broken file) and one that works.
    std::fs::write(&config, "[snapshotters.overlay]\npolicy = 3\n").unwrap();
    hangup(&daemon);
    let failed = "wasmsnap_policy_reloads_total{result=\"failure\"}";
    wait_for(|| sample(&scrape(), failed) == Some(1.0), "a failed reload counted");
    std::fs::write(&config, "[snapshotters.overlay]\npolicy = \"builtin:overlay\"\n[snapshotters.overlay.config]\nmount_options = \"volatile\"\n").unwrap();
    hangup(&daemon);
    let ok = "wasmsnap_policy_reloads_total{result=\"success\"}";
    wait_for(|| sample(&scrape(), ok) == Some(1.0), "a reload counted");

    // The metrics outlive the snapshotters: at shutdown these still close
    // (each logs its group commit figures as its metastore is dropped).
    let closed = |logs: String| {
        logs.lines()
            .filter(|l| l.contains("metastore group commit") && l.contains("snapshotter=overlay"))
            .count()
    };
    let before = closed(daemon.logs());
    assert!(daemon.stop().success());
    assert_eq!(closed(daemon.logs()), before + 1, "{}", daemon.logs());

    // A bad address refuses to start, naming it.
    let out = Command::new(common::bin())
        .args(["serve", "--metrics-address", "0.0.0.0:9311", "--root"])
        .arg(dir.path().join("root2"))
        .arg("--address")
        .arg(dir.path().join("s2.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

fn hangup(daemon: &Daemon) {
    let pid = nix::unistd::Pid::from_raw(daemon.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Debian's Prometheus on loopback, scraping one target every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: wasmsnap\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (tests/run-all.sh installs Debian's prometheus)");
        Prometheus { child, port, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Whether Prometheus accepts `promql` (its status, whatever the result).
    fn check(&self, promql: &str) -> Result<(), String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let (status, body) = http_get(&mut s, "127.0.0.1", &path);
        if status == 200 { Ok(()) } else { Err(format!("{status}: {body}")) }
    }

    /// An instant PromQL query: the first result's value, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let (status, body) = http_get(&mut s, "127.0.0.1", &path);
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let value = json["data"]["result"].get(0)?["value"][1].as_str()?.parse::<f64>().ok()?;
        value.is_finite().then_some(value)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_prepares_and_policy_latency() {
    let port = free_port();
    let daemon = Daemon::start_with(&["--metrics-address", &format!("127.0.0.1:{port}")]);
    let prometheus = Prometheus::start(port);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut round = 0;
    let (mut prepares, mut quantile) = (None, None);
    // Work goes on while Prometheus scrapes every second.
    while prepares.is_none_or(|p| p <= 0.0) || quantile.is_none() {
        assert!(
            Instant::now() < deadline,
            "no answer from Prometheus: prepares {prepares:?}, quantile {quantile:?}\n{}",
            prometheus.log()
        );
        workload(&daemon, 2, &format!("r{round}")).await;
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        prepares = prometheus.query(
            "sum(wasmsnap_rpc_duration_seconds_count{job=\"wasmsnap\",snapshotter=\"overlay\",op=\"prepare\",code=\"OK\"})",
        );
        quantile = prometheus.query(
            "histogram_quantile(0.99, sum by (le) (rate(wasmsnap_policy_call_duration_seconds_bucket{snapshotter=\"overlay\"}[10s])))",
        );
    }
    let (prepares, quantile) = (prepares.unwrap(), quantile.unwrap());
    eprintln!("Prometheus: {prepares} prepares; policy call p99 {:.1} us", quantile * 1e6);
    assert!(prepares >= 3.0, "{prepares}");
    assert!(quantile > 0.0 && quantile < 5.0, "{quantile}");
    assert_eq!(prometheus.query("up{job=\"wasmsnap\"}"), Some(1.0));

    // Every query of the Grafana dashboard in deploy/ is valid PromQL over these series.
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "10s")
                .replace("$snapshotter", ".*")
                .replace("$job", ".*");
            prometheus.check(&expr).unwrap_or_else(|e| panic!("{}: {expr}: {e}", panel["title"]));
            exprs += 1;
        }
    }
    assert!(exprs >= 10);
}

/// The benchmark behind the figure in docs/observing.md (not a timed
/// test: run it with `cargo test --release -p wasmsnap --test all --
/// --ignored metrics::scrape_overhead --nocapture`). 32 clients loop
/// Prepare, Stat, Mounts and Remove on one daemon; throughput is compared
/// between phases without scrapes, with a scrape every second (as
/// Prometheus does) and with scrapes back to back, alternating the phases
/// so that drift on a shared machine hits all alike. A daemon without
/// metrics runs the same phases for the cost of the hooks themselves.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn scrape_overhead() {
    const CLIENTS: usize = 32;
    const PHASE: Duration = Duration::from_secs(4);
    const ROUNDS: usize = 3;
    let port = free_port();
    let on = Daemon::start_with(&["--metrics-address", &format!("127.0.0.1:{port}")]);
    let off = Daemon::start();
    for d in [&on, &off] {
        let mut c = d.client().await;
        c.prepare(prepare("base-key", "")).await.unwrap();
        c.commit(commit("base", "base-key")).await.unwrap();
    }
    let mut totals: HashMap<&str, (u64, usize)> = HashMap::new();
    for round in 0..ROUNDS {
        for (phase, daemon, scrape_every) in [
            ("metrics off", &off, None),
            ("metrics on, no scrape", &on, None),
            ("scrape every 1 s", &on, Some(Duration::from_secs(1))),
            ("scrapes back to back", &on, Some(Duration::ZERO)),
        ] {
            let stop = Instant::now() + PHASE;
            let scraper = scrape_every.map(|every| {
                std::thread::spawn(move || {
                    let mut n = 0;
                    while Instant::now() < stop {
                        let _ = scrape_tcp(port);
                        n += 1;
                        std::thread::sleep(every);
                    }
                    n
                })
            });
            let mut tasks = Vec::new();
            for c in 0..CLIENTS {
                let mut client = daemon.client().await;
                let tag = format!("r{round}-{phase}-{c}").replace(' ', "_");
                tasks.push(tokio::spawn(async move {
                    let mut ops = 0u64;
                    let mut i = 0;
                    while Instant::now() < stop {
                        let key = format!("{tag}-{i}");
                        client.prepare(prepare(&key, "base")).await.unwrap();
                        let stat =
                            api::StatSnapshotRequest { snapshotter: S.into(), key: key.clone() };
                        client.stat(stat).await.unwrap();
                        let mounts = api::MountsRequest { snapshotter: S.into(), key: key.clone() };
                        client.mounts(mounts).await.unwrap();
                        let remove = api::RemoveSnapshotRequest { snapshotter: S.into(), key };
                        client.remove(remove).await.unwrap();
                        ops += 4;
                        i += 1;
                    }
                    ops
                }));
            }
            let mut ops = 0;
            for t in tasks {
                ops += t.await.unwrap();
            }
            let scrapes = scraper.map_or(0, |s| s.join().unwrap());
            eprintln!(
                "round {round}: {phase:<24} {:>8.0} ops/s ({scrapes} scrapes)",
                ops as f64 / PHASE.as_secs_f64()
            );
            let t = totals.entry(phase).or_default();
            t.0 += ops;
            t.1 += scrapes;
        }
    }
    let rate = |p: &str| totals[p].0 as f64 / (PHASE.as_secs_f64() * ROUNDS as f64);
    let base = rate("metrics on, no scrape");
    for p in ["metrics off", "metrics on, no scrape", "scrape every 1 s", "scrapes back to back"] {
        eprintln!(
            "{p:<24} {:>8.0} ops/s  {:+.1}% vs metrics on without scrapes; {} scrapes",
            rate(p),
            (rate(p) / base - 1.0) * 100.0,
            totals[p].1
        );
    }
}
