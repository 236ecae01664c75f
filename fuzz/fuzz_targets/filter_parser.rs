//! cargo-fuzz target: see checks/filter.rs for what it checks.
#![no_main]

#[path = "../checks/filter.rs"]
mod filter;
#[path = "../checks/input.rs"]
#[allow(dead_code)]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| filter::check(data));
