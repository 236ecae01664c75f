//! What is read at scrape time rather than counted as it happens: the
//! snapshots by kind and their usage, the background queue, the loaded
//! policies, and the process itself.

use std::fmt;
use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::service::{Service, WeakService};

/// The service whose state each scrape reads. Held weakly: the metrics live
/// as long as the process, the snapshotters only until shutdown.
#[derive(Debug, Default)]
pub struct State {
    service: OnceLock<WeakService>,
}

impl State {
    pub fn watch(&self, service: &Service) {
        let _ = self.service.set(service.downgrade());
    }
}

impl fmt::Debug for WeakService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.upgrade() {
            Some(service) => service.fmt(f),
            None => f.write_str("(shut down)"),
        }
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

type Labels = Vec<(&'static str, String)>;

/// One family of gauges.
fn gauges<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, V)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn one<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> fmt::Result {
    let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(family)
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(service) = self.service.get().and_then(WeakService::upgrade) {
            snapshotters(&service, &mut encoder)?;
        }
        process(&mut encoder)
    }
}

fn snapshotters(service: &Service, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let (mut counts, mut bytes, mut inodes) = (Vec::new(), Vec::new(), Vec::new());
    let (mut queued, mut policies) = (Vec::new(), Vec::new());
    for s in service.serving() {
        let name = s.name().to_string();
        match s.census() {
            Ok(census) => {
                for (kind, c) in census.kinds() {
                    let labels = vec![("snapshotter", name.clone()), ("kind", kind.to_string())];
                    counts.push((labels.clone(), c.count));
                    bytes.push((labels.clone(), c.bytes));
                    inodes.push((labels, c.inodes));
                }
            }
            // A scrape reports what it can; the log says why this is missing.
            Err(e) => {
                tracing::warn!(snapshotter = %name, error = %e, "metrics: cannot count snapshots")
            }
        }
        let label = vec![("snapshotter", name.clone())];
        queued.push((label, s.removals_queued() as u64));
        let policy = s.policy();
        let info = policy.info();
        policies.push((
            vec![
                ("snapshotter", name),
                ("policy", info.label.clone()),
                ("sha256", info.sha256.clone()),
                ("wit_version", info.wit_version.to_string()),
            ],
            1u64,
        ));
    }
    gauges(encoder, "wasmsnap_snapshots", "Snapshots by snapshotter and kind", &counts)?;
    gauges(
        encoder,
        "wasmsnap_snapshot_usage_bytes",
        "Disk usage as last computed: stored at Commit for committed snapshots, the last Usage call's for active ones",
        &bytes,
    )?;
    gauges(
        encoder,
        "wasmsnap_snapshot_usage_inodes",
        "Inodes as last computed (as for bytes)",
        &inodes,
    )?;
    gauges(
        encoder,
        "wasmsnap_removal_queue_length",
        "Removed snapshots whose directories wait for background deletion",
        &queued,
    )?;
    gauges(
        encoder,
        "wasmsnap_policy_info",
        "The policy each snapshotter runs now (value 1): its name, full sha256 and WIT version",
        &policies,
    )
}

/// The standard `process_*` series, from /proc/self.
fn process(encoder: &mut DescriptorEncoder) -> fmt::Result {
    let page = page_size();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let ticks = clock_ticks();
    let cpu = (field(14) + field(15)) as f64 / ticks;
    one(
        encoder,
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        ConstCounter::new(cpu),
    )?;
    one(
        encoder,
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        ConstGauge::new(field(24) * page),
    )?;
    one(
        encoder,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        ConstGauge::new(field(23)),
    )?;
    one(
        encoder,
        "process_threads",
        "Number of OS threads in the process",
        ConstGauge::new(field(20)),
    )?;
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
    one(encoder, "process_open_fds", "Number of open file descriptors", ConstGauge::new(fds))?;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    one(
        encoder,
        "process_max_fds",
        "Maximum number of open file descriptors",
        ConstGauge::new(limit.rlim_cur),
    )?;
    let start = boot_time() + field(22) as f64 / ticks;
    one(
        encoder,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        ConstGauge::new(start),
    )
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Seconds since the epoch at boot (`btime` in /proc/stat).
fn boot_time() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok()))
        .unwrap_or(0.0)
}
