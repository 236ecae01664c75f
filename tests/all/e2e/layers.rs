//! The test image's content: three layers that exercise what an image
//! unpack must get right (an overwritten file, a whiteout, an opaque
//! directory, a symlink, a hard link), the probe the container runs, and what
//! the probe must print.

use std::collections::BTreeMap;

use super::tools::BUSYBOX;

/// One tar entry of a layer.
pub enum Entry {
    Dir(String),
    File(String, u32, Vec<u8>),
    Symlink(String, String),
    /// A hard link to a file earlier in the same layer.
    HardLink(String, String),
}

fn dir(path: &str) -> Entry {
    Entry::Dir(path.into())
}

fn text(path: &str, s: &str) -> Entry {
    Entry::File(path.into(), 0o644, s.as_bytes().to_vec())
}

/// An empty marker file: `.wh.NAME` deletes NAME, `.wh..wh..opq` makes its directory opaque.
fn whiteout(path: &str) -> Entry {
    Entry::File(path.into(), 0o644, Vec::new())
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry::Symlink(path.into(), target.into())
}

/// The busybox applets the probe uses, as symlinks in `/bin`.
const APPLETS: &[&str] =
    &["sh", "cat", "ls", "tr", "readlink", "stat", "rm", "mkdir", "echo", "test"];

/// Base, middle and top layer, bottom first.
pub fn layers() -> Vec<Vec<Entry>> {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| panic!("read {BUSYBOX}: {e}"));
    let mut base = vec![dir("bin"), Entry::File("bin/busybox".into(), 0o755, busybox)];
    base.extend(APPLETS.iter().map(|a| symlink(&format!("bin/{a}"), "busybox")));
    base.extend([
        dir("dev"),
        dir("proc"),
        dir("sys"),
        dir("tmp"),
        dir("etc"),
        text("etc/motd", "from layer 1\n"),
        dir("data"),
        text("data/doomed.txt", "deleted by a whiteout in layer 2\n"),
        text("data/kept.txt", "kept from layer 1\n"),
        dir("opaque"),
        text("opaque/old.txt", "hidden by the opaque whiteout in layer 3\n"),
        dir("opaque/sub"),
        text("opaque/sub/deep.txt", "hidden too\n"),
    ]);
    let middle = vec![
        dir("etc"),
        text("etc/motd", "from layer 2\n"),
        dir("data"),
        whiteout("data/.wh.doomed.txt"),
        text("data/original.txt", "hard linked in layer 2\n"),
        Entry::HardLink("data/hardlink.txt".into(), "data/original.txt".into()),
        symlink("data/motd-link", "../etc/motd"),
        dir("opaque"),
        text("opaque/from-layer2.txt", "hidden by the opaque whiteout in layer 3\n"),
    ];
    let top = vec![
        dir("etc"),
        text("etc/motd", "from layer 3\n"),
        dir("opaque"),
        whiteout("opaque/.wh..wh..opq"),
        text("opaque/new.txt", "after the opaque whiteout\n"),
    ];
    vec![base, middle, top]
}

/// Prints `key=value` lines describing the image as the container sees it,
/// then writes into its root filesystem (which must stay in the container's
/// own snapshot). With `write` false it only looks.
pub fn probe(write: bool) -> String {
    let mut s = String::from(
        r#"echo "motd=$(cat /etc/motd)"
if test -e /data/doomed.txt; then echo doomed=present; else echo doomed=absent; fi
echo "opaque=$(ls -A /opaque | tr '\n' ' ')"
echo "symlink=$(readlink /data/motd-link)"
echo "via-symlink=$(cat /data/motd-link)"
echo "hardlink=$(stat -c '%i/%h' /data/original.txt) $(stat -c '%i/%h' /data/hardlink.txt)"
echo "hardlink-content=$(cat /data/hardlink.txt)"
echo "kept=$(cat /data/kept.txt)"
if test -e /created-by-container; then echo created=present; else echo created=absent; fi
"#,
    );
    if write {
        s.push_str(
            r#"echo container-wrote > /etc/motd
echo container-wrote > /data/hardlink.txt
rm /data/kept.txt /opaque/new.txt
mkdir /created-by-container && echo x > /created-by-container/file
echo "after-write=$(cat /etc/motd)"
"#,
        );
    }
    s.push_str(&format!("echo {PROBE_DONE}\n"));
    s
}

/// What the probe prints about a fresh container of the image.
pub fn expected_view() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("motd", "from layer 3"),
        ("doomed", "absent"),
        ("opaque", "new.txt "),
        ("symlink", "../etc/motd"),
        ("via-symlink", "from layer 3"),
        ("hardlink-content", "hard linked in layer 2"),
        ("kept", "kept from layer 1"),
        ("created", "absent"),
        ("probe", "done"),
    ])
}

/// The probe's last line.
const PROBE_DONE: &str = "probe=done";

/// Whether the probe's output reached its last line (`probe=done`): `ctr
/// run` can lose the end of a fast task's output.
pub fn probe_finished(stdout: &str) -> bool {
    stdout.lines().any(|l| l == PROBE_DONE)
}

/// Parse the probe's `key=value` lines.
pub fn parse_probe(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Check the probe's output; every mismatch is listed, not just the first.
pub fn check_view(stdout: &str, wrote: bool) -> Result<(), String> {
    let got = parse_probe(stdout);
    let mut wrong = Vec::new();
    let mut expect = expected_view();
    if wrote {
        expect.insert("after-write", "container-wrote");
    }
    for (k, v) in &expect {
        match got.get(*k) {
            Some(g) if g == v => {}
            Some(g) => wrong.push(format!("{k}: expected {v:?}, got {g:?}")),
            None => wrong.push(format!("{k}: missing (expected {v:?})")),
        }
    }
    // Both names of the hard link: one inode, two links.
    match got.get("hardlink").map(|h| h.split(' ').collect::<Vec<_>>()) {
        Some(pair) if pair.len() == 2 && pair[0] == pair[1] && pair[0].ends_with("/2") => {}
        other => wrong.push(format!(
            "hardlink: expected one inode with 2 links for both names, got {other:?}"
        )),
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\nprobe printed:\n{stdout}", wrong.join("\n")))
    }
}
