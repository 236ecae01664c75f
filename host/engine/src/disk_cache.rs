//! Compiled components kept on disk, so a restart does not recompile.
//!
//! One file per component: `<sha256 of the wasm>-<compat>.cwasm`, where
//! `compat` is a digest of wasmtime's
//! [`precompile_compatibility_hash`](wasmtime::Engine::precompile_compatibility_hash):
//! equal hashes mean the artifact loads in this engine, so a wasmtime
//! upgrade or a changed engine setting simply looks for other names (and
//! the files of other hashes are removed when the cache opens).
//!
//! A file is `MAGIC`, the sha256 of the payload, then the payload (what
//! `Component::serialize` wrote). It is written to a temporary name,
//! synced and renamed into place, so a reader sees a whole file or none.
//! Loading machine code is `unsafe`: wasmtime trusts the bytes. Three
//! guards: the directory must be root's alone (see `cache_trust`: it and
//! every parent owned by root and not group/other writable; else the cache
//! is not opened and policies are compiled in memory), entries are opened
//! with `O_NOFOLLOW` and must be root's regular files, and the checksum
//! must match before wasmtime sees a byte, so a torn or damaged file is
//! rebuilt instead of run. A file that passes the checksum but that
//! wasmtime refuses (`Component::deserialize` checks its own header and
//! the compatibility hash) is rebuilt too.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// First bytes of every cache file (format version 1).
const MAGIC: &[u8; 8] = b"WSCWASM1";
const HEADER: usize = MAGIC.len() + 32;
const SUFFIX: &str = ".cwasm";

/// Temporary files of interrupted writes start so; removed at open.
const TEMP_PREFIX: &str = ".tmp-";

/// What looking up one component found.
#[derive(Debug)]
pub(crate) enum Lookup {
    Hit(Component),
    /// No file for this component.
    Miss,
    /// A file that cannot be used (it was removed): why.
    Bad(String),
}

/// A directory of compiled components for one engine.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    compat: String,
}

impl DiskCache {
    /// Open (or create, mode 0700) `dir` for `engine`'s artifacts, and
    /// remove what no engine like this one can use: files of another
    /// compatibility hash, and temporary files of interrupted writes.
    /// Refused (an error naming the path and the rule) unless only root can
    /// change `dir` (see `cache_trust`).
    pub fn open(engine: &wasmtime::Engine, dir: &Path) -> io::Result<DiskCache> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        // An existing directory keeps its mode unless we narrow it.
        crate::cache_trust::secure_dir(dir).map_err(io::Error::other)?;
        let cache = DiskCache { dir: dir.to_path_buf(), compat: compat_digest(engine) };
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.ends_with(&format!("-{}{SUFFIX}", cache.compat));
            if !ours {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(file = %entry.path().display(), "policy cache: removed an entry another engine version wrote")
                    }
                    Err(e) => {
                        tracing::warn!(file = %entry.path().display(), error = %e, "policy cache: cannot remove a stale entry")
                    }
                }
            }
        }
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds the component whose wasm has sha256 `digest`.
    pub fn path(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}-{}{SUFFIX}", hex::encode(digest), self.compat))
    }

    /// The component compiled from wasm `digest`, if a good file holds it.
    pub(crate) fn load(&self, engine: &wasmtime::Engine, digest: &[u8; 32]) -> Lookup {
        let path = self.path(digest);
        let read = |path: &Path| -> io::Result<Vec<u8>> {
            let mut bytes = Vec::new();
            crate::cache_trust::open_entry(path)?.read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        let bytes = match read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Bad(format!("cannot read {}: {e}", path.display())),
        };
        let reason = match payload(&bytes) {
            // SAFETY: the payload is what `Component::serialize` wrote for
            // this engine: the file is a regular file of root's (opened
            // without following a symlink) in a directory only root can
            // change, named by this engine's compatibility hash, and its
            // checksum matches, so it is not torn or damaged.
            Ok(payload) => match unsafe { Component::deserialize(engine, payload) } {
                Ok(component) => return Lookup::Hit(component),
                Err(e) => format!("wasmtime refused it: {e}"),
            },
            Err(reason) => reason,
        };
        // Removed now, so a failing rewrite cannot leave it to be read again.
        let _ = fs::remove_file(&path);
        Lookup::Bad(format!("{}: {reason}", path.display()))
    }

    /// Write `component` (compiled from wasm `digest`) to its file,
    /// atomically: a temporary file, synced, renamed into place.
    pub(crate) fn store(
        &self,
        digest: &[u8; 32],
        component: &Component,
    ) -> anyhow::Result<PathBuf> {
        let payload = component.serialize().map_err(|e| anyhow::anyhow!("serialize: {e}"))?;
        let path = self.path(digest);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| -> io::Result<()> {
            let mut file =
                fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
            file.write_all(MAGIC)?;
            file.write_all(&Sha256::digest(&payload))?;
            file.write_all(&payload)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(anyhow::anyhow!("write {}: {e}", path.display()));
        }
        Ok(path)
    }

    /// Remove every entry of this engine not compiled from one of `keep`
    /// (e.g. after start-up: components no longer configured).
    pub fn retain(&self, keep: &[[u8; 32]]) -> io::Result<usize> {
        let keep: Vec<PathBuf> = keep.iter().map(|d| self.path(d)).collect();
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if !keep.contains(&path) && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The payload of a cache file whose magic and checksum are right.
fn payload(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err(format!("not a wasmsnap cache file ({} bytes, bad header)", bytes.len()));
    }
    let (sum, payload) = (&bytes[MAGIC.len()..HEADER], &bytes[HEADER..]);
    if Sha256::digest(payload).as_slice() != sum {
        return Err("checksum mismatch: the file is damaged".into());
    }
    Ok(payload)
}

/// A short hex digest of the engine's compatibility hash, for file names.
fn compat_digest(engine: &wasmtime::Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// A `Hasher` over sha256: stable across Rust releases, unlike `DefaultHasher`.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::payload;

    #[test]
    fn payload_needs_magic_and_checksum() {
        use sha2::{Digest, Sha256};
        let body = b"compiled code";
        let mut file = super::MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(body));
        file.extend_from_slice(body);
        assert_eq!(payload(&file).unwrap(), body);
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(payload(&flipped).unwrap_err().contains("checksum mismatch"));
        assert!(payload(&file[..20]).unwrap_err().contains("bad header"));
        assert!(
            payload(b"\x7fELF............................................")
                .unwrap_err()
                .contains("bad header")
        );
    }
}
