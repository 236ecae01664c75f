//! The policy under test, loaded into the real engine (the daemon's own
//! sandbox and validation), once per distinct config and host facts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use wasmsnap_engine::{DeclaredError, Engine, Policy, PolicyError, Sandbox};
use wasmsnap_plan::{HostFacts, Layout, Mount, MountPlan, Snapshot, render_mounts};

use super::cases::Case;
use super::failure::{Failure, FailureKind, Stage};

/// What a policy answered for one snapshot.
#[derive(Clone, Debug)]
pub struct Plan {
    pub layout: Layout,
    pub plans: Vec<MountPlan>,
    /// `plans` rendered under the case's root.
    pub mounts: Vec<Mount>,
}

pub struct Subject {
    pub label: String,
    pub wasm: Cow<'static, [u8]>,
    /// The snapshotter name mounts are rendered for, unless a case file
    /// names one: the daemon keeps it under `<root>/<snapshotter>`.
    pub snapshotter: String,
    engine: Engine,
    /// Loaded instances by (config, facts): `init` depends on both.
    loaded: HashMap<String, Result<Rc<Policy>, Failure>>,
}

impl Subject {
    /// The component is compiled here, once, so that what a case's load
    /// costs afterwards is instantiation and `init`.
    pub fn new(
        label: &str,
        wasm: Cow<'static, [u8]>,
        snapshotter: &str,
    ) -> anyhow::Result<Subject> {
        let engine = Engine::new()?;
        // A component that does not compile fails each case's load, which
        // says why.
        let _ = engine.precompile(&wasm);
        Ok(Subject {
            label: label.to_string(),
            wasm,
            snapshotter: snapshotter.to_string(),
            engine,
            loaded: HashMap::new(),
        })
    }

    /// The policy initialised with the case's config and facts.
    pub fn policy(
        &mut self,
        config: &[(String, String)],
        facts: &HostFacts,
    ) -> Result<Rc<Policy>, Failure> {
        self.load(config, facts).0
    }

    /// [`policy`](Self::policy), and how long `init` (with instantiation)
    /// took if this call ran it: the first case of each config and facts.
    pub fn load(
        &mut self,
        config: &[(String, String)],
        facts: &HostFacts,
    ) -> (Result<Rc<Policy>, Failure>, Option<Duration>) {
        let key = format!("{config:?}{facts:?}");
        if let Some(loaded) = self.loaded.get(&key) {
            return (loaded.clone(), None);
        }
        let started = Instant::now();
        let loaded =
            Policy::load(&self.engine, &self.label, &self.wasm, config, facts, Sandbox::default())
                .map(Rc::new)
                .map_err(failure);
        let took = started.elapsed();
        self.loaded.insert(key, loaded.clone());
        (loaded, Some(took))
    }

    /// `init`, `layout` and `mounts` for the case's snapshot, as Prepare or
    /// View would call them; the first failure stops. Mounts are rendered
    /// where the daemon would: `<root>/<snapshotter>`.
    pub fn evaluate(&mut self, case: &Case) -> Result<Plan, Failure> {
        let policy = self.policy(&case.config, &case.facts)?;
        plan(&policy, &case.snapshot, &case.store_root(&self.snapshotter))
    }
}

/// `layout` and `mounts` of `snapshot`, mounts rendered under `root`.
pub fn plan(policy: &Policy, snapshot: &Snapshot, root: &std::path::Path) -> Result<Plan, Failure> {
    let (layout, plans) = policy.plan(snapshot).map_err(failure)?;
    let mounts = render_mounts(root, &plans, snapshot.id_map.as_ref());
    Ok(Plan { layout, plans, mounts })
}

/// The engine's error as the harness reports it: where, which kind, why.
pub fn failure(e: PolicyError) -> Failure {
    let stage = |func: &str| Stage::parse(func).unwrap_or(Stage::Init);
    let with_output = |reason: String, output: &str| {
        if output.trim().is_empty() {
            reason
        } else {
            format!("{reason}\nguest output:\n{}", output.trim_end())
        }
    };
    match &e {
        PolicyError::Load { reason, .. } => {
            Failure { stage: Stage::Init, kind: FailureKind::Load, message: reason.clone() }
        }
        PolicyError::UnsupportedVersion { found, supported, .. } => Failure {
            stage: Stage::Init,
            kind: FailureKind::Version,
            message: format!(
                "built for wasmsnap:policy@{found}, but this host supports wasmsnap:policy@{supported}"
            ),
        },
        PolicyError::Trap { func, reason, output, .. } => Failure {
            stage: stage(func),
            kind: FailureKind::Trap,
            message: with_output(reason.clone(), output),
        },
        PolicyError::Timeout { func, limit, output, .. } => Failure {
            stage: stage(func),
            kind: FailureKind::Timeout,
            message: with_output(format!("exceeded its time limit of {limit:?}"), output),
        },
        PolicyError::MemoryLimit { func, limit, asked, output, .. } => Failure {
            stage: stage(func),
            kind: FailureKind::Trap,
            message: with_output(
                format!("exceeded its memory limit of {limit} bytes (asked for {asked})"),
                output,
            ),
        },
        PolicyError::Busy { func, max_calls, waited, .. } => Failure {
            stage: stage(func),
            kind: FailureKind::Timeout,
            message: format!("all {max_calls} calls busy for {waited:?}"),
        },
        PolicyError::Declared { func, error, .. } => {
            let message = match error {
                DeclaredError::InvalidConfig(m) => format!("invalid-config: {m}"),
                DeclaredError::Unsupported(m) => format!("unsupported: {m}"),
                DeclaredError::Failed(m) => format!("failed: {m}"),
            };
            Failure { stage: stage(func), kind: FailureKind::Declared, message }
        }
        PolicyError::InvalidPlan { func, error, .. } => Failure {
            stage: stage(func),
            kind: FailureKind::InvalidPlan,
            message: error.to_string(),
        },
    }
}
