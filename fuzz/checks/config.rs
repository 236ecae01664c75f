//! The daemon's config file (`wasmsnap_daemon::config::Config::parse`): on any
//! text, it parses or says why (never panics), and what it accepts keeps
//! the rules the daemon relies on: snapshotter names that are safe as a
//! directory name, known built-in policies, sha256 pins of 64 hex digits,
//! limits in range, and every built-in served when none is configured.

use wasmsnap_daemon::config::Config;

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = Config::parse(&text) else {
        return;
    };
    assert!(!config.snapshotters.is_empty(), "no snapshotter after defaults");
    for (name, s) in &config.snapshotters {
        assert!(
            !name.is_empty() && name != "." && name != "..",
            "accepted snapshotter name {name:?}"
        );
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "accepted name {name:?}"
        );
        if let Some(builtin) = s.policy.strip_prefix("builtin:") {
            assert!(wasmsnap_engine_builtin(builtin), "accepted unknown built-in {builtin:?}");
        }
        if let Some(pin) = &s.sha256 {
            assert!(
                pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit()),
                "accepted pin {pin:?}"
            );
        }
        assert!(
            (1..=60_000).contains(&s.limits.call_timeout_ms),
            "accepted timeout {}",
            s.limits.call_timeout_ms
        );
        assert!(
            (1..=4096).contains(&s.limits.memory_mib),
            "accepted memory {}",
            s.limits.memory_mib
        );
    }
}

fn wasmsnap_engine_builtin(name: &str) -> bool {
    // The defaults name exactly the built-ins.
    let mut defaults = Config::default();
    defaults.fill_defaults();
    defaults.snapshotters.contains_key(name)
}
