//! The daemon's config file (TOML), in containerd's style:
//!
//! ```toml
//! root = "/var/lib/wasmsnap"
//! address = "/run/wasmsnap/wasmsnap.sock"
//! log_level = "info"
//!
//! [snapshotters.overlay]
//! policy = "builtin:overlay"          # or a path to a .wasm component
//! # sha256 = "..."                    # pin the component's digest
//! [snapshotters.overlay.config]       # handed to the policy's init
//! mount_options = "volatile"
//! [snapshotters.overlay.limits]
//! call_timeout_ms = 1000
//! memory_mib = 64
//! ```
//!
//! With no `[snapshotters]` table every built-in policy is served under its
//! own name. Unknown keys and bad values are errors that name the key (its
//! dotted path, line and column). A relative policy path is relative to the
//! config file's directory. Snapshotter names starting with `.` are
//! reserved: the root holds the host's own directories under such names
//! (`.cache`). `docs/config.example.toml` documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use wasmsnap_toml_place::{line_col, path_at};

pub const DEFAULT_ROOT: &str = "/var/lib/wasmsnap";
pub const DEFAULT_ADDRESS: &str = "/run/wasmsnap/wasmsnap.sock";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_root")]
    pub root: PathBuf,
    #[serde(default = "default_address")]
    pub address: PathBuf,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub snapshotters: BTreeMap<String, SnapshotterConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotterConfig {
    /// `builtin:<name>` or a path to a `.wasm` component.
    pub policy: String,
    /// Expected sha256 of the component (hex); a mismatch refuses to start.
    pub sha256: Option<String>,
    /// Handed to the policy's `init`, as strings.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    pub limits: Limits,
}

/// A policy config value: TOML strings, booleans and numbers, passed as text.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigValue {
    String(String),
    Bool(bool),
    Integer(i64),
    Float(f64),
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ConfigValueVisitor)
    }
}

/// Scalars only: a policy's `init` receives its config as strings.
struct ConfigValueVisitor;

impl serde::de::Visitor<'_> for ConfigValueVisitor {
    type Value = ConfigValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, boolean or number (a policy gets its config as text)")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfigValue, E> {
        Ok(ConfigValue::String(v.to_string()))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ConfigValue, E> {
        Ok(ConfigValue::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ConfigValue, E> {
        Ok(ConfigValue::Integer(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ConfigValue, E> {
        i64::try_from(v)
            .map(ConfigValue::Integer)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ConfigValue, E> {
        Ok(ConfigValue::Float(v))
    }
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigValue::String(s) => f.write_str(s),
            ConfigValue::Bool(b) => write!(f, "{b}"),
            ConfigValue::Integer(i) => write!(f, "{i}"),
            ConfigValue::Float(x) => write!(f, "{x}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_timeout_ms")]
    pub call_timeout_ms: u64,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { call_timeout_ms: default_timeout_ms(), memory_mib: default_memory_mib() }
    }
}

impl Limits {
    pub fn sandbox(&self) -> wasmsnap_engine::Sandbox {
        wasmsnap_engine::Sandbox {
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            memory_bytes: (self.memory_mib as usize) << 20,
        }
    }
}

fn default_root() -> PathBuf {
    DEFAULT_ROOT.into()
}
fn default_address() -> PathBuf {
    DEFAULT_ADDRESS.into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_memory_mib() -> u64 {
    64
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: default_root(),
            address: default_address(),
            log_level: default_log_level(),
            snapshotters: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Read and check a config file; relative policy paths become relative
    /// to the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config {}", path.display()))?;
        let mut config =
            Config::parse(&text).with_context(|| format!("config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for s in config.snapshotters.values_mut() {
            if !s.policy.starts_with("builtin:") && Path::new(&s.policy).is_relative() {
                s.policy = base.join(&s.policy).display().to_string();
            }
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| locate(text, &e))?;
        config.check()?;
        config.fill_defaults();
        Ok(config)
    }

    /// Serve every built-in policy under its own name when none is configured.
    pub fn fill_defaults(&mut self) {
        if self.snapshotters.is_empty() {
            for name in wasmsnap_engine::builtin_names() {
                let policy = format!("builtin:{name}");
                self.snapshotters.insert(
                    name.to_string(),
                    SnapshotterConfig {
                        policy,
                        sha256: None,
                        config: BTreeMap::new(),
                        limits: Limits::default(),
                    },
                );
            }
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        for (key, path) in [("root", &self.root), ("address", &self.address)] {
            if !path.is_absolute() {
                bail!("{key}: must be an absolute path, got {:?}", path.display().to_string());
            }
        }
        // tracing-subscriber's directive parser panics on some non-ASCII
        // input (found by the config_parse fuzzer); filters are ASCII anyway.
        if !self.log_level.is_ascii() {
            bail!(
                "log_level: {:?} is not ASCII, so not a level (error, warn, info, debug, trace) or tracing filter",
                self.log_level
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            bail!(
                "log_level: {:?} is not a level (error, warn, info, debug, trace) or tracing filter: {e}",
                self.log_level
            );
        }
        for (name, s) in &self.snapshotters {
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                bail!(
                    "snapshotters.{name:?}: a snapshotter name may use only letters, digits, '-', '_' and '.'"
                );
            }
            if name.starts_with('.') {
                bail!(
                    "snapshotters.{name:?}: a snapshotter name may not start with '.' (reserved for the host's own directories under the root)"
                );
            }
            if s.policy.is_empty() {
                bail!(
                    "snapshotters.{name}.policy: empty; give `builtin:NAME` or the path of a .wasm component"
                );
            }
            if let Some(b) = s.policy.strip_prefix("builtin:")
                && wasmsnap_engine::builtin(b).is_none()
            {
                bail!(
                    "snapshotters.{name}.policy: no built-in policy {b:?} (built in: {})",
                    wasmsnap_engine::builtin_names().join(", ")
                );
            }
            if let Some(d) = &s.sha256
                && (d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                bail!("snapshotters.{name}.sha256: expected 64 hex digits, got {d:?}");
            }
            if s.limits.call_timeout_ms == 0 || s.limits.call_timeout_ms > 60_000 {
                bail!(
                    "snapshotters.{name}.limits.call_timeout_ms: must be 1..=60000, got {}",
                    s.limits.call_timeout_ms
                );
            }
            if s.limits.memory_mib == 0 || s.limits.memory_mib > 4096 {
                bail!(
                    "snapshotters.{name}.limits.memory_mib: must be 1..=4096, got {}",
                    s.limits.memory_mib
                );
            }
        }
        Ok(())
    }
}

/// A TOML or shape error as `dotted.key (line L, column C): what`, so the
/// operator sees which key is wrong without counting lines.
fn locate(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let Some(span) = e.span() else { return anyhow::anyhow!("{e}") };
    let (line, column) = line_col(text, span.start);
    // Name the key only for a shape error (the TOML itself is valid): on
    // some invalid TOML toml_edit's parser panics (found by the config_parse
    // fuzzer: "==\n.=").
    let valid_toml = toml::from_str::<toml::Table>(text).is_ok();
    let key = valid_toml
        .then(|| toml_edit::Document::parse(text.to_string()).ok())
        .flatten()
        .map(|doc| path_at(&doc, &span).to_string());
    match key.filter(|k| !k.is_empty()) {
        Some(key) => anyhow::anyhow!("{key} (line {line}, column {column}): {}", e.message()),
        None => anyhow::anyhow!("line {line}, column {column}: {}", e.message()),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
