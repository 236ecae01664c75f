//! Paths of the policy components the tests load, built by this crate's
//! build.rs for wasm32-wasip2 (as wasmtime's `test-programs/artifacts`
//! does): the test guests of `tests/policies/` and the example policy of
//! `plugins/examples/`. Only tests depend on this crate, so a production
//! build never compiles them.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
