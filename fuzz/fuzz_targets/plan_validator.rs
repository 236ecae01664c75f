//! cargo-fuzz target: see checks/plan.rs for what it checks.
#![no_main]

#[path = "../checks/input.rs"]
#[allow(dead_code)]
mod input;
#[path = "../checks/plan.rs"]
mod plan;

libfuzzer_sys::fuzz_target!(|data: &[u8]| plan::check(data));
