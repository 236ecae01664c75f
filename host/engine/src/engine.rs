//! The shared wasmtime engine: component model on, epoch interruption on,
//! and a ticker thread that advances the epoch so every call has a
//! deadline. Compiled components are remembered by sha256, so loading the
//! same policy again (a second snapshotter, a reload) does not recompile;
//! with a [`DiskCache`] they are also kept on disk, so a restart does not
//! recompile either.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Component;

use crate::disk_cache::{DiskCache, Lookup};

/// How often the epoch advances: the granularity of call deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Compiled components kept for reuse.
const COMPILED_KEPT: usize = 16;

/// Recently compiled components by the sha256 of their bytes, oldest first.
type Compiled = VecDeque<([u8; 32], Component)>;

/// A wasmtime engine for policies. Cheap to clone; the ticker thread stops
/// when the last clone (and every policy loaded with it) is gone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: wasmtime::Engine,
    compiled: Arc<Mutex<Compiled>>,
    disk: Option<Arc<DiskCache>>,
    _ticker: Arc<Ticker>,
}

impl Engine {
    /// An engine whose instances are allocated on demand.
    pub fn new() -> anyhow::Result<Engine> {
        Self::with_config(base_config())
    }

    /// An engine with wasmtime's pooling allocator: instances come from
    /// pre-reserved slots, which makes fresh instances cheaper. `instances`
    /// bounds how many can live at once (pooled and in-flight, all policies
    /// together); each slot reserves address space for `memory_bytes`.
    pub fn pooling(instances: u32, memory_bytes: usize) -> anyhow::Result<Engine> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .total_tables(instances * 8)
            .max_memory_size(memory_bytes);
        let mut config = base_config();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        Self::with_config(config)
    }

    fn with_config(config: wasmtime::Config) -> anyhow::Result<Engine> {
        let inner = wasmtime::Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("create the wasm engine: {e:#}"))?;
        let ticker = Ticker::start(inner.clone())?;
        Ok(Engine { inner, compiled: Arc::default(), disk: None, _ticker: Arc::new(ticker) })
    }

    /// Keep compiled components in `dir` too (see [`DiskCache`]), so the
    /// next process with an engine like this one loads them without
    /// compiling.
    pub fn with_disk_cache(mut self, dir: &std::path::Path) -> anyhow::Result<Engine> {
        let cache = DiskCache::open(&self.inner, dir)
            .map_err(|e| anyhow::anyhow!("open the policy cache {}: {e}", dir.display()))?;
        self.disk = Some(Arc::new(cache));
        Ok(self)
    }

    /// The disk cache, if [`with_disk_cache`](Self::with_disk_cache) set one.
    pub fn disk_cache(&self) -> Option<&DiskCache> {
        self.disk.as_deref()
    }

    /// The wasmtime engine, e.g. for precompiling components.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// Compile `wasm` now (or find it compiled), so that a later
    /// [`Policy::load`](crate::Policy::load) of it only instantiates and
    /// runs `init`.
    pub fn precompile(&self, wasm: &[u8]) -> anyhow::Result<()> {
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(wasm).into();
        self.compile(digest, wasm).map(drop).map_err(|e| anyhow::anyhow!("{e:#}"))
    }

    /// Compile `wasm` (sha256 `digest`), or reuse an earlier compilation.
    pub(crate) fn compile(&self, digest: [u8; 32], wasm: &[u8]) -> wasmtime::Result<Component> {
        if let Some(c) = self.lock_compiled().iter().find(|(d, _)| *d == digest) {
            return Ok(c.1.clone());
        }
        let component = match &self.disk {
            Some(disk) => self.compile_through(disk, &digest, wasm)?,
            None => Component::new(&self.inner, wasm)?,
        };
        let mut compiled = self.lock_compiled();
        if compiled.len() == COMPILED_KEPT {
            compiled.pop_front();
        }
        compiled.push_back((digest, component.clone()));
        Ok(component)
    }

    /// Load from the disk cache, or compile and write the cache entry. A
    /// cache that cannot be written costs the next start a compilation,
    /// nothing else: logged, not an error.
    fn compile_through(
        &self,
        disk: &DiskCache,
        digest: &[u8; 32],
        wasm: &[u8],
    ) -> wasmtime::Result<Component> {
        let started = std::time::Instant::now();
        let sha256 = hex::encode(digest);
        match disk.load(&self.inner, digest) {
            Lookup::Hit(component) => {
                tracing::debug!(%sha256, took = ?started.elapsed(), "policy cache: loaded the compiled component");
                return Ok(component);
            }
            Lookup::Miss => {}
            Lookup::Bad(reason) => {
                tracing::warn!(%sha256, %reason, "policy cache: entry unusable, compiling again")
            }
        }
        let component = Component::new(&self.inner, wasm)?;
        match disk.store(digest, &component) {
            Ok(path) => {
                tracing::info!(%sha256, took = ?started.elapsed(), file = %path.display(), "policy cache: compiled and stored")
            }
            Err(e) => {
                tracing::warn!(%sha256, error = %format!("{e:#}"), "policy cache: cannot store the compiled component")
            }
        }
        Ok(component)
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, Compiled> {
        // The cache holds no invariant a panic could break.
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn base_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    // Policies are plain Rust (linear memory): no GC proposals, and no
    // collector compiled in to back them.
    config.gc_support(false);
    config
}

/// Advances the engine's epoch every [`TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: wasmtime::Engine) -> anyhow::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new().name("wasmsnap-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Ticker { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
