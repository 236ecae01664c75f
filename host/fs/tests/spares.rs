//! Spare trees: made ahead, used by a create with the same layout shape,
//! never used where the parent's owner differs, gone after cleanup and drop.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use wasmsnap_fs::SnapshotDirs;
use wasmsnap_plan::Step;

fn steps() -> Vec<Step> {
    vec![
        Step::Mkdir { name: "fs".into(), mode: 0o755 },
        Step::Mkdir { name: "work".into(), mode: 0o711 },
        Step::ChownLikeParent { name: "fs".into() },
    ]
}

fn names(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Spares wait in `<root>/spares`, beside `snapshots/`.
fn spares(root: &Path) -> usize {
    std::fs::read_dir(root.join("spares")).map_or(0, |d| d.count())
}

#[test]
fn a_create_takes_a_spare_with_the_layouts_modes() {
    let root = tempfile::tempdir().unwrap();
    let dirs = SnapshotDirs::open(root.path()).unwrap();
    dirs.make_spares(&steps(), 2).unwrap();
    assert_eq!(spares(root.path()), 2);

    dirs.create(1, &steps(), None).unwrap().keep();
    assert_eq!(spares(root.path()), 1, "one spare was used");
    let made = root.path().join("snapshots/1");
    assert_eq!(std::fs::metadata(made.join("fs")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::metadata(made.join("work")).unwrap().permissions().mode() & 0o7777, 0o711);
    assert_eq!(std::fs::read_dir(made.join("fs")).unwrap().count(), 0);

    // Steps of another shape do not take it.
    dirs.create(2, &[Step::Mkdir { name: "fs".into(), mode: 0o700 }], None).unwrap().keep();
    assert_eq!(spares(root.path()), 1);
    assert_eq!(
        std::fs::metadata(root.path().join("snapshots/2/fs")).unwrap().permissions().mode()
            & 0o7777,
        0o700
    );

    let report = dirs.cleanup(&HashSet::from([1, 2])).unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(names(root.path()), vec!["1", "2"]);
    assert_eq!(spares(root.path()), 0, "cleanup drops spares");

    dirs.make_spares(&steps(), 1).unwrap();
    assert_eq!(spares(root.path()), 1);
    assert_eq!(names(root.path()), vec!["1", "2"], "spares are not in snapshots/");
    drop(dirs);
    assert_eq!(spares(root.path()), 0, "drop removes spares");
}

#[test]
fn a_parent_owned_by_someone_else_is_chowned_not_served_a_spare() {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("parent-fs");
    std::fs::create_dir(&parent).unwrap();
    std::os::unix::fs::lchown(&parent, Some(1234), Some(1235)).unwrap();
    let dirs = SnapshotDirs::open(root.path()).unwrap();
    dirs.make_spares(&steps(), 1).unwrap();

    dirs.create(7, &steps(), Some(&parent)).unwrap().keep();
    let fs = std::fs::metadata(root.path().join("snapshots/7/fs")).unwrap();
    assert_eq!((fs.uid(), fs.gid()), (1234, 1235));
    assert_eq!(spares(root.path()), 1, "the spare was kept for another create");

    // A parent owned like the spare takes it.
    let ours = root.path().join("our-fs");
    std::fs::create_dir(&ours).unwrap();
    dirs.create(8, &steps(), Some(&ours)).unwrap().keep();
    assert_eq!(spares(root.path()), 0);
}
