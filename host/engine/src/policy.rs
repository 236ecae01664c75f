//! A loaded policy: compiled and pre-instantiated once, then called from
//! any thread through a small pool of initialised instances.
//!
//! Each pooled instance owns a store that ran `init` once; a call takes
//! one (or makes one), runs under the call's epoch deadline, and puts it
//! back. A store that trapped, timed out or hit its memory limit is
//! dropped, never reused: its guest state is unknown. At most
//! `Sandbox::max_calls` calls run at once (see `permits`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmsnap_plan::{
    Capabilities, HostFacts, Layout, Limits, MountPlan, Snapshot, validate_layout, validate_mounts,
    validate_plan,
};
use wasmtime::{Store, Trap};

use crate::contract::{Outcome, PolicyBindings, PolicyPre};
use crate::engine::{Engine, TICK};
use crate::error::{DeclaredError, Func, PolicyError};
use crate::permits::{self, Permits};
use crate::quiet_panics;
use crate::sandbox::{HOSTCALL_FUEL, HostState, Sandbox, linker};
use crate::version::{Contract, SUPPORTED_WIT, contract};

/// What was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyInfo {
    /// How the operator named it (`builtin:overlay`, a file path).
    pub label: String,
    /// The `wasmsnap:policy` version it speaks.
    pub wit_version: &'static str,
    /// Hex sha256 of the component bytes.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// What its `init` declared (a 0.1 policy: nothing).
    pub capabilities: Capabilities,
}

/// A policy ready to answer `layout` and `mounts`. Send + Sync: share it
/// behind an `Arc` and call it from blocking worker threads (or quickly,
/// from a thread that must not wait: `layout_quick`).
pub struct Policy {
    info: PolicyInfo,
    engine: Engine,
    pre: PolicyPre,
    config: Vec<(String, String)>,
    facts: HostFacts,
    sandbox: Sandbox,
    deadline_ticks: u64,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
    max_idle: usize,
    permits: Permits,
    /// Quick calls of it that took longer than [`QUICK_CALL`]; at
    /// [`QUICK_STRIKES`] (at once for one that ran into
    /// [`QUICK_DEADLINE_TICKS`]) it is never asked quickly again (see
    /// [`layout_quick`](Policy::layout_quick)).
    slow_calls: AtomicU32,
}

/// The deadline of a quick call, in epoch ticks: it traps 10 to 20 ms in.
const QUICK_DEADLINE_TICKS: u64 = 2;

/// A quick call that takes longer than this is slow (a built-in policy
/// answers in a few µs; a preempted thread can take a few ms once).
const QUICK_CALL: Duration = Duration::from_millis(2);

/// Slow quick calls after which a policy is never asked quickly again: a
/// policy holds a quick caller up for 30 ms in all at most (three calls
/// under the 10 ms a deadline trap needs at least; a trap ends it at once).
const QUICK_STRIKES: u32 = 3;

/// How a call may wait: for its turn, an instance and up to the sandbox's
/// call timeout, or not at all (quick).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pace {
    Patient,
    Quick,
}

/// An initialised instance in its own store.
struct Instance {
    store: Store<HostState>,
    bindings: PolicyBindings,
}

impl Policy {
    /// Compile `wasm`, check its contract version, link it into the deny-all
    /// sandbox and run `init(config, facts)`; an error anywhere refuses it.
    /// `label` names the policy in every error.
    pub fn load(
        engine: &Engine,
        label: &str,
        wasm: &[u8],
        config: &[(String, String)],
        facts: &HostFacts,
        sandbox: Sandbox,
    ) -> Result<Policy, PolicyError> {
        let (digest, wit_version, pre) = Self::link(engine, label, wasm)?;
        let mut policy = Policy {
            info: PolicyInfo {
                label: label.to_string(),
                wit_version,
                sha256: hex::encode(digest),
                size: wasm.len(),
                capabilities: Capabilities::default(),
            },
            engine: engine.clone(),
            pre,
            config: config.to_vec(),
            facts: facts.clone(),
            sandbox,
            deadline_ticks: deadline_ticks(sandbox.call_timeout),
            limits: Limits::default(),
            idle: Mutex::new(Vec::new()),
            // No more instances wait than may run at once.
            max_idle: sandbox.max_calls.max(1),
            permits: Permits::new(sandbox.max_calls),
            slow_calls: AtomicU32::new(0),
        };
        // init runs now, so a bad config refuses the load, not a request.
        let (first, capabilities) = policy.fresh()?;
        policy.info.capabilities = capabilities;
        policy.put_back(first);
        Ok(policy)
    }

