//! Checks on what callers hand in, before anything is written.

use std::collections::BTreeMap;

use crate::error::{Error, quoted};

/// containerd's limit on one label: key and value together (`labels.Validate`).
pub const MAX_LABEL_BYTES: usize = 4096;

/// The longest key accepted, in bytes: bolt's limit, so nothing containerd's
/// own snapshotters store is refused, while a key of megabytes (which would
/// bloat every List batch and log line) is.
pub const MAX_KEY_BYTES: usize = 32 * 1024;

/// Keys are opaque (`/`, `..`, NUL are fine: a key never becomes a path):
/// any string but the empty one, up to [`MAX_KEY_BYTES`].
pub(crate) fn key(what: &str, key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what} {} is {} bytes, more than the {MAX_KEY_BYTES} allowed",
            quoted(key),
            key.len()
        )));
    }
    Ok(())
}

/// The most label bytes (keys and values) one snapshot may carry. containerd
/// has no such limit, but a record must fit in one gRPC message (16 MiB)
/// for Stat and List to work: without it, Updates adding label after label
/// could grow a record until it can no longer be sent.
pub const MAX_LABELS_TOTAL_BYTES: usize = 4 << 20;

pub(crate) fn labels(key: &str, labels: &BTreeMap<String, String>) -> Result<(), Error> {
    let total: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_LABELS_TOTAL_BYTES {
        return Err(Error::InvalidArgument(format!(
            "labels of snapshot {} total {total} bytes (keys and values), more than the {MAX_LABELS_TOTAL_BYTES} allowed",
            quoted(key)
        )));
    }
    for (k, v) in labels {
        let size = k.len() + v.len();
        if size > MAX_LABEL_BYTES {
            return Err(Error::InvalidArgument(format!(
                "label {} of snapshot {} is {size} bytes (key and value), more than the {MAX_LABEL_BYTES} allowed",
                quoted(k),
                quoted(key)
            )));
        }
    }
    Ok(())
}

/// What a Commit brings (names and labels), checked as its transaction will
/// check them, so a bad request is refused before the disk-usage walk.
pub fn check_commit(name: &str, key: &str, labels: &BTreeMap<String, String>) -> Result<(), Error> {
    self::key("snapshot key", key)?;
    self::key("committed name", name)?;
    self::labels(name, labels)
}

/// containerd never stores an empty label value: writing one deletes the label.
pub(crate) fn drop_empty_values(labels: &mut BTreeMap<String, String>) {
    labels.retain(|_, v| !v.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_limit_counts_key_and_value() {
        let at_limit: BTreeMap<_, _> = [("k".repeat(96), "v".repeat(4000))].into_iter().collect();
        labels("s", &at_limit).unwrap();
        let over: BTreeMap<_, _> = [("k".repeat(97), "v".repeat(4000))].into_iter().collect();
        let err = labels("s", &over).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("kkkk") && m.contains("4097 bytes")),
            "{err}"
        );
    }

    #[test]
    fn label_total_is_limited() {
        let label = |i: usize| (format!("k{i:05}"), "v".repeat(4000));
        let at: BTreeMap<_, _> = (0..1000).map(label).collect();
        labels("s", &at).unwrap();
        let over: BTreeMap<_, _> = (0..1100).map(label).collect();
        let err = labels("s", &over).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("labels of snapshot \"s\" total 4406600 bytes")),
            "{err}"
        );
    }

    #[test]
    fn empty_keys_are_refused() {
        assert!(
            matches!(key("key", ""), Err(Error::InvalidArgument(m)) if m == "key must not be empty")
        );
        key("key", " ").unwrap();
    }

    #[test]
    fn keys_over_the_limit_are_refused_and_quoted_short() {
        key("key", &"k".repeat(MAX_KEY_BYTES)).unwrap();
        let err = key("snapshot key", &"k".repeat(1 << 20)).unwrap_err();
        let Error::InvalidArgument(m) = &err else { panic!("{err}") };
        assert!(
            m.starts_with("snapshot key \"kkk")
                && m.ends_with("is 1048576 bytes, more than the 32768 allowed"),
            "{m}"
        );
        assert!(m.len() < 400, "{m}");
    }
}
