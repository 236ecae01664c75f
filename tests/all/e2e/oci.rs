//! Packs layers into an OCI image layout tarball (`oci-layout`, `index.json`,
//! `blobs/sha256/...`) that `ctr images import` reads: no registry involved.
//! Layers are uncompressed tars, so each layer's digest is also its diff id.

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::layers::Entry;

/// Fixed timestamp for every entry: the image bytes do not depend on the clock.
const MTIME: u64 = 1_700_000_000;

pub struct TestImage {
    /// The name `ctr images import` gives it.
    pub name: String,
    pub archive: PathBuf,
    /// Layer digests, bottom first (uncompressed, so also the diff ids).
    pub diff_ids: Vec<String>,
    /// The snapshot names containerd commits the layers under, bottom first.
    pub chain_ids: Vec<String>,
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// containerd's chain id: the first layer's diff id, then sha256("<parent chain> <diff id>").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => sha256(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The platform of this machine in OCI terms (the image must match it to unpack).
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// One layer as an uncompressed tar, every entry owned by root.
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        let result = match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, format!("{p}/"), std::io::empty())
            }
            Entry::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data.as_slice())
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target)
            }
            Entry::HardLink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target)
            }
        };
        result.expect("append a layer entry");
    }
    b.into_inner().expect("finish a layer tar")
}

/// Write the OCI layout tarball of `layers` (bottom first) to `archive`.
pub fn write_image(archive: &Path, name: &str, layers: &[Vec<u8>]) -> TestImage {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |bytes: Vec<u8>| -> (String, usize) {
        let digest = sha256(&bytes);
        let size = bytes.len();
        if !blobs.iter().any(|(d, _)| *d == digest) {
            blobs.push((digest.clone(), bytes));
        }
        (digest, size)
    };

    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let (digest, size) = add(layer.clone());
        layer_descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}));
        diff_ids.push(digest);
    }
    let config = json!({
        "architecture": architecture(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().enumerate().map(|(i, _)| json!({"created_by": format!("wasmsnap e2e layer {}", i + 1)})).collect::<Vec<_>>(),
    });
    let (config_digest, config_size) = add(serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    });
    let (manifest_digest, manifest_size) = add(serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": architecture(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit_once(':').map_or("latest", |(_, tag)| tag),
            },
        }],
    });

    let mut files = vec![
        (
            "oci-layout".to_string(),
            serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"})).unwrap(),
        ),
        ("index.json".to_string(), serde_json::to_vec(&index).unwrap()),
    ];
    files.extend(
        blobs
            .into_iter()
            .map(|(d, bytes)| (format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), bytes)),
    );
    let mut b = tar::Builder::new(
        std::fs::File::create(archive)
            .unwrap_or_else(|e| panic!("create {}: {e}", archive.display())),
    );
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(MTIME);
        h.set_size(0);
        b.append_data(&mut h, dir, std::io::empty()).unwrap();
    }
    for (path, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_size(bytes.len() as u64);
        b.append_data(&mut h, path, bytes.as_slice()).unwrap();
    }
    b.finish().expect("write the image archive");

    TestImage {
        name: name.to_string(),
        archive: archive.to_path_buf(),
        chain_ids: chain_ids(&diff_ids),
        diff_ids,
    }
}

/// Build the test image of `layers.rs` into `dir/image.tar`.
pub fn build(dir: &Path, name: &str) -> TestImage {
    let layers: Vec<Vec<u8>> = super::layers::layers().iter().map(|l| layer_tar(l)).collect();
    write_image(&dir.join("image.tar"), name, &layers)
}
