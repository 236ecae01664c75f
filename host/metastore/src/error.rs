//! The metastore's error type. Each variant maps one to one onto a containerd
//! errdefs code (and so a gRPC code); messages name the key and what was wrong.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The database itself failed (I/O, corruption, a newer schema): not the caller's fault.
    #[error("metastore: {0}")]
    Storage(String),
}

/// Storage errors carry redb's own message; the variant tells the caller it
/// is not a problem with the request.
macro_rules! storage_from {
    ($($ty:ty),* $(,)?) => {
        $(impl From<$ty> for Error {
            fn from(err: $ty) -> Self {
                Error::Storage(err.to_string())
            }
        })*
    };
}

storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);

impl From<crate::filter::FilterError> for Error {
    fn from(err: crate::filter::FilterError) -> Self {
        Error::InvalidArgument(err.to_string())
    }
}

/// Keys can be a megabyte long: quote at most this much of one in a message.
const QUOTED_KEY_MAX: usize = 256;

/// `key`, debug-quoted and cut to a readable length (on a char boundary).
pub(crate) fn quoted(key: &str) -> String {
    if key.len() <= QUOTED_KEY_MAX {
        return format!("{key:?}");
    }
    let mut end = QUOTED_KEY_MAX;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &key[..end], key.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_cuts_long_keys_on_a_char_boundary() {
        assert_eq!(quoted("a/b c"), "\"a/b c\"");
        let long = "é".repeat(1000);
        let q = quoted(&long);
        assert!(q.len() < 300, "{q}");
        assert!(q.ends_with("... (2000 bytes)"), "{q}");
    }
}
