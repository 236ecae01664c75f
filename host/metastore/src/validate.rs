//! Checks on what callers hand in, before anything is written.

use std::collections::BTreeMap;

use crate::error::{Error, quoted};

/// containerd's limit on one label: key and value together (`labels.Validate`).
pub const MAX_LABEL_BYTES: usize = 4096;

/// Keys are opaque: any string but the empty one.
pub(crate) fn key(what: &str, key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    Ok(())
}

pub(crate) fn labels(key: &str, labels: &BTreeMap<String, String>) -> Result<(), Error> {
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
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("kkkk") && m.contains("4097 bytes")), "{err}");
    }

    #[test]
    fn empty_keys_are_refused() {
        assert!(matches!(key("key", ""), Err(Error::InvalidArgument(m)) if m == "key must not be empty"));
        key("key", " ").unwrap();
    }
}
