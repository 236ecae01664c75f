//! The core's error type. Request errors carry a message that names the
//! snapshot key (or snapshotter) and what was wrong; wrapped errors keep
//! their cause as `source`, and [`Error::message`] walks the chain. The
//! wire layer maps variants to gRPC codes as containerd's errdefs does.
//! Constructing an error does not log: whoever handles it does.

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
    /// The policy could not answer: the sandbox stopped it (trap, time or
    /// memory limit). The policy is broken or hostile, not the request.
    #[error("snapshotter {snapshotter:?}")]
    PolicyUnavailable {
        snapshotter: String,
        #[source]
        source: Box<PolicyError>,
    },
    /// The policy answered with an error of its own or with a plan that
    /// breaks a host rule.
    #[error("snapshotter {snapshotter:?}")]
    PolicyFailed {
        snapshotter: String,
        #[source]
        source: Box<PolicyError>,
    },
    /// A Prepare or View found its parent removed or replaced on every
    /// attempt; a retry can succeed.
    #[error("{0}")]
    ParentChanging(String),
    /// The metastore's database failed (I/O, corruption, a newer schema).
    #[error("snapshot records")]
    Storage(#[source] MetaError),
    /// A snapshot directory could not be made, copied, measured or removed.
    #[error("snapshot directories")]
    Fs(#[from] FsError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound(m) => Error::NotFound(m),
            MetaError::AlreadyExists(m) => Error::AlreadyExists(m),
            MetaError::FailedPrecondition(m) => Error::FailedPrecondition(m),
            MetaError::InvalidArgument(m) => Error::InvalidArgument(m),
            storage @ MetaError::Storage(_) => Error::Storage(storage),
        }
    }
}

impl Error {
    /// A policy failure of the snapshotter `snapshotter`: Unavailable if
    /// the sandbox stopped the policy, failed if it answered badly.
    pub fn policy(snapshotter: &str, source: PolicyError) -> Self {
        let snapshotter = snapshotter.to_string();
        let unavailable = source.is_unavailable();
        let source = Box::new(source);
        if unavailable {
            Error::PolicyUnavailable { snapshotter, source }
        } else {
            Error::PolicyFailed { snapshotter, source }
        }
    }

    /// Whether the policy, rather than the request or the host, failed.
    pub fn is_policy_failure(&self) -> bool {
        matches!(self, Error::PolicyUnavailable { .. } | Error::PolicyFailed { .. })
    }

    /// This error and every cause below it, joined by ": ": what a client
    /// and the log are told.
    pub fn message(&self) -> String {
        let mut message = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            message.push_str(": ");
            message.push_str(&e.to_string());
            cause = e.source();
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_keep_their_cause() {
        let fs = FsError::NoParent { name: "fs".into() };
        let e = Error::from(fs);
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.downcast_ref::<FsError>().is_some(), "{source:?}");
        assert_eq!(
            e.message(),
            "snapshot directories: copy-parent \"fs\": the snapshot has no parent to copy from"
        );

        let e = Error::from(MetaError::Storage("disk on fire".into()));
        assert!(matches!(&e, Error::Storage(MetaError::Storage(_))), "{e:?}");
        assert_eq!(e.message(), "snapshot records: metastore: disk on fire");
        let e = Error::from(MetaError::NotFound("snapshot \"k\" does not exist".into()));
        assert!(matches!(&e, Error::NotFound(m) if m == "snapshot \"k\" does not exist"));
    }

    #[test]
    fn only_a_stopped_policy_is_unavailable() {
        let declared = PolicyError::Declared {
            label: "p".into(),
            func: "layout",
            error: wasmsnap_engine::DeclaredError::Failed("no".into()),
        };
        let e = Error::policy("s", declared);
        assert!(matches!(&e, Error::PolicyFailed { .. }), "{e:?}");
        assert_eq!(e.message(), "snapshotter \"s\": policy p: layout failed: no");

        let stopped = PolicyError::Timeout {
            label: "p".into(),
            func: "mounts",
            limit: std::time::Duration::from_secs(1),
            output: String::new(),
        };
        let e = Error::policy("s", stopped);
        assert!(matches!(&e, Error::PolicyUnavailable { .. }), "{e:?}");
        assert!(e.is_policy_failure());
        assert!(!Error::ParentChanging("p".into()).is_policy_failure());
    }
}
