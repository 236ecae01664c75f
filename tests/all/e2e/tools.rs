//! What the end-to-end test needs from the machine, checked up front so a
//! missing piece fails with what to install instead of a confusing error later.

use std::path::{Path, PathBuf};

/// The static busybox the test image runs (Debian package `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

const INSTALL_HINT: &str = "install Debian's containerd, runc and busybox-static \
     (`apt-get install containerd runc busybox-static`, or run `bash tests/run-all.sh`)";

/// Panics naming what is missing: root, the tools in PATH, a static busybox.
pub fn require() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the containerd end-to-end test needs root (it runs containerd, mounts snapshots and starts containers)"
    );
    let mut missing = Vec::new();
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2", "runc", "unshare"] {
        if find_in_path(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    match is_static_elf(Path::new(BUSYBOX)) {
        Ok(true) => {}
        Ok(false) => {
            missing.push(format!("{BUSYBOX} is dynamically linked (that is Debian's `busybox`; the image needs `busybox-static`)"))
        }
        Err(e) => missing.push(format!("{BUSYBOX} ({e})")),
    }
    assert!(
        missing.is_empty(),
        "missing for the containerd end-to-end test: {}; {INSTALL_HINT}",
        missing.join(", ")
    );
}

/// The search path containerd and its shims get: the caller's, plus the sbin
/// directories where Debian puts runc (a non-login root shell may lack them).
pub fn search_path() -> String {
    let mut dirs: Vec<String> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect();
    for d in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        if !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_string());
        }
    }
    dirs.join(":")
}

pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    search_path().split(':').map(|d| Path::new(d).join(tool)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// An ELF executable without a program interpreter (PT_INTERP) is static.
fn is_static_elf(path: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(p_type) = bytes.get(at..at + 4) else {
            return Err("truncated program headers".into());
        };
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(p_type.try_into().unwrap()) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}
