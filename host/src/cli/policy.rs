//! `wasmsnap policy ...`: work with policy components outside the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use wasmsnap_engine::{Engine, Policy, Sandbox};
use wasmsnap_plan::{Kind, Layout, Mount, Snapshot, render_mounts};

use crate::loader::read_policy;

#[derive(Subcommand)]
pub enum PolicyCommand {
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
        /// Root the mounts are rendered under.
        #[arg(long, default_value = crate::config::DEFAULT_ROOT)]
        root: PathBuf,
        /// Operator config for the policy's init, `key=value`.
        #[arg(long = "config", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// A label on the snapshot, `key=value`.
        #[arg(long = "label", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    Active,
    View,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("expected key=value, got {s:?}"))
}

#[derive(Serialize)]
struct PlanOutput {
    snapshot: Snapshot,
    layout: Layout,
    mounts: Vec<Mount>,
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Plan { policy, kind, parents, id, root, config, labels } => {
            let kind = match kind {
                KindArg::Active => Kind::Active,
                KindArg::View => Kind::View,
            };
            let id = id.unwrap_or_else(|| parents.iter().max().copied().unwrap_or(0) + 1);
            let snapshot = Snapshot { id, kind, parent_ids: parents, labels };
            match plan(&policy, snapshot, &root, &config) {
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

fn plan(policy: &str, snapshot: Snapshot, root: &std::path::Path, config: &[(String, String)]) -> anyhow::Result<PlanOutput> {
    let wasm = read_policy(policy)?;
    let engine = Engine::new()?;
    let facts = wasmsnap_engine::probe_facts(&std::env::temp_dir());
    let loaded = Policy::load(&engine, policy, &wasm, config, &facts, Sandbox::default()).map_err(anyhow::Error::new)?;
    let layout = loaded.layout(&snapshot).map_err(anyhow::Error::new).context("layout")?;
    let plans = loaded.mounts(&snapshot).map_err(anyhow::Error::new).context("mounts")?;
    Ok(PlanOutput { mounts: render_mounts(root, &plans), snapshot, layout })
}
