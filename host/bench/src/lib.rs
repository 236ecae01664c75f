//! `wasmsnap bench`: one fixed workload over gRPC against any snapshotter
//! socket, and the side-by-side comparison with containerd's own
//! snapshotters and with the floor (see `docs/performance.md`).
//!
//! - `wasmsnap bench --address SOCK [--snapshotter overlay]`: measure one
//!   running server (wasmsnap, or any proxy snapshotter).
//! - `wasmsnap bench --compare --peer BIN`: start `wasmsnap serve` and the
//!   peer (`tests/peer`, containerd's overlayfs and native snapshotters)
//!   on fresh roots in the same directory, run the workload against each
//!   (runs interleaved), run the floor loop there too, and print each
//!   snapshotter's table with the ratios.
//!
//! Every figure is the median over `--runs` runs. After the timed runs
//! each server's flushes per operation are counted with strace
//! (`flushes.rs`; `--no-flush-count` skips it).

mod client;
mod floor;
mod flushes;
mod go_client;
mod servers;
mod stats;
mod strace;
mod table;
mod workload;

use std::path::PathBuf;

use anyhow::Context;

use stats::{Samples, Summary};
use workload::{Op, Shape};

use servers::Server;
use table::Medians;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Socket of a running snapshotter server to measure.
    #[arg(long, required_unless_present = "compare", conflicts_with = "compare")]
    pub address: Option<PathBuf>,
    /// Snapshotter name(s) to drive, comma separated [default: overlay; with --compare: overlay,native]
    #[arg(long, value_delimiter = ',')]
    pub snapshotter: Vec<String>,
    /// Layers in the prepare+commit chain.
    #[arg(long, default_value_t = 32)]
    pub depth: usize,
    /// Concurrent workers in the churn phase.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Prepare+remove pairs per churn worker.
    #[arg(long, default_value_t = 25)]
    pub churn: usize,
    /// Runs; every figure is the median over them.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Start wasmsnap and the peer on fresh roots and compare them.
    #[arg(long)]
    pub compare: bool,
    /// The peer server (containerd's overlay and native): `tests/conformance/run.sh peer` builds it.
    #[arg(long, requires = "compare")]
    pub peer: Option<PathBuf>,
    /// The wasmsnap binary to start with --compare [default: this one].
    #[arg(long, requires = "compare")]
    pub wasmsnap: Option<PathBuf>,
    /// Also start this wasmsnap build (e.g. one from before a change) and
    /// show it as the column "baseline" with --compare.
    #[arg(long, requires = "compare")]
    pub baseline: Option<PathBuf>,
    /// Directory for the roots and the floor loop (use the disk being measured) [default: the temp dir].
    /// Without --compare the floor runs only if this is given.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Drive the targets with this Go client (containerd's proxy snapshotter client;
    /// `tests/conformance/run.sh goclient` builds it) instead of the built-in Rust client.
    #[arg(long, value_name = "BIN")]
    pub go_client: Option<PathBuf>,
    /// Skip counting each server's flushes per operation with strace (done after the timed runs).
    #[arg(long)]
    pub no_flush_count: bool,
}

