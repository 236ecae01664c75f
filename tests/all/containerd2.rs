//! containerd 2.x's two snapshotter features, driven through the daemon's
//! gRPC socket exactly as containerd drives a proxy snapshotter (its
//! unpacker, applier, metadata layer and mount code, read from its source):
//!
//! - parallel unpack (capability `rebase`): every layer Prepared without a
//!   parent, labelled as the unpacker labels it, applied as the applier
//!   applies it (into `upperdir=` of a lone overlay mount, whiteouts turned
//!   into 0/0 char devices and `trusted.overlay.opaque`), then committed in
//!   order with `CommitSnapshotRequest.parent`; the mounted View must equal
//!   the same image unpacked the sequential way, file for file;
//! - user namespaces (capability `remap-ids`): a Prepare with the id-map
//!   labels owns `fs` by the mapped root, its mounts carry the map, and a
//!   real idmapped mount of its layers shows the mapped owners;
//! - every refusal (bad maps, bad rebases) changes nothing.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Daemon, api};
use sha2::{Digest, Sha256};
use tonic::Code;
use wasmsnap_harness::mount_sys::Mounted;

type Client = wasmsnap_daemon::wire::proto::snapshots::snapshots_client::SnapshotsClient<
    tonic::transport::Channel,
>;

const UID_LABEL: &str = "containerd.io/snapshot/uidmapping";
const GID_LABEL: &str = "containerd.io/snapshot/gidmapping";
const REF_LABEL: &str = "containerd.io/snapshot.ref";
const DIFF_ID_LABEL: &str = "containerd.io/snapshot/diff-id";
const PARENT_CHAIN_LABEL: &str = "containerd.io/snapshot/parent-chain-id";

// ---------------------------------------------------------------- the image

/// One tar entry of a test layer.
enum Entry {
    Dir(&'static str, u32, u32, u32),
    File(&'static str, &'static str, u32, u32, u32),
    Symlink(&'static str, &'static str),
    HardLink(&'static str, &'static str),
    /// `.wh.<name>` or `.wh..wh..opq`: an empty regular file.
    Whiteout(&'static str),
}

/// Three layers: a file deleted in layer 2, a directory made opaque in
/// layer 3; owners, modes, a symlink and a hard link along the way.
fn image() -> Vec<Vec<u8>> {
    use Entry::*;
    vec![
        tar(&[
            Dir("etc", 0o755, 0, 0),
            File("etc/config", "one", 0o644, 0, 0),
            File("etc/gone", "deleted in layer 2", 0o600, 0, 0),
            Dir("bin", 0o755, 0, 0),
            File("bin/tool", "#!/bin/sh\n", 0o4755, 1000, 1000),
            Symlink("bin/link", "tool"),
            HardLink("bin/hard", "bin/tool"),
            Dir("data", 0o750, 1000, 1000),
            File("data/old", "hidden by layer 3", 0o644, 1000, 1000),
            Dir("data/sub", 0o755, 1000, 1000),
            File("data/sub/deep", "hidden too", 0o644, 1000, 1000),
        ]),
        tar(&[
            Dir("etc", 0o755, 0, 0),
            Whiteout("etc/.wh.gone"),
            File("etc/config", "two", 0o640, 0, 42),
            Dir("home", 0o700, 42, 43),
            File("home/note", "from layer 2", 0o600, 42, 43),
        ]),
        tar(&[
            Dir("data", 0o755, 1000, 1000),
            Whiteout("data/.wh..wh..opq"),
            File("data/fresh", "only this", 0o644, 1000, 1000),
        ]),
    ]
}

fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        let (path, data): (&str, &[u8]) = match e {
            Entry::Dir(p, mode, uid, gid) => {
                h.set_entry_type(tar::EntryType::Directory);
                set(&mut h, *mode, *uid, *gid);
                (p, b"")
            }
            Entry::File(p, content, mode, uid, gid) => {
                h.set_entry_type(tar::EntryType::Regular);
                set(&mut h, *mode, *uid, *gid);
                (p, content.as_bytes())
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(target).unwrap();
                set(&mut h, 0o777, 0, 0);
                (p, b"")
            }
            Entry::HardLink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name(target).unwrap();
                set(&mut h, 0o4755, 1000, 1000);
                (p, b"")
            }
            Entry::Whiteout(p) => {
                h.set_entry_type(tar::EntryType::Regular);
                set(&mut h, 0o644, 0, 0);
                (p, b"")
            }
        };
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn set(h: &mut tar::Header, mode: u32, uid: u32, gid: u32) {
    h.set_mode(mode);
    h.set_uid(uid.into());
    h.set_gid(gid.into());
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// OCI chain ids: the first is the diff id, then sha256("<prev> <diff>").
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        out.push(match out.last() {
            None => d.clone(),
            Some(prev) => digest(format!("{prev} {d}").as_bytes()),
        });
    }
    out
}

