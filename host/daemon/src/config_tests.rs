//! Every bad key and value names itself: dotted path, line and column.

use super::*;

fn error(text: &str) -> String {
    format!("{:#}", Config::parse(text).expect_err(text))
}

const GOOD: &str = r#"
root = "/var/lib/wasmsnap"
address = "/run/wasmsnap/wasmsnap.sock"
log_level = "debug"

[snapshotters.overlay]
policy = "builtin:overlay"
sha256 = "36a56fb62541a3360d6214c99f45d8dbf45317b1c9d3fe541d0da59dc24651a5"
[snapshotters.overlay.config]
mount_options = "volatile"
layers = 4
fast = true
ratio = 0.5
[snapshotters.overlay.limits]
call_timeout_ms = 250
"#;

#[test]
fn a_full_config_parses_with_defaults_filled_in() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.log_level, "debug");
    let s = &c.snapshotters["overlay"];
    assert_eq!(s.limits, Limits { call_timeout_ms: 250, memory_mib: 64 });
    let config: Vec<String> = s.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(config, ["fast=true", "layers=4", "mount_options=volatile", "ratio=0.5"]);
    assert_eq!(s.limits.sandbox().call_timeout, Duration::from_millis(250));
}

#[test]
fn no_snapshotters_serves_every_builtin() {
    let c = Config::parse("").unwrap();
    let names: Vec<&str> = c.snapshotters.keys().map(String::as_str).collect();
    let mut builtins = wasmsnap_engine::builtin_names();
    builtins.sort();
    assert_eq!(names, builtins);
}

#[test]
fn unknown_keys_name_their_dotted_path() {
    let e = error("rooot = \"/x\"\n");
    assert!(e.starts_with("rooot (line 1, column 1): unknown field `rooot`"), "{e}");
    let e = error("[snapshotters.a]\npolicy = \"builtin:overlay\"\npolcy = 1\n");
    assert!(e.starts_with("snapshotters.a.polcy (line 3, column 1): unknown field `polcy`"), "{e}");
    let e = error(
        "[snapshotters.a]\npolicy = \"builtin:overlay\"\n[snapshotters.a.limits]\ncall_timeot_ms = 5\n",
    );
    assert!(e.starts_with("snapshotters.a.limits.call_timeot_ms (line 4, column 1): unknown field `call_timeot_ms`"), "{e}");
    assert!(e.contains("expected `call_timeout_ms` or `memory_mib`"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (
            "[snapshotters.a]\npolicy = \"builtin:overlay\"\nlimits = { memory_mib = \"64\" }\n",
            "snapshotters.a.limits.memory_mib (line 3, column 25): invalid type: string \"64\"",
        ),
        (
            "[snapshotters.a]\npolicy = \"builtin:overlay\"\n[snapshotters.a.limits]\ncall_timeout_ms = -1\n",
            "snapshotters.a.limits.call_timeout_ms (line 4, column 19): invalid value: integer `-1`",
        ),
        (
            "[snapshotters.a]\npolicy = \"builtin:overlay\"\n[snapshotters.a.config]\nx = [1]\n",
            "snapshotters.a.config.x (line 4, column 5): invalid type: sequence, expected a string, boolean or number",
        ),
        (
            "[snapshotters.a]\npolicy = 7\n",
            "snapshotters.a.policy (line 2, column 10): invalid type: integer `7`, expected a string",
        ),
        ("log_level = 3\n", "log_level (line 1, column 13): invalid type: integer `3`"),
        (
            "[snapshotters.a]\nsha256 = \"00\"\n",
            "snapshotters.a (line 1, column 1): missing field `policy`",
        ),
        ("[snapshotters.a]\npolicy = \"builtin:overlay\"\n[snapshotters.a]\n", "line 3, column 1"),
        (
            "[snapshotters.a]\npolicy = \"builtin:nope\"\n",
            "snapshotters.a.policy: no built-in policy \"nope\"",
        ),
        ("[snapshotters.a]\npolicy = \"\"\n", "snapshotters.a.policy: empty"),
        (
            "[snapshotters.a]\npolicy = \"builtin:overlay\"\nsha256 = \"abc\"\n",
            "snapshotters.a.sha256: expected 64 hex digits, got \"abc\"",
        ),
        (
            "[snapshotters.a.limits]\ncall_timeout_ms = 0\n[snapshotters.a]\npolicy = \"builtin:overlay\"\n",
            "snapshotters.a.limits.call_timeout_ms: must be 1..=60000, got 0",
        ),
        (
            "[snapshotters.a]\npolicy = \"builtin:overlay\"\nlimits = { call_timeout_ms = 0 }\n",
            "snapshotters.a.limits.call_timeout_ms: must be 1..=60000, got 0",
        ),
        (
            "[snapshotters.a]\npolicy = \"builtin:overlay\"\nlimits = { memory_mib = 5000 }\n",
            "snapshotters.a.limits.memory_mib: must be 1..=4096, got 5000",
        ),
        (
            "[snapshotters.\"a/b\"]\npolicy = \"builtin:overlay\"\n",
            "snapshotters.\"a/b\": a snapshotter name may use only",
        ),
        (
            "[snapshotters.\".cache\"]\npolicy = \"builtin:overlay\"\n",
            "snapshotters.\".cache\": a snapshotter name may not start with '.'",
        ),
        (
            "root = \"var/lib/wasmsnap\"\n",
            "root: must be an absolute path, got \"var/lib/wasmsnap\"",
        ),
        ("address = \"x.sock\"\n", "address: must be an absolute path"),
        ("log_level = \"loud=[\"\n", "log_level: \"loud=[\" is not a level"),
    ];
    for (text, expected) in cases {
        let e = error(text);
        assert!(
            e.contains(expected),
            "config:\n{text}\nerror: {e}\nexpected it to contain: {expected}"
        );
    }
}

#[test]
fn relative_policy_paths_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasmsnap.toml");
    std::fs::write(&file, "[snapshotters.a]\npolicy = \"policies/a.wasm\"\n[snapshotters.b]\npolicy = \"/opt/b.wasm\"\n[snapshotters.c]\npolicy = \"builtin:bind\"\n").unwrap();
    let c = Config::load(&file).unwrap();
    assert_eq!(
        c.snapshotters["a"].policy,
        dir.path().join("policies/a.wasm").display().to_string()
    );
    assert_eq!(c.snapshotters["b"].policy, "/opt/b.wasm");
    assert_eq!(c.snapshotters["c"].policy, "builtin:bind");
    let e = format!("{:#}", Config::load(&dir.path().join("missing.toml")).unwrap_err());
    assert!(e.contains("read config") && e.contains("missing.toml"), "{e}");
}

