//! The whole-system tests: one test binary (as wasmtime's `tests/all`), one
//! module per concern, so wasmtime and tonic are linked once, not per file.
//! Most start a real `wasmsnap serve` (the binary cargo built) on a temp
//! root and socket. Run one module with `cargo test -p wasmsnap --test all
//! -- MODULE::`.

mod common;
mod e2e;
mod stress;

/// Crash safety and bad input (docs/crash-safety.md).
mod bad_requests;
/// `wasmsnap bench` against a daemon (smoke: prints the table).
mod bench_smoke;
/// containerd's conformance suite (Go, tests/conformance) against `wasmsnap serve`.
mod conformance;
/// containerd 2.x through the gRPC socket: parallel unpack (rebase) and
/// user namespaces (remap-ids).
mod containerd2;
/// A real, private containerd with wasmsnap as its proxy snapshotter.
mod containerd_e2e;
/// Random churn, SIGKILL, recovery checks (docs/crash-safety.md).
mod crash_recovery;
/// The snapshotter's fast paths keep containerd's semantics.
mod fast_paths;
/// The fuzz targets' checks over their corpora and regressions (fuzz/).
mod fuzz_corpus;
/// The daemon over its real gRPC socket: every RPC, every error code.
mod grpc_api;
/// Hostile policies next to a healthy one; pins, versions, the compile cache, SIGHUP.
mod hostile_policies;
/// `wasmsnap policy test` and `policy inspect` as the real binary.
mod policy_harness;
/// Concurrent clients for a bounded time: no deadlock, flat resources.
mod soak;
