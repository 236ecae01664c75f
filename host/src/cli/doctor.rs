//! `wasmsnap doctor`: what wasmsnap serves (from its config, the policies
//! asked what they support) handed to the checks of `wasmsnap-doctor`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use wasmsnap_daemon::config::Config;
use wasmsnap_doctor::{Options, Report, Served, Status};

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// wasmsnap's config file, as `serve` is given it; without one, the
    /// built-in policies under their own names.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The daemon's root [default: the config's, or /var/lib/wasmsnap]
    #[arg(long)]
    root: Option<PathBuf>,
    /// The daemon's socket [default: the config's, or /run/wasmsnap/wasmsnap.sock]
    #[arg(long)]
    address: Option<PathBuf>,
    /// containerd's config file (version 2 or 3) to check against what wasmsnap serves.
    #[arg(long)]
    containerd_config: Option<PathBuf>,
    /// containerd's version (e.g. 2.1) [default: 2.x for a version 3 config, else `containerd --version`]
    #[arg(long)]
    containerd_version: Option<String>,
    /// `text` (one line per check) or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

/// Exit status: 0 when nothing fails (warnings included), 1 when a check fails.
pub fn run(args: DoctorArgs) -> ExitCode {
    let mut report = Report::default();
    let served = served(&args, &mut report);
    let options = Options {
        containerd_config: args.containerd_config.clone(),
        containerd_version: args.containerd_version.clone(),
    };
    report.checks.extend(wasmsnap_doctor::run(&served, &options).checks);
    if args.format == "json" {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.worst() == Status::Fail { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn served(args: &DoctorArgs, report: &mut Report) -> Served {
    let mut config = match &args.config {
        Some(file) => match Config::load(file) {
            Ok(c) => {
                report.ok("wasmsnap.config", format!("{} is valid", file.display()));
                c
            }
            Err(e) => {
                report.fail(
                    "wasmsnap.config",
                    format!("{e:#}"),
                    "fix it (`wasmsnap config check FILE` says the same); the checks below assume the built-in policies",
                );
                defaults()
            }
        },
        None => defaults(),
    };
    if let Some(r) = &args.root {
        config.root = r.clone();
    }
    if let Some(a) = &args.address {
        config.address = a.clone();
    }
    // Capabilities matter only against containerd's config: policies are
    // loaded (compiled, through the daemon's cache if there is one) only then.
    let mut snapshotters = BTreeMap::new();
    let policies = args.containerd_config.is_some().then(|| policies(&config, report));
    for name in config.snapshotters.keys() {
        let supported = policies.as_ref().and_then(|p| p.get(name).cloned()).unwrap_or_default();
        snapshotters.insert(name.clone(), supported);
    }
    Served { root: config.root, address: config.address, snapshotters }
}

fn defaults() -> Config {
    let mut c = Config::default();
    c.fill_defaults();
    c
}

/// Each snapshotter's supported capabilities, from its loaded policy.
fn policies(
    config: &Config,
    report: &mut Report,
) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let engine = match engine(&config.root) {
        Ok(e) => e,
        Err(e) => {
            report.warn(
                "wasmsnap.policies",
                format!("cannot start the wasm engine: {e:#}"),
                "capabilities are checked as if no policy supported any",
            );
            return out;
        }
    };
    let scratch = std::env::temp_dir().join(format!("wasmsnap-doctor-{}", std::process::id()));
    for (name, cfg) in &config.snapshotters {
        let check = format!("wasmsnap.policy.{name}");
        match wasmsnap_daemon::loader::load_policy(&engine, name, cfg, &scratch.join(name)) {
            Ok(policy) => {
                let supported = wasmsnap_daemon::capabilities::supported(&policy);
                report.ok(
                    &check,
                    format!(
                        "{} loads (sha256 {}), capabilities {:?}",
                        cfg.policy,
                        &policy.info().sha256[..12],
                        supported
                    ),
                );
                out.insert(name.clone(), supported);
            }
            Err(e) => report.fail(
                &check,
                format!("{e:#}"),
                "fix the policy or its config: the daemon refuses to start with it",
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    out
}

/// The engine, through the daemon's compile cache when the root has one.
fn engine(root: &Path) -> anyhow::Result<wasmsnap_engine::Engine> {
    let engine = wasmsnap_engine::Engine::new()?;
    let dir = wasmsnap_daemon::loader::policy_cache_dir(root);
    if dir.is_dir()
        && let Ok(cached) = engine.clone().with_disk_cache(&dir)
    {
        return Ok(cached);
    }
    Ok(engine)
}
