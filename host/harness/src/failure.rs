//! How a policy call can fail, as the harness reports and matches it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which call of the policy failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Loading the component and calling `init`.
    Init,
    Layout,
    Mounts,
}

impl Stage {
    pub const NAMES: &'static str = "init, layout, mounts";

    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "init" => Some(Stage::Init),
            "layout" => Some(Stage::Layout),
            "mounts" => Some(Stage::Mounts),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Init => "init",
            Stage::Layout => "layout",
            Stage::Mounts => "mounts",
        }
    }
}

/// What kind of failure it was: the host tells these apart and so must the
/// author's expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The policy returned its own `policy-error`.
    Declared,
    /// The guest trapped (a panic, an out-of-bounds access, a resource limit).
    Trap,
    /// The guest ran past its time budget.
    Timeout,
    /// The policy answered, but the host's validation refused the plan.
    InvalidPlan,
    /// The component speaks a `wasmsnap:policy` version the host does not.
    Version,
    /// The bytes are not a loadable policy component (or it failed to link).
    Load,
}

impl FailureKind {
    pub const NAMES: &'static str = "declared, trap, timeout, invalid-plan, version, load";

    pub fn parse(s: &str) -> Option<FailureKind> {
        match s {
            "declared" => Some(FailureKind::Declared),
            "trap" => Some(FailureKind::Trap),
            "timeout" => Some(FailureKind::Timeout),
            "invalid-plan" => Some(FailureKind::InvalidPlan),
            "version" => Some(FailureKind::Version),
            "load" => Some(FailureKind::Load),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Declared => "declared",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::InvalidPlan => "invalid-plan",
            FailureKind::Version => "version",
            FailureKind::Load => "load",
        }
    }

    /// How the report says it, e.g. "the policy declared an error".
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::Declared => "the policy declared an error",
            FailureKind::Trap => "the policy trapped",
            FailureKind::Timeout => "the policy ran out of time",
            FailureKind::InvalidPlan => "the host refused the policy's plan",
            FailureKind::Version => "the policy's contract version is not supported",
            FailureKind::Load => "the policy could not be loaded",
        }
    }
}

/// A failed policy call: where, what kind, and the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    #[serde(rename = "in")]
    pub stage: Stage,
    pub kind: FailureKind,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {} ({}): {}",
            self.kind.describe(),
            self.stage.as_str(),
            self.kind.as_str(),
            self.message
        )
    }
}
