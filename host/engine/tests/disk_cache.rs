//! The on-disk cache of compiled components: a second engine loads what
//! the first compiled, a damaged or foreign entry is rebuilt, entries of
//! another engine configuration are removed, and a cached component plans
//! exactly like a freshly compiled one.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{config, facts, snapshot};
use sha2::{Digest, Sha256};
use wasmsnap_engine::{Engine, Policy, Sandbox, builtin};
use wasmsnap_plan::Kind;

fn digest(wasm: &[u8]) -> [u8; 32] {
    Sha256::digest(wasm).into()
}

fn load(engine: &Engine, wasm: &[u8]) -> Policy {
    Policy::load(engine, "builtin:overlay", wasm, &config(&[]), &facts(), Sandbox::default())
        .expect("loads")
}

fn cached_engine(dir: &Path) -> Engine {
    Engine::new().unwrap().with_disk_cache(dir).expect("open the cache")
}

#[test]
fn a_second_engine_loads_the_compiled_component_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let wasm = builtin("overlay").unwrap();

    let first = cached_engine(&dir);
    let fresh = load(&first, wasm);
    let entry = first.disk_cache().unwrap().path(&digest(wasm));
    assert!(entry.exists(), "{} written", entry.display());
    assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let written = fs::metadata(&entry).unwrap().modified().unwrap();

    // A new engine (a restart) with the same settings uses the entry as it is.
    let second = cached_engine(&dir);
    let cached = load(&second, wasm);
    assert_eq!(
        fs::metadata(&entry).unwrap().modified().unwrap(),
        written,
        "the entry was not rewritten"
    );
    let s = snapshot(Kind::Active, 2);
    assert_eq!(cached.mounts(&s).unwrap(), fresh.mounts(&s).unwrap());
    assert_eq!(cached.layout(&s).unwrap(), fresh.layout(&s).unwrap());
    // Nothing but the entry in the directory: no temporary files left.
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn a_damaged_entry_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let wasm = builtin("native").unwrap();
    load(&cached_engine(&dir), wasm);
    let entry = cached_engine(&dir).disk_cache().unwrap().path(&digest(wasm));
    let good = fs::read(&entry).unwrap();

    // One flipped byte deep in the machine code, then a truncation, then
    // garbage: each time the next engine compiles again and rewrites it.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for damaged in [flipped, good[..good.len() / 3].to_vec(), b"not a cache file".to_vec()] {
        fs::write(&entry, &damaged).unwrap();
        let engine = cached_engine(&dir);
        let policy = load(&engine, wasm);
        policy.mounts(&snapshot(Kind::View, 1)).expect("the rebuilt policy answers");
        assert_eq!(fs::read(&entry).unwrap(), good, "the entry is whole again");
    }
}

#[test]
fn foreign_and_leftover_files_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let wasm = builtin("bind").unwrap();
    load(&cached_engine(&dir), wasm);
    let ours = cached_engine(&dir).disk_cache().unwrap().path(&digest(wasm));
    // An entry of another engine version (another compatibility hash) and
    // a crash's leftover temporary file.
    let foreign = dir.join(format!("{}-0123456789abcdef.cwasm", hex::encode(digest(wasm))));
    fs::write(&foreign, b"old").unwrap();
    fs::write(dir.join(".tmp-1-0"), b"half").unwrap();

    let engine = cached_engine(&dir);
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(names, vec![ours.clone()]);
    // retain keeps only what is named.
    assert_eq!(engine.disk_cache().unwrap().retain(&[digest(wasm)]).unwrap(), 0);
    assert!(ours.exists());
    assert_eq!(engine.disk_cache().unwrap().retain(&[]).unwrap(), 1);
    assert!(!ours.exists());
}
