//! The `wasmsnap` command line.

mod doctor;
mod explain;
mod policy;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use wasmsnap_daemon::config::Config;

#[derive(Parser)]
#[command(name = "wasmsnap", version, about = "A WebAssembly-pluggable snapshotter for containerd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve containerd's Snapshots API on a unix socket.
    Serve {
        /// Root directory for metadata and snapshots [default: /var/lib/wasmsnap]
        #[arg(long)]
        root: Option<PathBuf>,
        /// Unix socket to listen on [default: /run/wasmsnap/wasmsnap.sock]
        #[arg(long)]
        address: Option<PathBuf>,
        /// Config file (TOML); without one every built-in policy is served.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log level or tracing filter (e.g. `info`, `debug`) [default: the config's, or info]
        #[arg(long)]
        log_level: Option<String>,
        /// Serve Prometheus metrics at /metrics on a loopback address
        /// (`127.0.0.1:9311`) or a unix socket path [default: the config's, or none]
        #[arg(long)]
        metrics_address: Option<String>,
    },
    /// Work with policy components.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Work with config files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// One snapshot: its record, the policy answering for it, its layout and mounts as served.
    Explain(explain::ExplainArgs),
    /// Every snapshot of a snapshotter, as a tree, with each one's plan type.
    Tree(explain::TreeArgs),
    /// Check the node (kernel, root, socket) and containerd's config against what wasmsnap serves.
    Doctor(doctor::DoctorArgs),
    /// Benchmark a snapshotter socket, or compare wasmsnap with containerd's own (--compare).
    Bench(wasmsnap_bench::BenchArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (and load its policies) without serving.
    Check { file: PathBuf },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { root, address, config, log_level, metrics_address } => {
            let overrides =
                wasmsnap_daemon::reload::Overrides { root, address, log_level, metrics_address };
            serve(config, overrides)
        }
        Command::Policy(cmd) => return policy::run(cmd),
        Command::Doctor(args) => return doctor::run(args),
        Command::Explain(args) => explain::explain(args),
        Command::Tree(args) => explain::tree(args),
        Command::Config(ConfigCommand::Check { file }) => check_config(&file),
        Command::Bench(args) => wasmsnap_bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmsnap: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    file: Option<PathBuf>,
    overrides: wasmsnap_daemon::reload::Overrides,
) -> anyhow::Result<()> {
    let mut config = match &file {
        Some(f) => Config::load(f)?,
        None => {
            let mut c = Config::default();
            c.fill_defaults();
            c
        }
    };
    if let Some(root) = &overrides.root {
        wasmsnap_daemon::config::check_root("--root", root)?;
    }
    overrides.apply(&mut config);
    if let Some(m) = &config.metrics_address {
        m.parse::<wasmsnap_daemon::metrics::MetricsAddress>().context("--metrics-address")?;
    }
    init_logging(&config.log_level);
    wasmsnap_daemon::daemon::serve(config, file, overrides)
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let engine = wasmsnap_engine::Engine::new()?;
    let scratch = tempdir()?;
    for (name, cfg) in &config.snapshotters {
        let policy = wasmsnap_daemon::loader::load_policy(&engine, name, cfg, &scratch.join(name));
        let policy = policy.inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&scratch);
        })?;
        let info = policy.info();
        println!(
            "snapshotter {name}: policy {} loads (wasmsnap:policy@{}, sha256 {}); {}",
            cfg.policy,
            info.wit_version,
            info.sha256,
            wasmsnap_daemon::capabilities::line(&info.capabilities)
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{}: ok", file.display());
    Ok(())
}

/// A scratch directory for probing host facts without touching the root.
fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wasmsnap-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn init_logging(level: &str) {
    // Non-ASCII can panic tracing-subscriber's parser: such a level is as bad as any other.
    let parsed = level
        .is_ascii()
        .then(|| tracing_subscriber::EnvFilter::try_new(log_filter(level)).ok())
        .flatten();
    let filter = parsed.unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A bare level (`debug`) applies to wasmsnap's own crates; everything
/// else logs warnings only: at debug, Cranelift alone writes megabytes per
/// compiled policy. A full filter (`debug,cranelift_codegen=info`) is used
/// as it is.
fn log_filter(level: &str) -> String {
    match level.trim().parse::<tracing_subscriber::filter::LevelFilter>() {
        Ok(tracing_subscriber::filter::LevelFilter::OFF) => "off".to_string(),
        Ok(l) if !level.contains(['=', ',']) => {
            let ours = [
                "wasmsnap",
                "wasmsnap_daemon",
                "wasmsnap_harness",
                "wasmsnap_bench",
                "wasmsnap_engine",
                "wasmsnap_metastore",
                "wasmsnap_fs",
                "wasmsnap_plan",
            ];
            let mut filter = format!("warn,{}", ours.map(|c| format!("{c}={l}")).join(","));
            filter.make_ascii_lowercase();
            filter
        }
        _ => level.to_string(),
    }
}
