//! Mounts made by tests, torn down by Drop even when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tempfile::TempDir;

/// Unmounts, falling back to a lazy unmount if something still holds it.
fn unmount(path: &Path) {
    if umount2(path, MntFlags::empty()).is_err() {
        let _ = umount2(path, MntFlags::MNT_DETACH);
    }
}

/// A tmpfs of a given size on a fresh temp dir.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let options = format!("size={size},mode=0755");
        mount(Some("tmpfs"), dir.path(), Some("tmpfs"), MsFlags::empty(), Some(options.as_str()))
            .map_err(|e| format!("mount tmpfs on {}: {e}", dir.path().display()))?;
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

/// An XFS with reflink on a loop device backed by a sparse image file.
pub struct LoopXfs {
    mountpoint: PathBuf,
    device: Option<String>,
    mounted: bool,
    // Dropped last: holds the image and the mount point.
    _dir: TempDir,
}

impl LoopXfs {
    /// `Err` says why it cannot be had here (no loop device, no mkfs.xfs, ...).
    pub fn new(size: u64) -> Result<LoopXfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let image = dir.path().join("xfs.img");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).map_err(|e| format!("mkdir: {e}"))?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| format!("image {}: {e}", image.display()))?;
        let device = command("losetup", &["-f", "--show", image.to_str().unwrap()])
            .map_err(|e| format!("no loop device: {e}"))?
            .trim()
            .to_string();
        let mut xfs =
            LoopXfs { mountpoint, device: Some(device.clone()), mounted: false, _dir: dir };
        command("mkfs.xfs", &["-q", "-f", "-m", "reflink=1", &device])
            .map_err(|e| format!("mkfs.xfs: {e}"))?;
        mount(Some(device.as_str()), &xfs.mountpoint, Some("xfs"), MsFlags::empty(), None::<&str>)
            .map_err(|e| format!("mount xfs {device}: {e}"))?;
        xfs.mounted = true;
        Ok(xfs)
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Bytes in use on the file system, from statvfs.
    pub fn used_bytes(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.mountpoint).expect("statvfs");
        (st.blocks() - st.blocks_free()) as u64 * st.fragment_size() as u64
    }
}

impl Drop for LoopXfs {
    fn drop(&mut self) {
        if self.mounted {
            unmount(&self.mountpoint);
        }
        if let Some(device) = &self.device {
            let _ = command("losetup", &["-d", device]);
        }
    }
}

fn command(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
