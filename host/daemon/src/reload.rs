//! Hot reload (SIGHUP): read the config file again and swap in the
//! policies that changed, all or nothing.
//!
//! A snapshotter's policy changed when its section differs (policy, pin,
//! config, limits) or when the component its `policy` names now has
//! another sha256 (a file replaced in place). Every changed policy is
//! loaded first (read, pin checked, compiled, `init` run); only if all of
//! them load are they swapped in, each atomically behind its snapshotter's
//! lock ([`Snapshotter::set_policy`]). Calls in flight finish on the policy
//! they started with; the next call takes the new one. If the file or any
//! policy is broken, nothing changes and the error says why.
//!
//! What a reload does not change, and says so in the log: `root` and
//! `address` (the metastores are open and the socket is bound), `log_level`,
//! and the set of names served: containerd learns its proxy snapshotters
//! only when it starts, so adding or removing a name means restarting
//! containerd, and wasmsnap is restarted with it. A section added or removed
//! is logged as waiting for a restart; the other sections still reload.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use wasmsnap_engine::{Engine, Policy};

use crate::config::Config;
use crate::loader::{load_policy_bytes, read_policy, sha256_hex};
use crate::service::Service;

/// What the command line set, which wins over the file at every reload too.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub address: Option<PathBuf>,
    pub log_level: Option<String>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(r) = &self.root {
            config.root = r.clone();
        }
        if let Some(a) = &self.address {
            config.address = a.clone();
        }
        if let Some(l) = &self.log_level {
            config.log_level = l.clone();
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Snapshotters now on a new policy.
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Settings read but not applied (they need a restart), as messages.
    pub ignored: Vec<String>,
}

/// Reloads one daemon's config; one reload at a time.
pub struct Reloader {
    engine: Engine,
    file: Option<PathBuf>,
    overrides: Overrides,
    service: Service,
    /// The config in force: the start's, with the reloads applied since.
    running: Mutex<Config>,
}

impl Reloader {
    /// `file` is the config file the daemon started with, if any.
    pub fn new(
        engine: Engine,
        file: Option<PathBuf>,
        overrides: Overrides,
        service: Service,
        running: Config,
    ) -> Reloader {
        Reloader { engine, file, overrides, service, running: Mutex::new(running) }
    }

    /// Read the config file again and swap in every changed policy, or
    /// change nothing and say why.
    pub fn reload(&self) -> anyhow::Result<Reloaded> {
        let file = self
            .file
            .as_ref()
            .context("serve was started without --config: there is no file to reload")?;
        let mut next = Config::load(file)?;
        self.overrides.apply(&mut next);
        // Poisoning cannot leave `running` half-changed: it is assigned whole.
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = Reloaded { ignored: restart_only(&running, &next), ..Reloaded::default() };

        let mut swaps: Vec<(String, Policy)> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        for (name, cfg) in &next.snapshotters {
            let Some(before) = running.snapshotters.get(name) else { continue };
            let snapshotter = self.service.get(name)?;
            let wasm = match read_policy(&cfg.policy) {
                Ok(wasm) => wasm,
                Err(e) => {
                    errors.push(format!("snapshotter {name:?}: {e:#}"));
                    continue;
                }
            };
            if cfg == before && sha256_hex(&wasm) == snapshotter.policy().info().sha256 {
                done.unchanged.push(name.clone());
                continue;
            }
            match load_policy_bytes(&self.engine, name, cfg, snapshotter.root(), &wasm) {
                Ok(policy) => swaps.push((name.clone(), policy)),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if !errors.is_empty() {
            anyhow::bail!("{}", errors.join("; "));
        }

        let mut applied = running.clone();
        for (name, policy) in swaps {
            let snapshotter = self.service.get(&name)?;
            let old = snapshotter.policy().info().clone();
            tracing::info!(
                snapshotter = %name,
                old_policy = %old.label, old_sha256 = %old.sha256,
                new_policy = %policy.info().label, new_sha256 = %policy.info().sha256,
                "reload: new policy in place; calls in flight finish on the old one"
            );
            snapshotter.set_policy(policy);
            applied.snapshotters.insert(name.clone(), next.snapshotters[&name].clone());
            done.changed.push(name);
        }
        *running = applied;
        Ok(done)
    }
}

/// Differences a reload cannot apply, as messages naming the key.
fn restart_only(running: &Config, next: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if next.root != running.root {
        out.push(format!(
            "root: {} -> {} needs a restart",
            running.root.display(),
            next.root.display()
        ));
    }
    if next.address != running.address {
        out.push(format!(
            "address: {} -> {} needs a restart",
            running.address.display(),
            next.address.display()
        ));
    }
    if next.log_level != running.log_level {
        out.push(format!(
            "log_level: {:?} -> {:?} needs a restart",
            running.log_level, next.log_level
        ));
    }
    for name in next.snapshotters.keys().filter(|n| !running.snapshotters.contains_key(*n)) {
        out.push(format!(
            "snapshotters.{name}: added; served after a restart (of containerd too, to use it)"
        ));
    }
    for name in running.snapshotters.keys().filter(|n| !next.snapshotters.contains_key(*n)) {
        out.push(format!("snapshotters.{name}: removed; still served until a restart"));
    }
    out
}
