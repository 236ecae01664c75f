//! Every walker of a container-written tree, run 200 times while a thread
//! swaps a middle directory of the tree with a symlink to a canary outside
//! it, and a file with a device node (see `support/race.rs`). Each must
//! never open or read the canary, a fifo or a device (inotify), never count
//! or copy the canary, and never hang.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::mounts::{LoopXfs, Tmpfs};
use support::race::{self, Canary, Swapper};
use wasmsnap_fs::copy::copy_tree;
use wasmsnap_fs::{SnapshotDirs, usage};
use wasmsnap_plan::CopyMode;

const RUNS: usize = 200;

/// A tmpfs for the trees: the test measures the walkers, not a busy disk.
fn scratch(test: &str) -> Option<Tmpfs> {
    if !support::have_root(test) {
        return None;
    }
    match Tmpfs::mount("256m") {
        Ok(tmpfs) => Some(tmpfs),
        Err(reason) => {
            support::cannot_run(test, &reason);
            None
        }
    }
}
const LIMIT: Duration = Duration::from_secs(60);

/// A canary and a hostile tree at `<base>/tree`, with the swapper racing in
/// it; `filler` empty files per subdirectory widen the race window.
fn hostile(base: &Path, filler: usize) -> (Canary, Swapper, std::path::PathBuf) {
    let canary = Canary::new(&base.join("canary"));
    let tree = base.join("tree");
    std::fs::create_dir(&tree).unwrap();
    let a = race::build_tree_with(&tree, &canary, filler);
    let swapper = Swapper::start();
    swapper.race_in(Some(&a));
    swapper.wait_swaps(100);
    (canary, swapper, tree)
}

#[test]
fn usage_stays_in_the_tree_while_it_races() {
    let Some(base) = scratch("usage_stays_in_the_tree_while_it_races") else { return };
    let (canary, swapper, tree) = hostile(base.path(), 200);
    let started = Instant::now();
    let measured = race::within(LIMIT, "usage", move || {
        (0..RUNS).map(|i| (i, usage(&tree))).collect::<Vec<_>>()
    });
    eprintln!("usage: {RUNS} walks in {:?}, {} swaps", started.elapsed(), swapper.swaps());
    canary.assert_untouched("usage");
    let failed = measured.iter().filter(|(_, u)| u.is_err()).count();
    eprintln!("usage: {failed} of {RUNS} walks failed");
    for (i, u) in measured {
        let u = u.unwrap_or_else(|e| panic!("walk {i}: usage failed: {e}"));
        assert!(u.size < race::bound_bytes() as i64, "walk {i} counted the canary: {u:?}");
    }
    assert!(swapper.swaps() > 0, "the swapper never raced");
    canary.assert_untouched("usage");
}

fn copies_stay_in_the_tree(base: &Path, mode: CopyMode) {
    let (canary, swapper, tree) = hostile(base, 0);
    let copies = base.join("copies");
    std::fs::create_dir(&copies).unwrap();
    let started = Instant::now();
    let results = race::within(LIMIT, "copy", move || {
        (0..RUNS)
            .map(|i| {
                let dst = copies.join(i.to_string());
                let copied = copy_tree(&tree, &dst, mode).map(drop);
                let leaked = race::copy_has_canary(&dst);
                std::fs::remove_dir_all(&dst).ok();
                (i, copied, leaked)
            })
            .collect::<Vec<_>>()
    });
    eprintln!(
        "copy ({mode:?}): {RUNS} copies in {:?}, {} swaps",
        started.elapsed(),
        swapper.swaps()
    );
    canary.assert_untouched("copy");
    let failed = results.iter().filter(|(_, copied, _)| copied.is_err()).count();
    let leaked = results.iter().filter(|(_, _, leaked)| leaked.is_some()).count();
    eprintln!("copy: {failed} of {RUNS} copies failed, {leaked} hold the canary");
    for (i, copied, leaked) in results {
        copied.unwrap_or_else(|e| panic!("copy {i} failed: {e}"));
        assert_eq!(leaked, None, "copy {i} holds the canary's content");
    }
    assert!(swapper.swaps() > 0, "the swapper never raced");
    canary.assert_untouched("copy");
}

#[test]
fn copy_stays_in_the_tree_while_it_races() {
    let Some(base) = scratch("copy_stays_in_the_tree_while_it_races") else { return };
    copies_stay_in_the_tree(base.path(), CopyMode::Copy);
}

/// Clone-or-copy on XFS, where regular files are cloned (FICLONE).
#[test]
fn clone_stays_in_the_tree_while_it_races() {
    if !support::have_root("clone_stays_in_the_tree_while_it_races") {
        return;
    }
    let xfs = match LoopXfs::new(512 << 20) {
        Ok(xfs) => xfs,
        Err(reason) => {
            return support::cannot_run("clone_stays_in_the_tree_while_it_races", &reason);
        }
    };
    copies_stay_in_the_tree(xfs.path(), CopyMode::CloneOrCopy);
}

#[test]
fn remove_stays_in_the_tree_while_it_races() {
    let Some(base) = scratch("remove_stays_in_the_tree_while_it_races") else { return };
    let canary = Canary::new(&base.path().join("canary"));
    let dirs = SnapshotDirs::open(&base.path().join("root")).unwrap();
    let swapper = Swapper::start();
    let started = Instant::now();
    let dirs = race::within(LIMIT, "remove", move || {
        for id in 0..RUNS as u64 {
            // Made directly: a create's fsyncs would only slow the test.
            std::fs::create_dir_all(dirs.dir(id).join("fs")).unwrap();
            let a = race::build_tree(&dirs.dir(id).join("fs"), &canary);
            swapper.race_in(Some(&a));
            std::thread::sleep(Duration::from_micros(200));
            dirs.remove(id).unwrap_or_else(|e| panic!("remove {id}: {e}"));
            swapper.race_in(None);
            assert!(!dirs.dir(id).exists(), "remove {id} left the directory");
            for entry in ["big", race::CANARY_MARK, "d0/deeper"] {
                assert!(
                    canary.dir.join(entry).exists(),
                    "remove {id} removed the canary's {entry}"
                );
            }
            canary.assert_untouched(&format!("remove {id}"));
        }
        eprintln!("remove: {RUNS} removes, {} swaps", swapper.swaps());
        dirs
    });
    eprintln!("remove: done in {:?}", started.elapsed());
    drop(dirs);
}
