//! Prometheus metrics (`serve --metrics-address`; off by default).
//!
//! Everything measured is defined here; the rest of the daemon has one thin
//! hook at each place: the wire layer times every RPC ([`RpcTimer`]), the
//! snapshotter times its policy calls ([`PolicyMeter`]), the metastore tells
//! of its durable commits ([`SnapshotterMeters`] observes them), the
//! background thread counts failed removals, reload counts reloads. What is
//! state rather than an event (snapshots by kind, usage, queues,
//! the loaded policies, the process) is read at scrape time by
//! [`collect::State`].
//!
//! The hot path does not allocate: each snapshotter holds its RPC
//! histograms in a table by (op, gRPC code), filled once per series; with
//! metrics off every hook is a `None` check. See `docs/observing.md` for
//! every series.

mod collect;
mod serve;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wasmsnap_engine::{PolicyError, PolicyInfo};

pub use serve::{MetricsAddress, serve};

use crate::service::Service;

/// containerd's Snapshots RPCs, as the wire layer names them.
pub const OPS: [&str; 10] =
    ["prepare", "view", "mounts", "commit", "remove", "stat", "update", "list", "usage", "cleanup"];
/// gRPC status codes 0 (OK) to 16 (UNAUTHENTICATED), by their Prometheus label.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
/// The label of RPCs naming a snapshotter that is not served. Names
/// starting with `.` cannot be served, so it cannot clash; and a client's
/// made-up names never become label values.
const UNKNOWN_SNAPSHOTTER: &str = ".unknown";

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    snapshotter: String,
    op: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    snapshotter: String,
    policy_sha256: String,
    wit_version: &'static str,
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyFailureLabels {
    snapshotter: String,
    policy_sha256: String,
    wit_version: &'static str,
    call: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SnapshotterLabel {
    snapshotter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The registry and every family the hooks feed.
pub struct Metrics {
    registry: Registry,
    rpc: HistogramFamily<RpcLabels>,
    policy_calls: HistogramFamily<PolicyLabels>,
    policy_failures: Family<PolicyFailureLabels, Counter>,
    commits: HistogramFamily<SnapshotterLabel>,
    group_sizes: HistogramFamily<SnapshotterLabel>,
    removal_failures: Family<SnapshotterLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    state: Arc<collect::State>,
    unknown: Arc<SnapshotterMeters>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Turn metrics on for this process (before the snapshotters open, so they
/// take their meters). Idempotent.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// The metrics, if enabled.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Latency buckets from 50 µs to ~13 s (x2): a cached Mounts is tens of
/// microseconds, a Commit of a big layer seconds.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 19))
}

/// Policy calls: 10 µs to ~5 s (a call's default time limit is 1 s).
fn policy_latency() -> Histogram {
    Histogram::new(exponential_buckets(10e-6, 2.0, 20))
}

/// Commits in one fsync: 1 to 256.
fn group_size() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let rpc = HistogramFamily::<RpcLabels>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "wasmsnap_rpc_duration_seconds",
            "Snapshots API requests: time from decoded request to reply, by snapshotter, op and gRPC code (its _count counts requests)",
            rpc.clone(),
        );
        let policy_calls = HistogramFamily::<PolicyLabels>::new_with_constructor(
            policy_latency as fn() -> Histogram,
        );
        registry.register(
            "wasmsnap_policy_call_duration_seconds",
            "Policy calls (layout, mounts), failed or not, by snapshotter, policy sha256 prefix and WIT version (its _count counts calls)",
            policy_calls.clone(),
        );
        let policy_failures = Family::<PolicyFailureLabels, Counter>::default();
        registry.register(
            "wasmsnap_policy_failures",
            "Policy calls that failed, by reason: trap, timeout, memory, declared_error, invalid_plan",
            policy_failures.clone(),
        );
        let commits =
            HistogramFamily::<SnapshotterLabel>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "wasmsnap_metastore_commit_duration_seconds",
            "Durable metastore commits (redb commit and the redo log flush)",
            commits.clone(),
        );
        let group_sizes = HistogramFamily::<SnapshotterLabel>::new_with_constructor(
            group_size as fn() -> Histogram,
        );
        registry.register(
            "wasmsnap_metastore_group_commit_size",
            "Write transactions made durable by one fsync (group commit)",
            group_sizes.clone(),
        );
        let removal_failures = Family::<SnapshotterLabel, Counter>::default();
        registry.register(
            "wasmsnap_removal_failures",
            "Snapshot directories whose background removal failed (left for Cleanup)",
            removal_failures.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "wasmsnap_policy_reloads",
            "Config reloads (SIGHUP), by result: success or failure",
            reloads.clone(),
        );
        let state = Arc::new(collect::State::default());
        registry.register_collector(Box::new(state.clone()));
        let mut metrics = Metrics {
            registry,
            rpc,
            policy_calls,
            policy_failures,
            commits,
            group_sizes,
            removal_failures,
            reloads,
            state,
            unknown: Arc::new(SnapshotterMeters::placeholder()),
        };
        metrics.unknown = Arc::new(metrics.snapshotter(UNKNOWN_SNAPSHOTTER));
        metrics
    }

    /// The meters of snapshotter `name`.
    pub fn snapshotter(&self, name: &str) -> SnapshotterMeters {
        let label = SnapshotterLabel { snapshotter: name.to_string() };
        SnapshotterMeters {
            name: name.to_string(),
            rpc: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            commits: Some(self.commits.get_or_create_owned(&label)),
            group_sizes: Some(self.group_sizes.get_or_create_owned(&label)),
            removal_failures: Some(self.removal_failures.get_or_create_owned(&label)),
        }
    }

    /// Read the served snapshotters' state at each scrape.
    pub fn watch(&self, service: &Service) {
        self.state.watch(service);
    }

    /// A reload (SIGHUP) finished.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// The exposition: OpenMetrics text, as Prometheus scrapes it.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One snapshotter's meters: its RPC histograms by (op, code), made on
