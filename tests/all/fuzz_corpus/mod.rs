//! The fuzz targets' checks (`fuzz/checks/`), run by every `cargo test`
//! without cargo-fuzz: over each target's corpus (`fuzz/corpus/<target>/`),
//! over every input a fuzzer found failing (`fuzz/regressions/<target>/`,
//! kept forever), and over a bounded number of seeded mutations of the
//! corpus (`WASMSNAP_FUZZ_SEED` repeats a run, `WASMSNAP_FUZZ_ITERATIONS`
//! sets how many per target).

#[path = "../../../fuzz/checks/config.rs"]
mod config;
#[path = "../../../fuzz/checks/filter.rs"]
mod filter;
#[path = "../../../fuzz/checks/input.rs"]
#[allow(dead_code)]
mod input;
#[path = "../../../fuzz/checks/plan.rs"]
mod plan;
use crate::stress;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use stress::Rng;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The corpus and the regressions of `target`, by file.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            out.push((entry.path(), std::fs::read(entry.path()).unwrap()));
        }
    }
    out.sort();
    out
}

/// Runs `check` on every stored input, then on mutations of them; a
/// failure names the input, to be added to `fuzz/regressions/<target>/`.
fn run(target: &str, check: fn(&[u8])) {
    let stored = inputs(target);
    assert!(!stored.is_empty(), "no corpus for {target} in {}", fuzz_dir().display());
    for (path, data) in &stored {
        if std::env::var_os("WASMSNAP_FUZZ_VERBOSE").is_some() {
            eprintln!("{}", path.display());
        }
        if catch_unwind(|| check(data)).is_err() {
            panic!("{target}: {} fails", path.display());
        }
    }
    let iterations: usize =
        std::env::var("WASMSNAP_FUZZ_ITERATIONS").ok().map_or(20_000, |v| v.parse().unwrap());
    let mut rng = Rng::new(Rng::seed_from_env("WASMSNAP_FUZZ_SEED"));
    for _ in 0..iterations {
        let base = &stored[rng.below(stored.len() as u64) as usize].1;
        let data = mutate(&mut rng, base, &stored);
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            panic!(
                "{target}: a mutated input fails; add it to fuzz/regressions/{target}/: {:?}",
                escape(&data)
            );
        }
    }
}

/// A few random edits: flips, inserts, deletes, copies, splices.
fn mutate(rng: &mut Rng, base: &[u8], stored: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut data = base.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = if data.is_empty() { 0 } else { rng.below(data.len() as u64 + 1) as usize };
        match rng.below(6) {
            0 if at < data.len() => data[at] ^= 1 << rng.below(8),
            1 => data.insert(at, rng.next() as u8),
            2 if at < data.len() => {
                let end = (at + 1 + rng.below(8) as usize).min(data.len());
                data.drain(at..end);
            }
            3 if at < data.len() => {
                let end = (at + 1 + rng.below(16) as usize).min(data.len());
                let piece = data[at..end].to_vec();
                let to = rng.below(data.len() as u64 + 1) as usize;
                data.splice(to..to, piece);
            }
            4 => {
                let other = &stored[rng.below(stored.len() as u64) as usize].1;
                if !other.is_empty() {
                    let from = rng.below(other.len() as u64) as usize;
                    let end = (from + 1 + rng.below(32) as usize).min(other.len());
                    data.splice(at..at, other[from..end].iter().copied());
                }
            }
            _ => {
                let special: &[&[u8]] = &[
                    b"\"",
                    b"\\",
                    b"\0",
                    b"\n",
                    b",",
                    b"=",
                    b"==",
                    b"~=",
                    b".",
                    b"\xff",
                    "é".as_bytes(),
                ];
                let token = special[rng.below(special.len() as u64) as usize];
                data.splice(at..at, token.iter().copied());
            }
        }
    }
    data
}

fn escape(data: &[u8]) -> String {
    data.iter().flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect()
}

#[test]
fn filter_parser() {
    run("filter_parser", filter::check);
}

#[test]
fn plan_validator() {
    run("plan_validator", plan::check);
}

#[test]
fn config_parse() {
    run("config_parse", config::check);
}
