//! The daemon's unix socket: its file appears only once it accepts, with
//! mode 0660 from the first moment.
//!
//! `bind(2)` creates the file and only `listen(2)` makes it accept. A client
//! that waits for the file to exist (containerd's convention, and scripts')
//! and connects in between is refused. So the socket is bound and listening
//! under a temporary name in a private directory next to the address, then
//! linked to the address, and the temporary name removed.
//!
//! Why a private 0700 directory and not a narrowed umask: the umask is per
//! process, and the daemon has threads by then (tokio's, wasmtime's); a file
//! one of them created meanwhile would get the narrowed mode. (An `fchmod` of
//! the socket before `bind` narrows the file's mode on Linux, but that is
//! undocumented behaviour and still subject to the umask.) No other user can
//! reach into the directory, so the socket is chmodded to exactly 0660 there,
//! before its name appears at the address.
//!
//! Why `link(2)` and not `rename(2)`: both make the name appear atomically,
//! but `link` fails if the address exists, so of two daemons started on one
//! address only one takes it (`rename` would silently replace the other's
//! socket; `renameat2(RENAME_NOREPLACE)` is not supported by every
//! filesystem).
//!
//! The parent directory must be writable by root alone (systemd's
//! `RuntimeDirectory=` is), like for any daemon socket.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The socket file's mode, like containerd's own socket.
pub const SOCKET_MODE: u32 = 0o660;

/// The longest path a unix socket address holds (`sun_path`, less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The socket's file at `address`.
#[derive(Debug)]
pub struct SocketFile {
    pub address: PathBuf,
    /// The file's (device, inode), to remove it at exit only if it is still ours.
    file_id: (u64, u64),
    /// An `O_PATH` descriptor of the file, held so its inode stays allocated:
    /// a socket another process binds at the address after ours was removed
    /// cannot reuse the number and pass for ours.
    _pinned: std::fs::File,
}

impl SocketFile {
    /// Remove the socket file, unless another process has put its own there.
    pub fn remove_file(&self) {
        match std::fs::symlink_metadata(&self.address) {
            Ok(m) if (m.dev(), m.ino()) == self.file_id => {
                let _ = std::fs::remove_file(&self.address);
            }
            Ok(_) => {
                tracing::warn!(address = %self.address.display(), "socket file replaced by another process; left in place")
            }
            Err(_) => {}
        }
    }
}

/// Listen on `address`: create its parent, refuse an address another process
/// answers on or that is not a socket, replace a stale socket (one nobody
/// answers on). The file appears only once the socket accepts, with mode 0660.
pub fn listen(address: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    let name = address
        .file_name()
        .with_context(|| format!("socket address {} has no file name", address.display()))?;
    let parent = match address.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let prefix = format!(".{}.bind-", name.to_string_lossy());
    remove_leftovers(parent, &prefix);

    // Dropped on every return below, which removes the temporary name.
    let private = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .with_context(|| format!("create a private directory in {}", parent.display()))?;
    let temporary = private.path().join("s");
    if temporary.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "socket address {} is too long: it is bound first as {} ({} bytes), and a unix \
             socket path holds at most {MAX_SOCKET_PATH}",
            address.display(),
            temporary.display(),
            temporary.as_os_str().len()
        );
    }
    // std's bind also listens.
    let listener = UnixListener::bind(&temporary)
        .with_context(|| format!("listen on {}", temporary.display()))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("chmod {}", temporary.display()))?;
    let pinned = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&temporary)
        .with_context(|| format!("open {} to pin it", temporary.display()))?;

    clear_stale(address)?;
    if let Err(e) = std::fs::hard_link(&temporary, address) {
        let what = if e.kind() == ErrorKind::AlreadyExists {
            format!("{} was taken by another process meanwhile", address.display())
        } else {
            format!("link {} to {}", temporary.display(), address.display())
        };
        return Err(e).context(what);
    }
    let m = pinned.metadata().with_context(|| format!("stat {}", temporary.display()))?;
    if let Err(e) = private.close() {
        tracing::warn!(error = %e, "could not remove the socket's temporary directory");
    }
    let file_id = (m.dev(), m.ino());
    Ok((listener, SocketFile { address: address.to_path_buf(), file_id, _pinned: pinned }))
}

/// Make room at `address`: nothing there, or a stale socket (removed).
fn clear_stale(address: &Path) -> anyhow::Result<()> {
    let m = match std::fs::symlink_metadata(address) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("stat {}", address.display())),
    };
    if !m.file_type().is_socket() {
        bail!("{} exists and is not a socket; refusing to replace it", address.display());
    }
    match UnixStream::connect(address) {
        Ok(_) => bail!("{} is in use by another process", address.display()),
        // Refused: nobody listens; gone: removed meanwhile.
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("check whether {} is in use", address.display()));
        }
    }
    match std::fs::remove_file(address) {
        Ok(()) => {
            tracing::info!(address = %address.display(), "removed a stale socket");
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove stale socket {}", address.display())),
    }
}

/// Remove private directories a killed daemon left between bind and link.
/// (One of a daemon starting on the same address right now would make that
/// daemon fail at its link, as two daemons on one address must.)
fn remove_leftovers(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let leftover = entry.file_name().to_str().is_some_and(|n| n.starts_with(prefix))
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if leftover {
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a leftover of an interrupted bind")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover of an interrupted bind")
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
