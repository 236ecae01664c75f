//! How a policy can fail, told apart so the daemon can report each well:
//! the host could not load it, it speaks another contract version, the
//! sandbox stopped it (trap, time, memory), it declared an error, or its
//! plan broke a validation rule. Every message names the policy's label and
//! the function that failed.

use std::fmt;
use std::time::Duration;

use wasmsnap_plan::ValidationError;

/// A policy function: `init`, `layout` or `mounts`.
pub type Func = &'static str;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not a loadable component: bad wasm, not a wasmsnap policy, or it
    /// imports something the sandbox does not offer.
    #[error("policy {label}: cannot load: {reason}")]
    Load { label: String, reason: String },

    /// The component targets a `wasmsnap:policy` version this host lacks.
    #[error(
        "policy {label}: built for wasmsnap:policy@{found}, but this host supports wasmsnap:policy@{supported}"
    )]
    UnsupportedVersion { label: String, found: String, supported: String },

    /// The guest trapped (a panic shows up here, its message in `output`).
    #[error("policy {label}: {func} trapped: {reason}{}", OutputSuffix(output))]
    Trap { label: String, func: Func, reason: String, output: String },

    /// The call ran past the sandbox's time limit and was interrupted.
    #[error("policy {label}: {func} exceeded its time limit of {limit:?}{}", OutputSuffix(output))]
    Timeout { label: String, func: Func, limit: Duration, output: String },

    /// The guest asked for more memory than the sandbox allows.
    #[error(
        "policy {label}: {func} exceeded its memory limit of {limit} bytes (asked for {asked} bytes){}",
        OutputSuffix(output)
    )]
    MemoryLimit { label: String, func: Func, limit: usize, asked: usize, output: String },

    /// Every turn to call the policy was taken for longer than a call may
    /// wait (see `Sandbox::max_calls`).
    #[error(
        "policy {label}: {func} found all {max_calls} calls busy for {waited:?} (limits.max_concurrent_calls)"
    )]
    Busy { label: String, func: Func, max_calls: usize, waited: Duration },

    /// The policy returned an error of its own (its message escaped and
    /// capped, see `wasmsnap_plan::untrusted`).
    #[error("policy {label}: {func} failed: {error}")]
    Declared { label: String, func: Func, error: DeclaredError },

    /// The policy returned a plan that breaks a host rule.
    #[error("policy {label}: {func} returned an invalid plan: {error}")]
    InvalidPlan { label: String, func: Func, error: ValidationError },
}

impl PolicyError {
    /// The sandbox stopped the policy (trap, timeout, memory limit): the
    /// policy is broken or hostile, not the request. Clients see these as
    /// Unavailable; declared errors and invalid plans as Unknown.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            PolicyError::Trap { .. }
                | PolicyError::Timeout { .. }
                | PolicyError::MemoryLimit { .. }
                | PolicyError::Busy { .. }
        )
    }

    /// What the guest wrote to stdout/stderr during the failed call, if
    /// the sandbox stopped it.
    pub fn guest_output(&self) -> Option<&str> {
        match self {
            PolicyError::Trap { output, .. }
            | PolicyError::Timeout { output, .. }
            | PolicyError::MemoryLimit { output, .. } => Some(output),
            _ => None,
        }
    }
}

/// An error a policy declared (the WIT `policy-error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeclaredError {
    InvalidConfig(String),
    Unsupported(String),
    Failed(String),
}

impl fmt::Display for DeclaredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeclaredError::InvalidConfig(m) => write!(f, "invalid config: {m}"),
            DeclaredError::Unsupported(m) => write!(f, "unsupported: {m}"),
            DeclaredError::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// `; guest output: ...` when the guest wrote anything.
struct OutputSuffix<'a>(&'a str);

impl fmt::Display for OutputSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { Ok(()) } else { write!(f, "; guest output: {}", self.0) }
    }
}