/// A measured target: what it is and where it answers.
struct Target {
    title: String,
    socket: PathBuf,
    snapshotter: String,
    /// The server's process [default: the one listening on `socket`].
    pid: Option<u32>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.depth >= 1, "--depth must be at least 1");
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    let shape = Shape { depth: args.depth, workers: args.workers, churn_per_worker: args.churn };
    let names = if !args.snapshotter.is_empty() {
        args.snapshotter.clone()
    } else if args.compare {
        vec!["overlay".into(), "native".into()]
    } else {
        vec!["overlay".into()]
    };

    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("wasmsnap-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("temp dir in {}", base.display()))?;
    let mut servers = Vec::new();
    let mut targets = Vec::new();
    if args.compare {
        let peer = args.peer.clone().context(
            "--compare needs --peer BIN: the peer server of containerd's snapshotters, built by `tests/conformance/run.sh peer`",
        )?;
        let wasmsnap = match &args.wasmsnap {
            Some(bin) => bin.clone(),
            None => std::env::current_exe().context("find this wasmsnap binary")?,
        };
        // Info from the snapshotter module: it logs group commit's figures at exit.
        let log_level = "warn,wasmsnap_daemon::snapshotter=info";
        servers.push(Server::start(
            "wasmsnap",
            &wasmsnap,
            &scratch.path().join("wasmsnap"),
            &["--log-level", log_level],
        )?);
        servers.push(Server::start("containerd", &peer, &scratch.path().join("containerd"), &[])?);
        if let Some(baseline) = &args.baseline {
            servers.push(Server::start(
                "baseline",
                baseline,
                &scratch.path().join("baseline"),
                &["--log-level", log_level],
            )?);
        }
        for name in &names {
            for server in &servers {
                targets.push(Target {
                    title: server.label.clone(),
                    socket: server.socket.clone(),
                    snapshotter: name.clone(),
                    pid: Some(server.pid()),
                });
            }
        }
    } else {
        let socket = args.address.clone().expect("clap requires --address without --compare");
        for name in &names {
            targets.push(Target {
                title: "target".into(),
                socket: socket.clone(),
                snapshotter: name.clone(),
                pid: None,
            });
        }
    }
    let with_floor = args.compare || args.dir.is_some();

    println!("{}", go_client::describe(args.go_client.as_deref()));
    println!(
        "workload: chain depth {}, {} views, churn {} workers x {} prepare+remove; median of {} runs",
        shape.depth,
        shape.views(),
        shape.workers,
        shape.churn_per_worker,
        args.runs
    );
    if with_floor {
        println!("floor and roots in {}", scratch.path().display());
        println!("floor per created snapshot: {}", floor::RECIPE);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut measured: Vec<Vec<workload::RunSamples>> = targets.iter().map(|_| Vec::new()).collect();
    let mut floors = Vec::new();
    let flush_report = runtime.block_on(async {
        let mut clients = Vec::new();
        for t in &targets {
            clients.push(client::connect(&t.socket).await?);
        }
        for run in 0..args.runs {
            // Interleaved, so that a slow moment of the disk hits every target alike.
            if with_floor {
                floors.push(floor::run(scratch.path(), shape)?);
            }
            for (i, t) in targets.iter().enumerate() {
                let prefix = format!("bench-{}-{run}", std::process::id());
                let samples = match &args.go_client {
                    Some(bin) => go_client::run(bin, &t.socket, &t.snapshotter, &prefix, shape),
                    None => workload::run(&clients[i], &t.snapshotter, &prefix, shape).await,
                }
                .with_context(|| format!("{} {} run {}", t.title, t.snapshotter, run + 1))?;
                measured[i].push(samples);
            }
            eprintln!("run {}/{} done", run + 1, args.runs);
        }
        let chain = args.depth.max(flushes::MIN_CHAIN);
        anyhow::Ok(if args.no_flush_count {
            None
        } else {
            Some(flushes::count(&targets, &clients, chain).await)
        })
    })?;
    let logs: Vec<_> = servers.iter().map(|s| (s.label.clone(), s.log.clone())).collect();
    drop(servers);
    for (label, log) in logs {
        // How many commits shared an fsync, for a server that says so at exit.
        for line in std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("group commit"))
        {
            println!("{label}: {}", line.trim());
        }
    }

    let per_target: Vec<Medians> = measured.iter().map(|runs| medians(runs)).collect();
    let floor = medians(&floors);
    for name in &names {
        let columns: Vec<(&str, &Medians)> = (0..targets.len())
            .filter(|&i| &targets[i].snapshotter == name)
            .map(|i| (targets[i].title.as_str(), &per_target[i]))
            .collect();
        println!("\nsnapshotter {name}");
        print!("{}", table::render(&columns, with_floor.then_some(&floor)));
    }
    if args.compare {
        println!("\nx ctrd: wasmsnap ops/s / containerd ops/s (above 1: wasmsnap faster)");
        if args.baseline.is_some() {
            println!("x base: wasmsnap ops/s / the baseline build's");
        }
    }
    if with_floor {
        println!(
            "x floor: floor ops/s / {} ops/s (1: at the floor; below 1: faster than the bare loop)",
            targets[0].title
        );
    }
    if let Some(report) = flush_report {
        let report = report.context("count flushes per operation (--no-flush-count skips it)")?;
        print!("\n{}", flushes::render(&report));
    }
    Ok(())
}

/// Per operation, the median over runs.
fn medians(runs: &[workload::RunSamples]) -> Medians {
    Op::ALL
        .iter()
        .filter_map(|&op| {
            let per_run: Vec<Summary> =
                runs.iter().filter_map(|r| r.get(&op)).map(Samples::summary).collect();
            (!per_run.is_empty()).then(|| (op, Summary::median(&per_run)))
        })
        .collect()
}
