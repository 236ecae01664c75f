//! Which `wasmsnap:policy` contract a component speaks, read from its type
//! before anything is instantiated, so a policy built for another version
//! is refused with both versions named instead of a linker error.
//!
//! Versions follow the component model's semver rules: while the major
//! version is 0 the minor version is the compatibility line (0.1.0 and
//! 0.1.3 are compatible, 0.1 and 0.2 are not); wasmtime resolves a
//! compatible export name by the same rule.

use wasmtime::component::Component;

/// The `wasmsnap:policy` versions this host has bindings for.
pub const SUPPORTED_WIT: &[&str] = &["0.1.0", "0.2.0"];

/// The interface every policy exports, without its version.
const POLICY_INTERFACE: &str = "wasmsnap:policy/policy";

/// What the component's exports say about its contract version.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Contract {
    /// Compatible with this supported version.
    Supported(&'static str),
    Unsupported(String),
    /// It exports no `wasmsnap:policy/policy` at all.
    Missing {
        exports: Vec<String>,
    },
}

pub(crate) fn contract(engine: &wasmtime::Engine, component: &Component) -> Contract {
    let ty = component.component_type();
    let mut exports = Vec::new();
    for (name, _) in ty.exports(engine) {
        if name == POLICY_INTERFACE {
            return Contract::Unsupported("(unversioned)".into());
        }
        let Some(version) =
            name.strip_prefix(POLICY_INTERFACE).and_then(|rest| rest.strip_prefix('@'))
        else {
            exports.push(name.to_string());
            continue;
        };
        return match SUPPORTED_WIT.iter().find(|v| compatible(v, version)) {
            Some(v) => Contract::Supported(v),
            None => Contract::Unsupported(version.to_string()),
        };
    }
    Contract::Missing { exports }
}

/// Whether `found` is semver-compatible with `supported`.
fn compatible(supported: &str, found: &str) -> bool {
    match (line(supported), line(found)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The compatibility line: `(major, 0)` for major >= 1, `(0, minor)` for 0.x.
fn line(version: &str) -> Option<(u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let (major, minor, _patch) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() {
        return None;
    }
    Some(if major == 0 { (0, minor) } else { (major, 0) })
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn minor_is_the_line_below_one() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.0", "0.1.7"));
        assert!(!compatible("0.1.0", "0.2.0"));
        assert!(!compatible("0.1.0", "1.1.0"));
        assert!(compatible("1.0.0", "1.4.2"));
        assert!(!compatible("0.1.0", "0.1"));
        assert!(!compatible("0.1.0", "garbage"));
    }
}