    /// Compile `wasm`, check its contract version and link it into the
    /// sandbox, without instantiating it: what [`load`](Self::load) does
    /// before `init`. An import the sandbox does not provide is named in
    /// the error (`policy inspect` uses this).
    pub fn check_link(engine: &Engine, label: &str, wasm: &[u8]) -> Result<(), PolicyError> {
        Self::link(engine, label, wasm).map(drop)
    }

    fn link(
        engine: &Engine,
        label: &str,
        wasm: &[u8],
    ) -> Result<([u8; 32], &'static str, PolicyPre), PolicyError> {
        let load_error = |reason: String| PolicyError::Load { label: label.to_string(), reason };
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        let component = engine
            .compile(digest, wasm)
            .map_err(|e| load_error(format!("not a valid component: {}", chain(&e))))?;
        let wit_version = match contract(&engine.inner, &component) {
            Contract::Supported(v) => v,
            Contract::Unsupported(found) => {
                return Err(PolicyError::UnsupportedVersion {
                    label: label.to_string(),
                    found: wasmsnap_plan::untrusted(&found),
                    supported: SUPPORTED_WIT.join(", "),
                });
            }
            Contract::Missing { exports } => {
                return Err(load_error(format!(
                    "it exports no wasmsnap:policy/policy interface (exports: {}); is it a wasmsnap policy?",
                    if exports.is_empty() {
                        "none".to_string()
                    } else {
                        wasmsnap_plan::untrusted(&exports.join(", "))
                    }
                )));
            }
        };
        let linker = linker(&engine.inner)
            .map_err(|e| load_error(format!("set up the sandbox: {}", chain(&e))))?;
        let pre = PolicyPre::new(wit_version, &linker, &component)
            .map_err(|e| load_error(format!("cannot link it into the sandbox: {}", chain(&e))))?;
        Ok((digest, wit_version, pre))
    }

    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    /// The host facts its `init` was given.
    pub fn host_facts(&self) -> &HostFacts {
        &self.facts
    }

    /// What the policy declared it supports at load.
    pub fn capabilities(&self) -> Capabilities {
        self.info.capabilities
    }

    /// Initialised instances waiting in the pool.
    pub fn idle_instances(&self) -> usize {
        self.lock_idle().len()
    }

    /// Drop every pooled instance (their memory goes back); the next calls
    /// instantiate and `init` afresh.
    pub fn clear_idle(&self) {
        self.lock_idle().clear();
    }

    /// The layout for a new snapshot, validated.
    pub fn layout(&self, s: &Snapshot) -> Result<Layout, PolicyError> {
        Ok(self.layout_at(s, Pace::Patient)?.expect("a patient call always answers"))
    }

    /// The mounts of a snapshot, validated (render them with
    /// `wasmsnap_plan::render_mounts`).
    pub fn mounts(&self, s: &Snapshot) -> Result<Vec<MountPlan>, PolicyError> {
        Ok(self.mounts_at(s, Pace::Patient)?.expect("a patient call always answers"))
    }

    /// `layout` then `mounts` for a new snapshot (Prepare, View), each
    /// validated, and checked together: a mount of the snapshot's own
    /// directory needs a layout that creates it.
    pub fn plan(&self, s: &Snapshot) -> Result<(Layout, Vec<MountPlan>), PolicyError> {
        let layout = self.layout(s)?;
        let mounts = self.mounts(s)?;
        self.check_plan(s, &layout, &mounts)?;
        Ok((layout, mounts))
    }

    /// [`layout`](Self::layout) for a caller that must not be held up (the
    /// daemon's reactor thread, which answers every other request): `None`
    /// where `layout` would wait for a turn or start an instance, where
    /// quick calls of this policy took over 2 ms three times, or where
    /// this one runs into the quick deadline (10 to 20 ms; the instance is
    /// dropped, and the policy is never asked quickly again), or makes a
    /// host call that cannot run in the caller's tokio runtime (see
    /// `quiet_panics`; never asked quickly again either). The caller
    /// then asks `layout` where waiting is fine. A policy's own errors and
    /// traps are errors, as from `layout`; a slow call that answers still
    /// answers. A policy loaded again starts afresh.
    pub fn layout_quick(&self, s: &Snapshot) -> Result<Option<Layout>, PolicyError> {
        self.layout_at(s, Pace::Quick)
    }

