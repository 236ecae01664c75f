//! `wasmsnap policy ...`: work with policy components outside the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use wasmsnap_engine::{Engine, Policy, Sandbox};
use wasmsnap_plan::{Kind, Layout, Mount, Snapshot, render_mounts};

use wasmsnap_engine::read_policy;
use wasmsnap_harness as harness;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Show what a policy component is: contract version, exports, imports, size, sha256.
    Inspect {
        /// `builtin:NAME` or a path to a `.wasm` component.
        policy: String,
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
    },
    /// Run case files (TOML) against a policy: one line per case, a diff for each failure.
    ///
    /// Exit status: 0 all passed, 1 a case failed, 2 a case file is broken
    /// (the message names file, line and key) or the run could not start.
    Test {
        /// `builtin:NAME` or a path to a `.wasm` component.
        policy: String,
        /// Case files, or directories searched for `*.toml`.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
        /// Run only the cases whose `FILE::NAME` matches this regex.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
        /// Also write a JUnit XML report to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write the actual answers into the case files as the new expectations.
        #[arg(long)]
        update: bool,
        /// Also mount each plan in a scratch root and check the merged view (needs root).
        #[arg(long)]
        mount: bool,
        /// Where `--mount` makes its scratch roots [default: the temp dir]
        #[arg(long, requires = "mount")]
        scratch: Option<PathBuf>,
        /// The snapshotter name mounts are rendered for, as the daemon renders
        /// them (`<root>/<snapshotter>/snapshots/<id>`), unless a case file
        /// sets `snapshotter` [default: the policy's name]
        #[arg(long)]
        snapshotter: Option<String>,
    },
    /// Print the validated layout and rendered mounts a policy gives one snapshot, as JSON.
    Plan {
        /// `builtin:NAME` or a path to a `.wasm` component.
        policy: String,
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Parent ids, nearest first, e.g. `3,2,1`.
        #[arg(long, value_delimiter = ',')]
        parents: Vec<u64>,
        /// The snapshot's own id [default: the largest parent id + 1]
        #[arg(long)]
        id: Option<u64>,
        /// The daemon's root, as `serve --root`: mounts are rendered under
        /// `<root>/<snapshotter>/snapshots/<id>`, as the daemon renders them.
        #[arg(long, default_value = wasmsnap_daemon::config::DEFAULT_ROOT)]
        root: PathBuf,
        /// The name the daemon serves the policy under [default: the policy's name]
        #[arg(long)]
        snapshotter: Option<String>,
        /// Operator config for the policy's init, `key=value`.
        #[arg(long = "config", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// A label on the snapshot, `key=value`.
        #[arg(long = "label", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    Active,
    View,
    Committed,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

#[derive(Serialize)]
struct PlanOutput {
    snapshot: Snapshot,
    layout: Layout,
    mounts: Vec<Mount>,
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Inspect { policy, format } => match inspect(&policy, format) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wasmsnap: {e:#}");
                ExitCode::FAILURE
            }
        },
        PolicyCommand::Test {
            policy,
            cases,
            filter,
            format,
            junit,
            update,
            mount,
            scratch,
            snapshotter,
        } => {
            let args = harness::TestArgs {
                snapshotter,
                policy,
                paths: cases,
                filter,
                format: match format {
                    FormatArg::Text => harness::Format::Text,
                    FormatArg::Json => harness::Format::Json,
                },
                junit,
                update,
                mount: mount.then(|| scratch.unwrap_or_else(std::env::temp_dir)),
            };
            ExitCode::from(harness::test(&args))
        }
        PolicyCommand::Plan { policy, kind, parents, id, root, snapshotter, config, labels } => {
            let kind = match kind {
                KindArg::Active => Kind::Active,
                KindArg::View => Kind::View,
                KindArg::Committed => Kind::Committed,
            };
            let id = id.unwrap_or_else(|| parents.iter().max().copied().unwrap_or(0) + 1);
            // A chain, as the daemon gives it (the plan checks rely on it).
            if let Err(e) = wasmsnap_plan::check_chain(id, &parents) {
                eprintln!("wasmsnap: --parents: {e}");
                return ExitCode::FAILURE;
            }
            let id_map = match wasmsnap_plan::idmap::from_labels(
                labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ) {
                Ok(map) => map,
                Err(e) => {
                    eprintln!("wasmsnap: invalid id map: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let snapshot = Snapshot { id, kind, parent_ids: parents, labels, id_map };
            let planned = harness::snapshotter_name(&policy, snapshotter.as_deref())
                .map_err(anyhow::Error::msg)
                .and_then(|name| plan(&policy, snapshot, &root.join(name), &config));
            match planned {
                Ok(out) => {
                    println!("{}", serde_json::to_string_pretty(&out).expect("plans serialize"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wasmsnap: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The plan of `snapshot`, mounts rendered under `store` (`<root>/<snapshotter>`).
fn plan(
    policy: &str,
    snapshot: Snapshot,
    store: &std::path::Path,
    config: &[(String, String)],
) -> anyhow::Result<PlanOutput> {
    let wasm = read_policy(policy)?;
    let engine = Engine::new()?;
    let facts = wasmsnap_engine::probe_facts(&std::env::temp_dir());
    let loaded = Policy::load(&engine, policy, &wasm, config, &facts, Sandbox::default())
        .map_err(anyhow::Error::new)?;
    let (layout, plans) = loaded.plan(&snapshot).map_err(anyhow::Error::new)?;
    Ok(PlanOutput {
        mounts: render_mounts(store, &plans, snapshot.id_map.as_ref()),
        snapshot,
        layout,
    })
}

fn inspect(policy: &str, format: FormatArg) -> anyhow::Result<()> {
    let wasm = read_policy(policy)?;
    let inspection = harness::inspect::inspect(policy, &wasm)?;
    match format {
        FormatArg::Text => print!("{}", harness::inspect::text(&inspection)),
        FormatArg::Json => println!(
            "{}",
            serde_json::to_string_pretty(&inspection).expect("inspection serializes")
        ),
    }
    Ok(())
}
