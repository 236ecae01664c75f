//! docs/policy-authoring.md, followed as written: its shell blocks run in
//! order from an empty temp directory, the files it shows are written as
//! it says, and the sample outputs it marks must match what the commands
//! print (timings aside). So the guide cannot drift from the tool.
//!
//! Markers (HTML comments, invisible in the rendered guide) on the line
//! before a code block:
//! - `<!-- guide: write PATH -->`, `<!-- guide: append PATH -->`: the block
//!   is that file's text (the SDK's `/path/to/wasmsnap` becomes this
//!   checkout);
//! - `<!-- guide: exit N -->`: the shell block exits with N, not 0;
//! - `<!-- guide: output -->`: every line of the block not eliding
//!   (`...`) is a line of the previous shell block's output;
//! - `<!-- guide: skip (why) -->`: not run (it needs /etc, containerd).
//!
//! The crate's `target/` is a link to one under this repository's target
//! dir, so a second run builds nothing. `sudo` is this test's own shim when
//! the host has none (the test runs as root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is inside the repository")
        .to_path_buf()
}

struct Block {
    marker: Option<String>,
    lang: String,
    body: String,
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut marker = None;
    while let Some((n, line)) = lines.next() {
        if let Some(m) = line.strip_prefix("<!-- guide: ").and_then(|l| l.strip_suffix(" -->")) {
            marker = Some(m.to_string());
            continue;
        }
        let Some(lang) = line.strip_prefix("```") else {
            if !line.trim().is_empty() {
                marker = None;
            }
            continue;
        };
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        out.push(Block { marker: marker.take(), lang: lang.to_string(), body, line: n + 1 });
    }
    out
}

/// Timings vary: `12.3 ms` and `74 ms` both read `N ms`.
fn normalise(line: &str) -> String {
    let mut out = String::new();
    let mut number = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || (c == '.' && !number.is_empty()) {
            number.push(c);
            continue;
        }
        if !number.is_empty() {
            let rest: String = std::iter::once(c).chain(chars.clone().take(2)).collect();
            out.push_str(if rest == " ms" { "N" } else { &number });
            number.clear();
        }
        out.push(c);
    }
    out.push_str(&number);
    out
}

#[test]
fn the_policy_authoring_guide_runs_as_written() {
    let started = Instant::now();
    let guide = std::fs::read_to_string(repo().join("docs/policy-authoring.md")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let shims = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_wasmsnap")).parent().unwrap().to_path_buf();
    let has_sudo = Command::new("sh").args(["-c", "command -v sudo"]).output().unwrap();
    if !has_sudo.status.success() {
        let shim = shims.path().join("sudo");
        std::fs::write(&shim, "#!/bin/sh\nexec \"$@\"\n").unwrap();
        let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
        std::fs::set_permissions(&shim, mode).unwrap();
    }
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        shims.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let shared_target = repo().join("target/guide-layer-cap");
    let state = work.path().join(".cwd");
    let mut cwd = work.path().to_path_buf();
    let mut last_output = String::new();
    let mut ran = 0;

    for b in blocks(&guide) {
        let marker = b.marker.as_deref().unwrap_or("");
        let at = format!("docs/policy-authoring.md:{}", b.line);
        if let Some(file) = marker.strip_prefix("write ").or(marker.strip_prefix("append ")) {
            let text = b.body.replace("/path/to/wasmsnap", &repo().display().to_string());
            let target = cwd.join(file);
            let old = if marker.starts_with("append ") {
                std::fs::read_to_string(&target).unwrap_or_else(|e| panic!("{at}: {file}: {e}"))
                    + "\n"
            } else {
                String::new()
            };
            std::fs::write(&target, old + &text).unwrap_or_else(|e| panic!("{at}: {file}: {e}"));
            continue;
        }
        if marker == "output" {
            let actual: Vec<String> = last_output.lines().map(normalise).collect();
            for line in b.body.lines().filter(|l| !l.contains("...") && !l.trim().is_empty()) {
                assert!(
                    actual.contains(&normalise(line)),
                    "{at}: the guide shows\n{line}\nbut the command printed:\n{last_output}"
                );
            }
            continue;
        }
        if b.lang != "sh" || marker.starts_with("skip") {
            continue;
        }
        let expected: i32 = marker.strip_prefix("exit ").map_or(0, |n| n.parse().unwrap());
        let script = format!("set -eu\n{}\npwd > {:?}\n", b.body, state);
        let o = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&cwd)
            .env("PATH", &path)
            .env("CARGO_TERM_COLOR", "never")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        last_output = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            o.status.code(),
            Some(expected),
            "{at}:\n{}\nstdout:\n{last_output}\nstderr:\n{}",
            b.body,
            String::from_utf8_lossy(&o.stderr)
        );
        if expected == 0 {
            cwd = PathBuf::from(std::fs::read_to_string(&state).unwrap().trim());
        }
        // The crate builds into the shared target dir (a second run is warm).
        if cwd.join("Cargo.toml").exists() && !cwd.join("target").exists() {
            std::fs::create_dir_all(&shared_target).unwrap();
            std::os::unix::fs::symlink(&shared_target, cwd.join("target")).unwrap();
        }
        ran += 1;
    }
    assert!(ran >= 6, "only {ran} shell blocks ran");
    println!("the guide's {ran} shell blocks ran in {:?}", started.elapsed());
}

#[test]
fn normalise_ignores_timings_only() {
    assert_eq!(
        normalise("PASS  x.toml:4  a  (0.4 ms; init 12.1 ms)"),
        "PASS  x.toml:4  a  (N ms; init N ms)"
    );
    assert_eq!(normalise("[setup 74 ms, mount+check 3 ms]"), "[setup N ms, mount+check N ms]");
    assert_eq!(normalise("3 passed, 0 failed"), "3 passed, 0 failed");
}
