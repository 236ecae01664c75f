//! The sandbox a policy runs in: a WASI context that grants nothing, fixed
//! clocks and seeded randomness (so a plan depends only on its inputs),
//! captured stdout/stderr, and store limits on memory and time.
//!
//! Memory is bounded per call, not per linear memory: one memory, a few
//! small tables, [`HOSTCALL_FUEL`] bytes lifted out of the guest per call,
//! and at most [`Sandbox::max_calls`] calls (so instances) of one policy at
//! once, so a snapshotter's policy holds at most `max_calls x memory_bytes`.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use crate::output::Capture;

/// Limits of one policy's calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// Wall time one call (`init`, `layout`, `mounts`) may take.
    pub call_timeout: Duration,
    /// Bytes of linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Calls of one policy that may run at once; more wait for a turn (see
    /// `Policy`), so N concurrent requests cannot make N instances.
    pub max_calls: usize,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox { call_timeout: Duration::from_secs(1), memory_bytes: 64 << 20, max_calls: 4 }
    }
}

/// Bytes wasmtime may lift out of the guest in one call (a returned plan,
/// a string handed to a host function): a plan the validator accepts is at
/// most ~16 mounts of 64 options of 1 KiB plus 500 lower dir-refs each,
/// well under this. Without it wasmtime's default, 128 MiB, would copy a
/// plan that large into the host before validation could refuse it.
pub const HOSTCALL_FUEL: usize = 4 << 20;

/// Elements one table may hold. A Rust policy's function table holds a few
/// hundred to a few thousand entries; the limit is what makes `tables`
/// matter (32 tables of 1M elements were 256 MiB of host memory).
pub(crate) const TABLE_ELEMENTS: usize = 20_000;

/// What one store holds: the deny-all WASI context, its resources, the
/// captured output and the limiter.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) output: Capture,
    pub(crate) limiter: Limiter,
}

impl HostState {
    pub(crate) fn new(sandbox: &Sandbox) -> HostState {
        let output = Capture::default();
        // WasiCtxBuilder starts with no preopens, no env, no args, closed
        // stdin and every socket address denied; say the rest explicitly.
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FixedClock)
            .monotonic_clock(FixedClock)
            .secure_random(Deterministic::new(vec![0x5a, 0x17, 0xc3, 0x8e]))
            .insecure_random(Deterministic::new(vec![0x2f, 0x91, 0x64, 0xd0]))
            .insecure_random_seed(0)
            .max_random_size(64 << 10)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(sandbox.memory_bytes)
            // A Rust component has one memory and a handful of core
            // instances and tables; these bound a hostile one that
            // multiplies them (memory_size is per memory, so one memory
            // is what makes it a bound per instance).
            .memories(1)
            .tables(8)
            .instances(64)
            .table_elements(TABLE_ELEMENTS)
            .trap_on_grow_failure(true)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            output,
            limiter: Limiter { inner: limits, refused: None },
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The store limits, remembering a refused memory growth so a trap can be
/// reported as the memory limit it is.
pub(crate) struct Limiter {
    inner: StoreLimits,
    /// Bytes of the last memory growth refused.
    pub(crate) refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.refused = Some(desired);
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A clock that always reads the same: plans must not depend on time.
struct FixedClock;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The WASI version wasmtime-wasi 48 links; the clock overrides below
/// must name exactly the instance it defined to replace its functions.
const WASI_CLOCKS: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// The linker every policy is instantiated with: WASI (deny-all by its
/// context), the contract's types, and no way to wait.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // The contract's types, of every version this host speaks.
    crate::v0_1::bindings::wasmsnap::policy::types::add_to_linker::<HostState, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )?;
    crate::v0_2::bindings::wasmsnap::policy::types::add_to_linker::<HostState, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )?;
    // A sleeping guest would block a host thread in a host call, where the
    // epoch deadline cannot interrupt it: waiting on a clock traps instead.
    linker.allow_shadowing(true);
    let mut clocks = linker.instance(WASI_CLOCKS)?;
    clocks.func_wrap(
        "subscribe-duration",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(wasmtime::format_err!(
                "a policy may not wait on a clock (monotonic-clock.subscribe-duration)"
            ))
        },
    )?;
    clocks.func_wrap(
        "subscribe-instant",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(wasmtime::format_err!(
                "a policy may not wait on a clock (monotonic-clock.subscribe-instant)"
            ))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module of `memories` memories (1 page each) and `tables`
    /// funcref tables of `elements` elements each, hand-assembled.
    fn module(memories: u8, tables: u8, elements: u32) -> Vec<u8> {
        fn leb(mut n: u32, out: &mut Vec<u8>) {
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                out.push(if n == 0 { byte } else { byte | 0x80 });
                if n == 0 {
                    break;
                }
            }
        }
        fn section(id: u8, body: Vec<u8>, out: &mut Vec<u8>) {
            out.push(id);
            leb(body.len() as u32, out);
            out.extend(body);
        }
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        if tables > 0 {
            let mut body = vec![tables];
            for _ in 0..tables {
                body.extend([0x70, 0x00]); // funcref, min only
                leb(elements, &mut body);
            }
            section(4, body, &mut wasm);
        }
        if memories > 0 {
            let mut body = vec![memories];
            for _ in 0..memories {
                body.extend([0x00, 0x01]); // min 1 page
            }
            section(5, body, &mut wasm);
        }
        wasm
    }

    /// Instantiate `wasm` in a store limited as a policy's is.
    fn instantiate(wasm: &[u8]) -> Result<(), String> {
        let engine = crate::Engine::new().unwrap().inner;
        let mut store = wasmtime::Store::new(&engine, HostState::new(&Sandbox::default()));
        store.limiter(|state| &mut state.limiter);
        let module = wasmtime::Module::new(&engine, wasm).map_err(|e| e.to_string())?;
        wasmtime::Instance::new(&mut store, &module, &[]).map(drop).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn one_memory_per_store() {
        instantiate(&module(1, 0, 0)).unwrap();
        let err = instantiate(&module(2, 0, 0)).unwrap_err();
        assert!(err.contains("memory"), "{err}");
    }

    #[test]
    fn tables_are_few_and_small() {
        instantiate(&module(0, 8, TABLE_ELEMENTS as u32)).unwrap();
        let err = instantiate(&module(0, 1, TABLE_ELEMENTS as u32 + 1)).unwrap_err();
        assert!(err.contains("table"), "{err}");
        let err = instantiate(&module(0, 9, 1)).unwrap_err();
        assert!(err.contains("table"), "{err}");
    }
}