#[test]
fn the_documented_example_is_valid_and_complete() {
    let example = include_str!("../../../docs/config.example.toml");
    let c = Config::parse(example).unwrap_or_else(|e| panic!("docs/config.example.toml: {e:#}"));
    assert!(!c.snapshotters.is_empty());
    // Every key of the schema appears in the example, so it documents all of them.
    for key in [
        "root",
        "address",
        "log_level",
        "policy",
        "sha256",
        "config",
        "limits",
        "call_timeout_ms",
        "memory_mib",
    ] {
        assert!(
            example.contains(&format!("{key} =")) || example.contains(&format!(".{key}]")),
            "example lacks {key}"
        );
    }
}

/// Found by the config_parse fuzzer: invalid TOML on which toml_edit's
/// parser panics; the error still names line and column.
#[test]
fn invalid_toml_that_panics_toml_edit_is_an_error() {
    for text in ["==\n.=", "a=1\n==\n.=\n"] {
        let e = error(text);
        assert!(e.contains("line ") && e.contains("column "), "{text:?}: {e}");
    }
}

/// Found by the config_parse fuzzer: a non-ASCII log level panicked
/// tracing-subscriber's filter parser.
#[test]
fn non_ascii_log_levels_are_an_error() {
    for level in ["ip\u{FFFD}\u{FFFD}0 6,0\u{a0}00", "é", " 0\u{a0}[00"] {
        let e = error(&format!("log_level = '{level}'\n"));
        assert!(e.contains("log_level") && e.contains("not ASCII"), "{level:?}: {e}");
    }
}
