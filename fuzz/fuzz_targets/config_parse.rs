//! cargo-fuzz target: see checks/config.rs for what it checks.
#![no_main]

#[path = "../checks/config.rs"]
mod config;
#[path = "../checks/input.rs"]
#[allow(dead_code)]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| config::check(data));
