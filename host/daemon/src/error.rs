//! The core's error type. Every variant carries a message that names the
//! snapshot key (or snapshotter, or policy) and what was wrong; the wire
//! layer maps variants to gRPC codes as containerd's errdefs does.

use wasmsnap_engine::PolicyError;
use wasmsnap_fs::FsError;
use wasmsnap_metastore::Error as MetaError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The client cancelled the request before it committed.
    #[error("{0}")]
    Cancelled(String),
    /// The policy could not answer (trap, timeout, resource limit).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: storage, filesystem, a policy's declared error or bad plan.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound(m) => Error::NotFound(m),
            MetaError::AlreadyExists(m) => Error::AlreadyExists(m),
            MetaError::FailedPrecondition(m) => Error::FailedPrecondition(m),
            MetaError::InvalidArgument(m) => Error::InvalidArgument(m),
            other => Error::Internal(format!("metastore: {other}")),
        }
    }
}

impl From<FsError> for Error {
    fn from(e: FsError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl Error {
    /// A policy failure, naming the snapshotter it serves, the policy and
    /// the reason (with what the guest wrote to stderr, if it was stopped).
    /// Logged here, in the request's span: the operator sees the guest's
    /// output even when the client drops the error.
    pub fn policy(snapshotter: &str, e: PolicyError) -> Self {
        let message = format!("snapshotter {snapshotter:?}: {e}");
        tracing::warn!(error = %message, "policy failed");
        if e.is_unavailable() { Error::Unavailable(message) } else { Error::Internal(message) }
    }
}