// ------------------------------------------------------------- the applier

/// containerd's `apply` (core/diff/apply): a lone `overlay` mount with
/// `upperdir=` is written into directly, whiteouts converted for overlay;
/// anything else is mounted and the tar applied with whiteouts as
/// deletions.
fn apply(mounts: &[wasmsnap_daemon::wire::proto::Mount], layer: &[u8], scratch: &Path) {
    if let [m] = mounts
        && m.r#type == "overlay"
        && let Some(upper) = m.options.iter().find_map(|o| o.strip_prefix("upperdir="))
    {
        untar(Path::new(upper), layer, true);
        return;
    }
    let target = scratch.join(format!("apply-{}", rand_suffix()));
    std::fs::create_dir_all(&target).unwrap();
    let mut mounted = Mounted::new(&target);
    for m in mounts {
        mounted.mount(&plan_mount(m), 4096).expect("mount for apply");
    }
    untar(&target, layer, false);
    mounted.unmount().unwrap();
    std::fs::remove_dir(&target).unwrap();
}

fn plan_mount(m: &wasmsnap_daemon::wire::proto::Mount) -> wasmsnap_plan::Mount {
    wasmsnap_plan::Mount {
        r#type: m.r#type.clone(),
        source: m.source.clone(),
        target: String::new(),
        options: m.options.clone(),
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// containerd's `applyNaive` with `OverlayConvertWhiteout` (overlay) or
/// its default whiteout handling (deletion).
fn untar(root: &Path, layer: &[u8], overlay: bool) {
    let mut archive = tar::Archive::new(layer);
    let mut unpacked: Vec<PathBuf> = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let rel = entry.path().unwrap().into_owned();
        let path = root.join(&rel);
        let dir = path.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        let base = rel.file_name().unwrap().to_str().unwrap().to_string();
        let h = entry.header().clone();
        let (uid, gid) = (h.uid().unwrap() as u32, h.gid().unwrap() as u32);
        if base == ".wh..wh..opq" {
            if overlay {
                xattr_set(&dir, "trusted.overlay.opaque", b"y");
            } else {
                for child in std::fs::read_dir(&dir).unwrap() {
                    let child = child.unwrap().path();
                    if !unpacked.contains(&child) {
                        remove_all(&child);
                    }
                }
            }
            continue;
        }
        if let Some(original) = base.strip_prefix(".wh.") {
            let original = dir.join(original);
            if overlay {
                nix::sys::stat::mknod(
                    &original,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .unwrap();
                std::os::unix::fs::lchown(&original, Some(uid), Some(gid)).unwrap();
            } else {
                remove_all(&original);
            }
            continue;
        }
        let is_dir = h.entry_type() == tar::EntryType::Directory;
        if let Ok(md) = std::fs::symlink_metadata(&path)
            && !(md.is_dir() && is_dir)
        {
            remove_all(&path);
        }
        let mode = h.mode().unwrap();
        match h.entry_type() {
            tar::EntryType::Directory => {
                if !path.exists() {
                    std::fs::create_dir(&path).unwrap();
                }
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
                std::fs::write(&path, data).unwrap();
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            tar::EntryType::Symlink => {
                std::os::unix::fs::symlink(h.link_name().unwrap().unwrap(), &path).unwrap();
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).unwrap();
            }
            tar::EntryType::Link => {
                let target = root.join(h.link_name().unwrap().unwrap());
                std::fs::hard_link(target, &path).unwrap();
            }
            other => panic!("unexpected entry type {other:?}"),
        }
        unpacked.push(path);
    }
}

fn remove_all(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer with its length.
    let r =
        unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}

// ------------------------------------------------------------- the client

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn prepare(
    c: &mut Client,
    snapshotter: &str,
    key: &str,
    parent: &str,
    labels: HashMap<String, String>,
) -> Result<Vec<wasmsnap_daemon::wire::proto::Mount>, tonic::Status> {
    let r = api::PrepareSnapshotRequest {
        snapshotter: snapshotter.into(),
        key: key.into(),
        parent: parent.into(),
        labels,
    };
    Ok(c.prepare(r).await?.into_inner().mounts)
}

async fn commit(
    c: &mut Client,
    snapshotter: &str,
    name: &str,
    key: &str,
    parent: &str,
    labels: HashMap<String, String>,
) -> Result<(), tonic::Status> {
    let r = api::CommitSnapshotRequest {
        snapshotter: snapshotter.into(),
        name: name.into(),
        key: key.into(),
        labels,
        parent: parent.into(),
    };
    c.commit(r).await.map(|_| ())
}

/// The unpacker's labels for layer `i`.
fn layer_labels(i: usize, chains: &[String], diffs: &[String]) -> HashMap<String, String> {
    let mut l = labels(&[(REF_LABEL, &chains[i]), (DIFF_ID_LABEL, &diffs[i])]);
    if i > 0 {
        l.insert(PARENT_CHAIN_LABEL.into(), chains[i - 1].clone());
    }
    l
}

/// Backend names as containerd's metadata layer makes them:
/// `<namespace>/<sequence>/<name>`.
fn backend(ns: &str, seq: usize, name: &str) -> String {
    format!("{ns}/{seq}/{name}")
}

/// The sequential unpack (containerd < 2.2, or no `rebase`): each layer on
/// the one below. Returns the backend name of the top layer.
async fn unpack_sequential(c: &mut Client, s: &str, ns: &str, scratch: &Path) -> String {
    let image = image();
    let diffs: Vec<String> = image.iter().map(|l| digest(l)).collect();
    let chains = chain_ids(&diffs);
    let mut parent = String::new();
    for (i, layer) in image.iter().enumerate() {
        let key = backend(ns, 10 + 2 * i, &format!("extract-{i} {}", chains[i]));
        let mut l = layer_labels(i, &chains, &diffs);
        l.remove(PARENT_CHAIN_LABEL); // sequential: the parent is given
        let mounts = prepare(c, s, &key, &parent, l).await.expect("prepare layer");
        apply(&mounts, layer, scratch);
        let name = backend(ns, 11 + 2 * i, &chains[i]);
        commit(c, s, &name, &key, "", labels(&[(REF_LABEL, &chains[i])])).await.expect("commit");
        parent = name;
    }
    parent
}

/// containerd 2.2+'s parallel unpack: every layer parentless with the
/// unpacker's labels, all applied, then committed in order with `parent`.
async fn unpack_parallel(c: &mut Client, s: &str, ns: &str, scratch: &Path) -> String {
    let image = image();
    let diffs: Vec<String> = image.iter().map(|l| digest(l)).collect();
    let chains = chain_ids(&diffs);
    let mut keys = Vec::new();
    for i in 0..image.len() {
        let key = backend(ns, 30 + i, &format!("extract-p{i} {}", chains[i]));
        let mounts = prepare(c, s, &key, "", layer_labels(i, &chains, &diffs)).await.unwrap();
        if i > 0 {
            // The extraction plan containerd's applier needs: upperdir= alone.
            assert_eq!(mounts.len(), 1, "{mounts:?}");
            assert_eq!(mounts[0].r#type, "overlay", "{mounts:?}");
            let upper: Vec<_> =
                mounts[0].options.iter().filter(|o| o.starts_with("upperdir=")).collect();
            assert_eq!(upper.len(), 1, "{mounts:?}");
            assert!(
                !mounts[0]
                    .options
                    .iter()
                    .any(|o| o.starts_with("lowerdir=") || o.starts_with("workdir=") || o == "ro"),
                "{mounts:?}"
            );
        }
        keys.push((key, mounts));
    }
    // Applied "at once": in reverse order, so no layer relies on another.
    for (i, (_, mounts)) in keys.iter().enumerate().rev() {
        apply(mounts, &image[i], scratch);
    }
    let mut parent = String::new();
    for (i, (key, _)) in keys.iter().enumerate() {
        let name = backend(ns, 40 + i, &chains[i]);
        commit(c, s, &name, key, &parent, labels(&[(REF_LABEL, &chains[i])])).await.unwrap();
        parent = name;
    }
    parent
}

// ---------------------------------------------------------- file for file

/// What a tree holds, path by path: type, mode, owner, content or link
/// target, and which earlier path it is a hard link of.
fn describe_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    inodes: &mut HashMap<(u64, u64), String>,
) {
    let mut children: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    children.sort();
    for path in children {
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let md = std::fs::symlink_metadata(&path).unwrap();
        let head = format!("{:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid());
        let what = if md.is_dir() {
            walk(root, &path, out, inodes);
            "dir".to_string()
        } else if md.file_type().is_symlink() {
            format!("symlink -> {}", std::fs::read_link(&path).unwrap().display())
        } else if md.is_file() {
            let content = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            let link = match inodes.get(&(md.dev(), md.ino())) {
                Some(first) => format!(" (hard link of {first})"),
                None => {
                    inodes.insert((md.dev(), md.ino()), rel.clone());
                    String::new()
                }
            };
            format!("file {content:?} nlink {}{link}", md.nlink())
        } else {
            format!("special {:o} rdev {}", md.mode() & 0o170000, md.rdev())
        };
        out.insert(rel, format!("{head} {what}"));
    }
}

/// View `key` of `parent`, mounted as a client would, described.
async fn view_tree(
    c: &mut Client,
    s: &str,
    key: &str,
    parent: &str,
    scratch: &Path,
) -> BTreeMap<String, String> {
    let r = api::ViewSnapshotRequest {
        snapshotter: s.into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    };
    let mounts = c.view(r).await.expect("view").into_inner().mounts;
    let target = scratch.join(format!("view-{}", rand_suffix()));
    std::fs::create_dir_all(&target).unwrap();
    let mut mounted = Mounted::new(&target);
    for m in &mounts {
        mounted.mount(&plan_mount(m), 4096).expect("mount the view");
    }
    let tree = describe_tree(&target);
    mounted.unmount().unwrap();
    tree
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread")]
async fn parallel_unpack_equals_sequential_file_for_file() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let scratch = d.dir.path().join("scratch");
    let seq = unpack_sequential(&mut c, "overlay", "seq", &scratch).await;
    let par = unpack_parallel(&mut c, "overlay", "par", &scratch).await;

    // The rebased chain is a chain: Stat shows each committed on the one below.
    let top = c
        .stat(api::StatSnapshotRequest { snapshotter: "overlay".into(), key: par.clone() })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(top.kind, api::Kind::Committed as i32);
    assert!(top.parent.starts_with("par/41/"), "{top:?}");

    let sequential = view_tree(&mut c, "overlay", "seq/90/view", &seq, &scratch).await;
    let parallel = view_tree(&mut c, "overlay", "par/91/view", &par, &scratch).await;
    // What the image must hold, so two equally wrong unpacks cannot pass.
    let expect = |path: &str, what: &str| {
        let got = sequential.get(path).unwrap_or_else(|| panic!("{path} missing: {sequential:#?}"));
        assert!(got.contains(what), "{path}: {got}");
    };
    expect("etc/config", "640 0:42 file \"two\"");
    // Walked in name order: bin/hard comes first, bin/tool is its link.
    expect("bin/hard", "4755 1000:1000 file \"#!/bin/sh\\n\" nlink 2");
    expect("bin/tool", "(hard link of bin/hard)");
    expect("bin/link", "symlink -> tool");
    expect("data/fresh", "644 1000:1000 file \"only this\"");
    expect("home/note", "600 42:43 file \"from layer 2\"");
    for gone in ["etc/gone", "data/old", "data/sub", "data/sub/deep"] {
        assert!(!sequential.contains_key(gone), "{gone} is still there: {sequential:#?}");
    }
    assert_eq!(parallel, sequential, "the parallel unpack differs from the sequential one");
    println!("parallel == sequential: {} entries", parallel.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn id_mapped_prepare_owns_fs_by_mapped_root_and_idmapped_mounts_show_mapped_owners() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let scratch = d.dir.path().join("scratch");
    let top = unpack_sequential(&mut c, "overlay", "k8s.io", &scratch).await;
    // What CRI sends for a pod with hostUsers: false (and ctr --remap-labels).
    let map = labels(&[(UID_LABEL, "0:100000:65536"), (GID_LABEL, "0:200000:65536")]);
    let mounts = prepare(&mut c, "overlay", "k8s.io/99/ctr", &top, map.clone()).await.unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    assert_eq!(m.r#type, "overlay");
    assert_eq!(m.options[..2], ["uidmap=0:100000:65536", "gidmap=0:200000:65536"], "{m:?}");
    let upper = m.options.iter().find_map(|o| o.strip_prefix("upperdir=")).unwrap();
    let md = std::fs::metadata(upper).unwrap();
    assert_eq!((md.uid(), md.gid()), (100000, 200000), "fs is owned by the mapped root");

    // containerd's mount code: idmapped lowerdirs, then the overlay.
    let target = scratch.join("rootfs");
    std::fs::create_dir_all(&target).unwrap();
    let mut mounted = Mounted::new(&target);
    mounted.mount(&plan_mount(m), 4096).expect("idmapped overlay mount");
    let owner = |rel: &str| {
        let md = std::fs::symlink_metadata(target.join(rel)).unwrap();
        (md.uid(), md.gid())
    };
    let table = [
        (".", (100000, 200000)),
        ("etc/config", (100000, 200042)),
        ("bin/tool", (101000, 201000)),
        ("home/note", (100042, 200043)),
        ("data/fresh", (101000, 201000)),
    ];
    // The mount table, as `ctr run --remap-labels --uidmap 0:100000:65536
    // --gidmap 0:200000:65536` would get it (printed for the record).
    println!("mount: type={} source={} options={}", m.r#type, m.source, m.options.join(","));
    println!("{:<12} {:>13} {:>17}", "path", "on disk", "through mount");
    // On disk: the upper (for the root), else the nearest layer holding it.
    let lowers: Vec<&str> =
        m.options.iter().find_map(|o| o.strip_prefix("lowerdir=")).unwrap().split(':').collect();
    let on_disk = |rel: &str| {
        let dirs = std::iter::once(upper).chain(lowers.iter().copied());
        let found = dirs
            .map(|d| Path::new(d).join(rel))
            .find_map(|p| std::fs::symlink_metadata(p).ok())
            .unwrap();
        format!("{}:{}", found.uid(), found.gid())
    };
    for (rel, want) in table {
        let (u, g) = owner(rel);
        println!("{rel:<12} {:>13} {:>17}", on_disk(rel), format!("{u}:{g}"));
        assert_eq!((u, g), want, "{rel} as seen through the idmapped mount");
    }
    // Container root (the mapped root on the host) writes into its upper.
    std::fs::write(target.join("written"), "x").unwrap();
    mounted.unmount().unwrap();
    assert!(Path::new(upper).join("written").exists());

    // A parentless snapshot is a bind of its own fs, carrying the map too.
    let mounts = prepare(&mut c, "overlay", "k8s.io/100/lone", "", map.clone()).await.unwrap();
    assert_eq!(mounts[0].r#type, "bind");
    assert_eq!(
        mounts[0].options,
        ["uidmap=0:100000:65536", "gidmap=0:200000:65536", "rw", "rbind"]
    );
    let md = std::fs::metadata(&mounts[0].source).unwrap();
    assert_eq!((md.uid(), md.gid()), (100000, 200000));

    // bind: the clone keeps the layer's owners (no chown), the idmapped
    // bind mount shows them mapped.
    let btop = unpack_sequential(&mut c, "bind", "k8s.io", &scratch).await;
    let mounts = prepare(&mut c, "bind", "k8s.io/101/bctr", &btop, map).await.unwrap();
    assert_eq!(mounts[0].options[..2], ["uidmap=0:100000:65536", "gidmap=0:200000:65536"]);
    let on_disk = std::fs::metadata(Path::new(&mounts[0].source).join("bin/tool")).unwrap();
    assert_eq!((on_disk.uid(), on_disk.gid()), (1000, 1000), "no chown of the clone");
    let mut mounted = Mounted::new(&target);
    mounted.mount(&plan_mount(&mounts[0]), 4096).expect("idmapped bind mount");
    assert_eq!(owner("bin/tool"), (101000, 201000));
    assert_eq!(owner("etc/config"), (100000, 200042));
    mounted.unmount().unwrap();

    // native has no remap-ids: the map is checked, not carried.
    let mounts = prepare(
        &mut c,
        "native",
        "k8s.io/102/n",
        "",
        labels(&[(UID_LABEL, "0:100000:65536"), (GID_LABEL, "0:200000:65536")]),
    )
    .await
    .unwrap();
    assert_eq!(mounts[0].options, ["rw", "rbind"]);
}

/// Records and directories: what "nothing changed" compares.
async fn state(c: &mut Client, d: &Daemon, s: &str) -> (Vec<String>, Vec<String>) {
    let mut stream = c
        .list(api::ListSnapshotsRequest { snapshotter: s.into(), filters: vec![] })
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        for i in batch.info {
            records.push(format!("{} {} {:?} {:?}", i.name, i.parent, i.kind, i.labels));
        }
    }
    records.sort();
    let mut dirs: Vec<String> = std::fs::read_dir(d.snapshots_dir(s))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    (records, dirs)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_id_maps_are_refused_naming_the_label_and_change_nothing() {
    let d = Daemon::start();
    let mut c = d.client().await;
    prepare(&mut c, "overlay", "base", "", HashMap::new()).await.unwrap();
    let bad = [
        (vec![(UID_LABEL, "0:100000:65536")], GID_LABEL),
        (vec![(UID_LABEL, "1:100000:65536"), (GID_LABEL, "0:1:1")], UID_LABEL),
        (vec![(UID_LABEL, "0:100000:65536"), (GID_LABEL, "0:1:10,5:100:10")], GID_LABEL),
        (vec![(UID_LABEL, "0:4294967295:1"), (GID_LABEL, "0:1:1")], UID_LABEL),
        (vec![(UID_LABEL, "0:1:0"), (GID_LABEL, "0:1:1")], UID_LABEL),
        (vec![(UID_LABEL, "0:x:1"), (GID_LABEL, "0:1:1")], UID_LABEL),
    ];
    for s in ["overlay", "bind", "native"] {
        let before = state(&mut c, &d, s).await;
        for (pairs, label) in &bad {
            let err = prepare(&mut c, s, "mapped", "", labels(pairs)).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{s} {pairs:?}: {err:?}");
            assert!(err.message().contains(label), "{s}: {}", err.message());
            assert_eq!(state(&mut c, &d, s).await, before, "{s}: {pairs:?} changed something");
        }
    }
    assert!(!d.logs().contains("policy failed"), "a bad map reached a policy:\n{}", d.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn rebase_onto_missing_active_or_cyclic_parent_is_refused_and_changes_nothing() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = "overlay";
    prepare(&mut c, s, "low-key", "", HashMap::new()).await.unwrap();
    commit(&mut c, s, "low", "low-key", "", HashMap::new()).await.unwrap();
    prepare(&mut c, s, "other-key", "", HashMap::new()).await.unwrap();
    commit(&mut c, s, "other", "other-key", "", HashMap::new()).await.unwrap();
    prepare(&mut c, s, "busy", "", HashMap::new()).await.unwrap();
    prepare(&mut c, s, "layer", "", labels(&[(PARENT_CHAIN_LABEL, "sha256:low")])).await.unwrap();
    prepare(&mut c, s, "stacked", "low", HashMap::new()).await.unwrap();
    let refusals = [
        ("layer", "missing", Code::NotFound),
        ("layer", "busy", Code::FailedPrecondition),
        // Onto itself: the shortest cycle there is.
        ("layer", "layer", Code::FailedPrecondition),
        // Onto the name it is being committed as.
        ("layer", "layer-done", Code::NotFound),
        // Already on a parent: containerd never moves it.
        ("stacked", "other", Code::InvalidArgument),
    ];
    for (key, parent, code) in refusals {
        let before = state(&mut c, &d, s).await;
        let name = format!("{key}-done");
        let err = commit(&mut c, s, &name, key, parent, HashMap::new()).await.unwrap_err();
        assert_eq!(err.code(), code, "commit {key} onto {parent}: {err:?}");
        assert_eq!(
            state(&mut c, &d, s).await,
            before,
            "commit {key} onto {parent} changed something"
        );
    }
    // Same parent as now: no rebase, allowed.
    commit(&mut c, s, "stacked-done", "stacked", "low", HashMap::new()).await.unwrap();
    // And the real thing works after all those refusals.
    commit(&mut c, s, "layer-done", "layer", "low", HashMap::new()).await.unwrap();
    let info = c
        .stat(api::StatSnapshotRequest { snapshotter: s.into(), key: "layer-done".into() })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.parent, "low");
    // The parent now has a child: it cannot be removed.
    let err = c
        .remove(api::RemoveSnapshotRequest { snapshotter: s.into(), key: "low".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_without_rebase_refuse_it_saying_why() {
    let d = Daemon::start();
    let mut c = d.client().await;
    for s in ["native", "bind"] {
        prepare(&mut c, s, "low-key", "", HashMap::new()).await.unwrap();
        commit(&mut c, s, "low", "low-key", "", HashMap::new()).await.unwrap();
        prepare(&mut c, s, "layer", "", HashMap::new()).await.unwrap();
        let before = state(&mut c, &d, s).await;
        let err = commit(&mut c, s, "done", "layer", "low", HashMap::new()).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{s}: {err:?}");
        assert!(
            err.message().contains("full copy of their parent's tree"),
            "{s}: {}",
            err.message()
        );
        assert!(err.message().contains("rebase"), "{s}: {}", err.message());
        assert_eq!(state(&mut c, &d, s).await, before, "{s}: the refusal changed something");
        // Without a parent the commit is as ever.
        commit(&mut c, s, "done", "layer", "", HashMap::new()).await.unwrap();
    }
    // The daemon says what to put in containerd's config.
    let logs = d.logs();
    assert!(logs.contains(r#"capabilities = ["rebase", "remap-ids"]"#), "{logs}");
    assert!(logs.contains(r#"capabilities = ["remap-ids"]"#), "{logs}");
    assert!(logs.contains("capabilities = []"), "{logs}");
}
