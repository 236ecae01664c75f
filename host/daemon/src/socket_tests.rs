use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::*;

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_file_is_a_0660_socket_that_accepts_and_nothing_else_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let address = dir.path().join("run").join("wasmsnap.sock");
    let (_listener, file) = listen(&address).unwrap();
    let m = std::fs::symlink_metadata(&address).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o7777, SOCKET_MODE);
    assert_eq!(m.nlink(), 1, "the temporary name is still linked");
    assert_eq!(names(&dir.path().join("run")), ["wasmsnap.sock"]);
    UnixStream::connect(&address).expect("accepts");
    file.remove_file();
    assert!(!address.exists());
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let address = dir.path().join("s.sock");
    drop(UnixListener::bind(&address).unwrap());
    assert!(UnixStream::connect(&address).is_err(), "stale: nobody answers");
    let (_listener, _file) = listen(&address).unwrap();
    UnixStream::connect(&address).expect("the new socket accepts");
    assert_eq!(names(dir.path()), ["s.sock"]);
}

#[test]
fn a_socket_in_use_is_refused_and_the_temporary_name_removed() {
    let dir = tempfile::tempdir().unwrap();
    let address = dir.path().join("s.sock");
    let live = UnixListener::bind(&address).unwrap();
    let ino = std::fs::metadata(&address).unwrap().ino();
    let e = listen(&address).unwrap_err();
    assert!(format!("{e:#}").contains("in use by another process"), "{e:#}");
    assert_eq!(std::fs::metadata(&address).unwrap().ino(), ino, "the live socket was replaced");
    assert_eq!(names(dir.path()), ["s.sock"]);
    drop(live);
}

#[test]
fn a_file_that_is_not_a_socket_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let address = dir.path().join("s.sock");
    std::fs::write(&address, "operator's file").unwrap();
    let e = listen(&address).unwrap_err();
    assert!(format!("{e:#}").contains("is not a socket; refusing to replace it"), "{e:#}");
    assert_eq!(std::fs::read_to_string(&address).unwrap(), "operator's file");
    assert_eq!(names(dir.path()), ["s.sock"]);

    // A symlink is not followed, nor replaced.
    std::fs::remove_file(&address).unwrap();
    std::os::unix::fs::symlink("/run/elsewhere.sock", &address).unwrap();
    let e = listen(&address).unwrap_err();
    assert!(format!("{e:#}").contains("is not a socket"), "{e:#}");
    assert!(std::fs::symlink_metadata(&address).unwrap().file_type().is_symlink());
    assert_eq!(names(dir.path()), ["s.sock"]);
}

#[test]
fn an_address_too_long_for_its_temporary_name_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // The address itself fits (about 103 bytes), its temporary name does not.
    let long = dir.path().join("d".repeat(80));
    std::fs::create_dir(&long).unwrap();
    let e = listen(&long.join("s.sock")).unwrap_err();
    assert!(format!("{e:#}").contains("is too long"), "{e:#}");
    assert!(names(&long).is_empty(), "left {:?}", names(&long));
}

#[test]
fn a_leftover_of_an_interrupted_bind_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let leftover = dir.path().join(".s.sock.bind-Ab12Cd");
    std::fs::create_dir(&leftover).unwrap();
    drop(UnixListener::bind(leftover.join("s")).unwrap());
    let (_listener, _file) = listen(&dir.path().join("s.sock")).unwrap();
    assert_eq!(names(dir.path()), ["s.sock"]);
}

#[test]
fn a_socket_replaced_by_another_process_is_not_removed_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let address = dir.path().join("s.sock");
    let (listener, file) = listen(&address).unwrap();
    drop(listener);
    std::fs::remove_file(&address).unwrap();
    let _other = UnixListener::bind(&address).unwrap();
    file.remove_file();
    assert!(address.exists(), "removed another process's socket");
}
