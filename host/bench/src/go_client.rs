//! `--go-client BIN`: the workload driven by containerd's own proxy
//! snapshotter client (`tests/goclient`, the same calls as `workload::run`)
//! instead of the Rust client, as containerd reaches a proxy_plugins
//! snapshotter. One child process per run and target; its JSON on stdout
//! becomes that run's samples.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::stats::Samples;
use super::workload::{Op, RunSamples, Shape};

/// The table's first line: which client made the calls.
pub fn describe(go_client: Option<&Path>) -> String {
    match go_client {
        Some(bin) => format!("client: containerd's Go proxy client ({})", bin.display()),
        None => "client: wasmsnap's Rust client (tonic)".into(),
    }
}

/// Runs the workload once through `bin` against `snapshotter` at `socket`.
pub fn run(
    bin: &Path,
    socket: &Path,
    snapshotter: &str,
    prefix: &str,
    shape: Shape,
) -> anyhow::Result<RunSamples> {
    let mut command = Command::new(bin);
    command
        .arg("-address")
        .arg(socket)
        .args(["-snapshotter", snapshotter, "-prefix", prefix])
        .args(["-depth", &shape.depth.to_string()])
        .args(["-workers", &shape.workers.to_string()])
        .args(["-churn", &shape.churn_per_worker.to_string()]);
    let out = command.output().with_context(|| format!("start the Go client {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "the Go client {} failed ({}): {}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    parse(&out.stdout).with_context(|| format!("the output of the Go client {}", bin.display()))
}

/// One operation's samples as the Go client writes them.
#[derive(Deserialize)]
struct GoSamples {
    wall_ns: u64,
    latencies_ns: Vec<u64>,
}

/// The Go client's op names (tests/goclient/workload.go).
fn op_named(name: &str) -> Option<Op> {
    Some(match name {
        "prepare+commit" => Op::PrepareCommit,
        "prepare" => Op::Prepare,
        "commit" => Op::Commit,
        "stat" => Op::Stat,
        "list" => Op::List,
        "view" => Op::View,
        "mounts" => Op::Mounts,
        "remove views" => Op::RemoveView,
        "churn" => Op::Churn,
        "remove chain" => Op::RemoveChain,
        _ => return None,
    })
}

/// The JSON object of op name to samples; every operation must be there,
/// so a Go client out of step with the workload fails instead of leaving rows empty.
fn parse(stdout: &[u8]) -> anyhow::Result<RunSamples> {
    let by_name: HashMap<String, GoSamples> =
        serde_json::from_slice(stdout).context("not a JSON object of op name to samples")?;
    let mut samples = RunSamples::new();
    for (name, go) in by_name {
        let op = op_named(&name).with_context(|| format!("unknown op {name:?}"))?;
        samples.insert(
            op,
            Samples {
                latencies: go.latencies_ns.into_iter().map(Duration::from_nanos).collect(),
                wall: Duration::from_nanos(go.wall_ns),
            },
        );
    }
    let missing: Vec<_> = Op::ALL.iter().filter(|op| !samples.contains_key(op)).collect();
    anyhow::ensure!(missing.is_empty(), "no samples for {missing:?}");
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 10] = [
        "prepare+commit",
        "prepare",
        "commit",
        "stat",
        "list",
        "view",
        "mounts",
        "remove views",
        "churn",
        "remove chain",
    ];

    fn output(names: &[&str]) -> String {
        let ops: Vec<String> = names
            .iter()
            .map(|n| format!(r#""{n}":{{"wall_ns":3000,"latencies_ns":[1000,2000]}}"#))
            .collect();
        format!("{{{}}}\n", ops.join(","))
    }

    #[test]
    fn every_op_name_maps_onto_its_row() {
        let samples = parse(output(&NAMES).as_bytes()).unwrap();
        assert_eq!(samples.len(), Op::ALL.len());
        let churn = &samples[&Op::Churn];
        assert_eq!(churn.latencies, [Duration::from_micros(1), Duration::from_micros(2)]);
        assert_eq!(churn.wall, Duration::from_micros(3));
    }

    #[test]
    fn a_missing_or_unknown_op_is_an_error() {
        let err = parse(output(&NAMES[1..]).as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("PrepareCommit"), "{err:#}");
        let mut names = NAMES.to_vec();
        names.push("walk");
        let err = parse(output(&names).as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("unknown op \"walk\""), "{err:#}");
    }
}
