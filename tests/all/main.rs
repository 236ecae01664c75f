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
/// Walkers of container-written trees racing a hostile container (docs/security.md).
mod container_trees;
/// containerd 2.x through the gRPC socket: parallel unpack (rebase) and
/// user namespaces (remap-ids).
mod containerd2;
/// A real, private containerd with wasmsnap as its proxy snapshotter.
mod containerd_e2e;
/// Random churn, SIGKILL, recovery checks (docs/crash-safety.md).
mod crash_recovery;
/// `wasmsnap doctor` against a running daemon and containerd configs.
mod doctor;
/// `wasmsnap explain` and `wasmsnap tree` over the admin API.
mod explain;
/// The snapshotter's fast paths keep containerd's semantics.
mod fast_paths;
/// The fuzz targets' checks over their corpora and regressions (fuzz/).
mod fuzz_corpus;
/// The daemon over its real gRPC socket: every RPC, every error code.
mod grpc_api;
/// docs/policy-authoring.md's commands, run as written from an empty directory.
mod guide;
/// The harness renders byte for byte what the daemon returns over gRPC.
mod harness_matches_daemon;
/// Hostile policies next to a healthy one; pins, versions, the compile cache, SIGHUP.
mod hostile_policies;
/// serve --metrics-address: promtool and a real Prometheus.
mod metrics;
/// `wasmsnap policy test` and `policy inspect` as the real binary.
mod policy_harness;
/// Prepare, View and Commit on the reactor where flushes cost nothing.
mod reactor_writes;
/// The socket appears only when it accepts; systemd readiness (NOTIFY_SOCKET).
mod readiness;
/// Concurrent clients for a bounded time: no deadlock, flat resources.
mod soak;
/// A broken policy or metastore leaves only its snapshotter unavailable.
mod unavailable;
