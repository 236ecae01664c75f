//! A copy-parent layout is flushed either entry by entry (a small tree of
//! directories and files) or with one syncfs (a big tree, or one with other
//! kinds of entries); both leave the same copy in place.

use std::collections::BTreeSet;
use std::path::Path;

use wasmsnap_fs::SnapshotDirs;
use wasmsnap_plan::{CopyMode, Step};

fn tree(dir: &Path, files: usize, symlink: bool) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..files {
        std::fs::write(
            dir.join(if i % 2 == 0 { "sub" } else { "." }).join(format!("f{i}")),
            format!("data {i}"),
        )
        .unwrap();
    }
    if symlink {
        std::os::unix::fs::symlink("sub/f0", dir.join("link")).unwrap();
    }
}

fn listing(dir: &Path) -> BTreeSet<(String, Vec<u8>)> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                todo.push(p);
                out.insert((rel, Vec::new()));
            } else if meta.is_symlink() {
                out.insert((
                    rel,
                    std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes(),
                ));
            } else {
                out.insert((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn small_and_big_copies_are_complete() {
    let root = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(root.path()).unwrap();
    let steps = [Step::CopyParent { name: "fs".into(), mode: CopyMode::Copy }];
    for (id, files, symlink) in [(1, 3, false), (2, 600, false), (3, 3, true)] {
        let parent = root.path().join(format!("parent-{id}"));
        tree(&parent, files, symlink);
        dirs.create(id, &steps, Some(&parent)).unwrap().keep();
        assert_eq!(
            listing(&root.path().join(format!("snapshots/{id}/fs"))),
            listing(&parent),
            "copy {id}"
        );
    }
}
