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

fn refusal(dir: &Path) -> String {
    format!("{:#}", Engine::new().unwrap().with_disk_cache(dir).err().expect("refused"))
}

/// Whoever can write the cache runs code as root: a cache dir under a
/// parent writable by others, or owned by another user, is refused,
/// naming the path and the rule (the daemon then compiles in memory).
#[test]
fn an_untrusted_cache_dir_is_refused_naming_path_and_rule() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let e = refusal(&open.join("cache"));
    assert!(
        e.contains(&format!("{} is writable by group or others (mode 0777)", open.display())),
        "{e}"
    );
    assert!(e.ends_with("[cache-writable]"), "{e}");

    let theirs = tmp.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let e = refusal(&theirs.join("cache"));
    assert!(e.contains(&format!("{} is owned by uid 65534", theirs.display())), "{e}");
    assert!(e.ends_with("[cache-owner]"), "{e}");

    // A root-owned sticky parent (as /tmp) is fine: others cannot move root's entries.
    let sticky = tmp.path().join("sticky");
    fs::create_dir(&sticky).unwrap();
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).unwrap();
    cached_engine(&sticky.join("cache"));
}

/// A symlink planted as the cache dir is not used, and the chmod to 0700
/// does not go through it to its target.
#[test]
fn a_symlinked_cache_dir_is_neither_used_nor_chmodded() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("elsewhere");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    let link = tmp.path().join("cache");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = refusal(&link);
    assert!(e.contains("not a plain directory") && e.ends_with("[cache-symlink]"), "{e}");
    assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o7777, 0o755);
}

/// An entry replaced by a symlink (to a good artifact elsewhere) is not
/// followed: the component is compiled again and the entry rewritten.
#[test]
fn a_symlinked_entry_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let wasm = builtin("overlay").unwrap();
    load(&cached_engine(&dir), wasm);
    let entry = cached_engine(&dir).disk_cache().unwrap().path(&digest(wasm));
    let good = fs::read(&entry).unwrap();
    let outside = tmp.path().join("planted.cwasm");
    fs::rename(&entry, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &entry).unwrap();

    let policy = load(&cached_engine(&dir), wasm);
    policy.mounts(&snapshot(Kind::View, 1)).unwrap();
    let meta = fs::symlink_metadata(&entry).unwrap();
    assert!(meta.file_type().is_file(), "the symlink was used as the entry");
    assert_eq!(fs::read(&entry).unwrap(), good);
}