/// first use, and its metastore and background counters.
pub struct SnapshotterMeters {
    name: String,
    rpc: [[OnceLock<Histogram>; CODES.len()]; OPS.len()],
    commits: Option<Histogram>,
    group_sizes: Option<Histogram>,
    removal_failures: Option<Counter>,
}

impl SnapshotterMeters {
    fn placeholder() -> SnapshotterMeters {
        SnapshotterMeters {
            name: String::new(),
            rpc: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            commits: None,
            group_sizes: None,
            removal_failures: None,
        }
    }

    fn rpc(&self, metrics: &Metrics, op: usize, code: usize) -> &Histogram {
        self.rpc[op][code].get_or_init(|| {
            let labels =
                RpcLabels { snapshotter: self.name.clone(), op: OPS[op], code: CODES[code] };
            metrics.rpc.get_or_create_owned(&labels)
        })
    }

    /// A snapshot directory's background removal failed.
    pub fn removal_failed(&self) {
        if let Some(c) = &self.removal_failures {
            c.inc();
        }
    }
}

impl wasmsnap_metastore::CommitObserver for SnapshotterMeters {
    fn durable_commit(&self, took: Duration, grouped: u64) {
        if let (Some(c), Some(g)) = (&self.commits, &self.group_sizes) {
            c.observe(took.as_secs_f64());
            g.observe(grouped as f64);
        }
    }
}

/// Times one RPC. Dropped without [`finish`](Self::finish) (the client
/// went away and tonic dropped the handler), it records code Canceled.
pub struct RpcTimer {
    meters: Option<Arc<SnapshotterMeters>>,
    op: usize,
    started: Instant,
}

impl RpcTimer {
    /// `meters`: the snapshotter's, or `None` for a name not served (or
    /// with metrics off, when nothing is recorded).
    pub fn start(op: &'static str, meters: Option<&Arc<SnapshotterMeters>>) -> RpcTimer {
        let meters = match (get(), meters) {
            (None, _) => None,
            (Some(_), Some(m)) => Some(m.clone()),
            (Some(metrics), None) => Some(metrics.unknown.clone()),
        };
        let op = OPS.iter().position(|o| *o == op).unwrap_or(0);
        RpcTimer { meters, op, started: Instant::now() }
    }