    /// [`mounts`](Self::mounts) as [`layout_quick`](Self::layout_quick) is `layout`.
    pub fn mounts_quick(&self, s: &Snapshot) -> Result<Option<Vec<MountPlan>>, PolicyError> {
        self.mounts_at(s, Pace::Quick)
    }

    fn layout_at(&self, s: &Snapshot, pace: Pace) -> Result<Option<Layout>, PolicyError> {
        let Some(layout) = self.call("layout", pace, |b, store| b.layout(store, s))? else {
            return Ok(None);
        };
        validate_layout(s, &layout, &self.limits).map_err(|error| self.invalid("layout", error))?;
        Ok(Some(layout))
    }

    fn mounts_at(&self, s: &Snapshot, pace: Pace) -> Result<Option<Vec<MountPlan>>, PolicyError> {
        let Some(mounts) = self.call("mounts", pace, |b, store| b.mounts(store, s))? else {
            return Ok(None);
        };
        validate_mounts(s, &mounts, &self.limits).map_err(|error| self.invalid("mounts", error))?;
        Ok(Some(mounts))
    }

    /// The checks of [`plan`](Self::plan) that need layout and mounts
    /// together, for a caller that made the two calls itself.
    pub fn check_plan(
        &self,
        s: &Snapshot,
        layout: &Layout,
        mounts: &[MountPlan],
    ) -> Result<(), PolicyError> {
        validate_plan(s, layout, mounts).map_err(|error| self.invalid("mounts", error))
    }

    /// Run `f` on an initialised instance under the call's deadline;
    /// `None` only for a quick call that could not run or finish quickly.
    fn call<R>(
        &self,
        func: Func,
        pace: Pace,
        f: impl FnOnce(&PolicyBindings, &mut Store<HostState>) -> Outcome<R>,
    ) -> Result<Option<R>, PolicyError> {
        let quick = pace == Pace::Quick;
        if quick && self.slow_calls.load(Ordering::Relaxed) >= QUICK_STRIKES {
            return Ok(None);
        }
        let Some(_turn) = self.permits.acquire(if quick { Duration::ZERO } else { permits::WAIT })
        else {
            if quick {
                return Ok(None);
            }
            return Err(PolicyError::Busy {
                label: self.info.label.clone(),
                func,
                max_calls: self.permits.max(),
                waited: permits::WAIT,
            });
        };
        let mut instance = match (self.take_idle(), pace) {
            (Some(instance), _) => instance,
            (None, Pace::Patient) => self.fresh()?.0,
            (None, Pace::Quick) => return Ok(None),
        };
        instance.store.set_epoch_deadline(if quick {
            QUICK_DEADLINE_TICKS
        } else {
            self.deadline_ticks
        });
        let started = Instant::now();
        let outcome = match pace {
            Pace::Patient => f(&instance.bindings, &mut instance.store),
            // See `quiet_panics`: a WASI call run through tokio panics on
            // the reactor. `instance` is dropped: its store was mid-call.
            Pace::Quick => match quiet_panics::catch(|| f(&instance.bindings, &mut instance.store))
            {
                Ok(outcome) => outcome,
                Err(panic) => {
                    if self.slow_calls.swap(QUICK_STRIKES, Ordering::Relaxed) < QUICK_STRIKES {
                        tracing::warn!(policy = %self.info.label, func, %panic, "policy made a host call that cannot run on the reactor (WASI output, files or streams, run through tokio): it is called off the reactor from now on");
                    }
                    return Ok(None);
                }
            },
        };
        let interrupted = |e: &wasmtime::Error| e.downcast_ref::<Trap>() == Some(&Trap::Interrupt);
        let took = started.elapsed();
        if quick && (took > QUICK_CALL || outcome.as_ref().is_err_and(interrupted)) {
            let strikes = if outcome.as_ref().is_err_and(interrupted) { QUICK_STRIKES } else { 1 };
            let before = self.slow_calls.fetch_add(strikes, Ordering::Relaxed);
            if before < QUICK_STRIKES && before + strikes >= QUICK_STRIKES {
                tracing::warn!(policy = %self.info.label, func, ?took, "policy calls too slow for the reactor (over 2 ms): it is called off the reactor from now on");
            }
        }
        match outcome {
            Ok(result) => {
                self.log_output(func, &instance.store);
                self.put_back(instance);
                result.map(Some).map_err(|e| self.declared(func, e))
            }
            // Too slow for a quick call: asked again patiently.
            Err(e) if quick && interrupted(&e) => Ok(None),
            // `instance` is dropped here: a trapped store is never reused.
            Err(e) => Err(self.failure(func, &instance.store, e)),
        }
    }

