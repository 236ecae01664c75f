//! cargo-fuzz target: see checks/config.rs for what it checks.
#![no_main]

#[path = "../checks/input.rs"]
#[allow(dead_code)]
mod input;
#[path = "../checks/config.rs"]
mod config;

libfuzzer_sys::fuzz_target!(|data: &[u8]| config::check(data));