    /// The reply went out with gRPC `code`.
    pub fn finish(mut self, code: tonic::Code) {
        self.record(code);
    }

    fn record(&mut self, code: tonic::Code) {
        let (Some(meters), Some(metrics)) = (self.meters.take(), get()) else { return };
        let code = (code as usize).min(CODES.len() - 1);
        meters.rpc(metrics, self.op, code).observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for RpcTimer {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
}

/// Times a policy's calls and counts its failures; one per loaded policy
/// (a reload makes a new one: the labels carry the policy's digest).
pub struct PolicyMeter {
    inner: Option<PolicyMeterInner>,
}

struct PolicyMeterInner {
    snapshotter: String,
    policy_sha256: String,
    wit_version: &'static str,
    layout: Histogram,
    mounts: Histogram,
}

/// How many hex digits of a policy's sha256 label its series.
const SHA256_PREFIX: usize = 12;

impl PolicyMeter {
    pub fn new(snapshotter: &str, info: &PolicyInfo) -> PolicyMeter {
        let inner = get().map(|metrics| {
            let sha: String = info.sha256.chars().take(SHA256_PREFIX).collect();
            let histogram = |call| {
                metrics.policy_calls.get_or_create_owned(&PolicyLabels {
                    snapshotter: snapshotter.to_string(),
                    policy_sha256: sha.clone(),
                    wit_version: info.wit_version,
                    call,
                })
            };
            PolicyMeterInner {
                layout: histogram("layout"),
                mounts: histogram("mounts"),
                snapshotter: snapshotter.to_string(),
                policy_sha256: sha.clone(),
                wit_version: info.wit_version,
            }
        });
        PolicyMeter { inner }
    }

    /// Run policy call `call` (`layout` or `mounts`), timing it and
    /// counting its failure.
    pub fn time<T>(
        &self,
        call: &'static str,
        f: impl FnOnce() -> Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        self.time_unless(call, f, |_| false)
    }

    /// [`time`](Self::time) for a quick call (`Policy::layout_quick`): one
    /// that handed itself on (`None`) is not timed; it is asked again.
    pub fn time_quick<T>(
        &self,
        call: &'static str,
        f: impl FnOnce() -> Result<Option<T>, PolicyError>,
    ) -> Result<Option<T>, PolicyError> {
        self.time_unless(call, f, |answer| answer.is_none())
    }

    fn time_unless<T>(
        &self,
        call: &'static str,
        f: impl FnOnce() -> Result<T, PolicyError>,
        handed_on: impl FnOnce(&T) -> bool,
    ) -> Result<T, PolicyError> {
        let Some(inner) = &self.inner else { return f() };
        let started = Instant::now();
        let result = f();
        if !result.as_ref().is_ok_and(handed_on) {
            let histogram = if call == "layout" { &inner.layout } else { &inner.mounts };
            histogram.observe(started.elapsed().as_secs_f64());
        }
        if let (Err(e), Some(metrics)) = (&result, get()) {
            let labels = PolicyFailureLabels {
                snapshotter: inner.snapshotter.clone(),
                policy_sha256: inner.policy_sha256.clone(),
                wit_version: inner.wit_version,
                call,
                reason: failure_reason(e),
            };
            metrics.policy_failures.get_or_create(&labels).inc();
        }
        result
    }
}

fn failure_reason(e: &PolicyError) -> &'static str {
    match e {
        PolicyError::Trap { .. } => "trap",
        PolicyError::Timeout { .. } => "timeout",
        PolicyError::MemoryLimit { .. } => "memory",
        PolicyError::Declared { .. } => "declared_error",
        PolicyError::InvalidPlan { .. } => "invalid_plan",
        PolicyError::Busy { .. } => "busy",
        PolicyError::Load { .. } | PolicyError::UnsupportedVersion { .. } => "load",
    }
}