    /// A new store and instance that ran `init`, and what `init` declared.
    fn fresh(&self) -> Result<(Instance, Capabilities), PolicyError> {
        let mut store = Store::new(&self.engine.inner, HostState::new(&self.sandbox));
        store.limiter(|state| &mut state.limiter);
        store.set_hostcall_fuel(HOSTCALL_FUEL);
        store.epoch_deadline_trap();
        // Instantiation runs guest start code: it gets a deadline too.
        store.set_epoch_deadline(self.deadline_ticks);
        let bindings = match self.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => return Err(self.failure("instantiate", &store, e)),
        };
        store.set_epoch_deadline(self.deadline_ticks);
        match bindings.init(&mut store, &self.config, &self.facts) {
            Ok(Ok(capabilities)) => {
                self.log_output("init", &store);
                Ok((Instance { store, bindings }, capabilities))
            }
            Ok(Err(e)) => Err(self.declared("init", e)),
            Err(e) => Err(self.failure("init", &store, e)),
        }
    }

    fn take_idle(&self) -> Option<Instance> {
        self.lock_idle().pop()
    }

    fn put_back(&self, instance: Instance) {
        let mut idle = self.lock_idle();
        if idle.len() < self.max_idle {
            idle.push(instance);
        }
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Instance>> {
        // A Vec push/pop cannot leave it inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tell a timeout, a refused memory growth and any other trap apart.
    fn failure(&self, func: Func, store: &Store<HostState>, e: wasmtime::Error) -> PolicyError {
        let label = self.info.label.clone();
        let output = store.data().output.take();
        if let Some(asked) = store.data().limiter.refused {
            return PolicyError::MemoryLimit {
                label,
                func,
                limit: self.sandbox.memory_bytes,
                asked,
                output,
            };
        }
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return PolicyError::Timeout { label, func, limit: self.sandbox.call_timeout, output };
        }
        let reason = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            // An error from a host function (e.g. a refused clock wait), or
            // wasmtime's "too much data ... hostcall fuel" when what the
            // guest returned is over HOSTCALL_FUEL.
            None => e.root_cause().to_string(),
        };
        PolicyError::Trap { label, func, reason, output }
    }

    /// A declared error, its message escaped and capped where it enters the
    /// host (whatever the contract version): it goes on to a gRPC status, a
    /// log line and the harness's report.
    fn declared(&self, func: Func, error: DeclaredError) -> PolicyError {
        use wasmsnap_plan::untrusted;
        let error = match error {
            DeclaredError::InvalidConfig(m) => DeclaredError::InvalidConfig(untrusted(&m)),
            DeclaredError::Unsupported(m) => DeclaredError::Unsupported(untrusted(&m)),
            DeclaredError::Failed(m) => DeclaredError::Failed(untrusted(&m)),
        };
        PolicyError::Declared { label: self.info.label.clone(), func, error }
    }

    fn invalid(&self, func: Func, error: wasmsnap_plan::ValidationError) -> PolicyError {
        PolicyError::InvalidPlan { label: self.info.label.clone(), func, error }
    }

    /// A policy that printed something on a good call: log it.
    fn log_output(&self, func: Func, store: &Store<HostState>) {
        let output = &store.data().output;
        if !output.is_empty() {
            // Taken even when the log is off: the next call starts clean.
            let text = output.take();
            tracing::info!(policy = %self.info.label, func, output = %text, "policy output");
        }
    }
}

/// Epoch ticks for `timeout`: rounded up, plus one because the tick in
/// progress may be about to end.
fn deadline_ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_nanos().div_ceil(TICK.as_nanos()) as u64;
    ticks.max(1) + 1
}

/// An error and its causes, `outer: inner: root`.
fn chain(e: &wasmtime::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}
