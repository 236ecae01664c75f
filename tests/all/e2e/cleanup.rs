//! Leave nothing behind: unmount what is left under a directory, and find the
//! processes a private containerd started (its shims and their containers)
//! so they can be killed by pid.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Mount points at or under `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Lazily unmount everything at or under `dir`; returns what was unmounted.
pub fn unmount_under(dir: &Path) -> Vec<PathBuf> {
    let mounts = mounts_under(dir);
    for m in &mounts {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap(), 8).unwrap(),
            );
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (pid, parent pid, argv) of every process.
fn processes() -> Vec<(i32, i32, Vec<String>)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name is in parentheses and may contain spaces: parse after the last ')'.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, ppid, argv))
        })
        .collect()
}

/// The shims serving the containerd listening on `address`, and everything
/// below them (the containers' processes), children first.
pub fn shim_trees(address: &Path) -> Vec<i32> {
    let procs = processes();
    let address = address.to_string_lossy();
    let shims: Vec<i32> = procs
        .iter()
        .filter(|(_, _, argv)| {
            argv.first().is_some_and(|a| a.contains("containerd-shim"))
                && argv
                    .windows(2)
                    .any(|w| w[0].trim_start_matches('-') == "address" && w[1] == address)
        })
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut out = Vec::new();
    for shim in shims {
        descendants(shim, &procs, &mut out);
        out.push(shim);
    }
    out
}

fn descendants(pid: i32, procs: &[(i32, i32, Vec<String>)], out: &mut Vec<i32>) {
    for (child, ppid, _) in procs {
        if *ppid == pid {
            descendants(*child, procs, out);
            out.push(*child);
        }
    }
}

/// SIGKILL each, then wait (up to 5 s) until they have exited, so their
/// cgroups and mounts are free.
pub fn kill_pids(pids: &[i32]) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Running, not gone or a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// Remove the cgroups runc made for containers of containerd namespace
/// `namespace` (ctr puts them at `/<namespace>/<id>` in every hierarchy; runc
/// removes the container's own, never the namespace's parent). Only empty
/// cgroups can go, so nothing alive is touched.
pub fn remove_cgroups(namespace: &str) {
    if namespace.is_empty() || namespace.contains('/') || namespace.starts_with('.') {
        return;
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines() {
        let Some((_, fs_type)) = line.split_once(" - ") else { continue };
        if !matches!(fs_type.split(' ').next(), Some("cgroup" | "cgroup2")) {
            continue;
        }
        if let Some(mount_point) = line.split(' ').nth(4) {
            rmdir_tree(&Path::new(&unescape(mount_point)).join(namespace));
        }
    }
}

/// rmdir a cgroup directory and the cgroups below it, deepest first (their
/// control files are not real files and go with the directory).
fn rmdir_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}
