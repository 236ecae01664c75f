//! The id map of a snapshot's labels: containerd's
//! `containerd.io/snapshot/uidmapping` and `.../gidmapping`, each
//! `ctr:host:size[,ctr:host:size...]` (CRI sends `0:<host>:65536`).
//!
//! The host parses and checks them before any policy sees the snapshot, and
//! renders them back into `uidmap=`/`gidmap=` itself: a policy can neither
//! receive nor write a malformed map. The checks are what the kernel's
//! `uid_map` and containerd's `userns.IDMap` would refuse later, at mount
//! time, with a less helpful error:
//! - ids and sizes are decimal `u32`s below 4294967295 (containerd's
//!   `invalidID`), sizes at least 1, `start + size` without overflow;
//! - at most [`MAX_RANGES`] ranges per map (the kernel's limit);
//! - no two ranges overlap, on the container side or on the host side;
//! - container id 0 is mapped, in both maps (containerd's `RootPair`);
//! - both labels are set, or neither (containerd's mount code idmaps only
//!   with both).

use std::fmt::Write as _;

use crate::model::{IdMap, IdRange};

pub const UID_LABEL: &str = "containerd.io/snapshot/uidmapping";
pub const GID_LABEL: &str = "containerd.io/snapshot/gidmapping";

/// Ranges of one map: the kernel accepts at most 340 lines in `uid_map`.
pub const MAX_RANGES: usize = 340;

/// containerd's `invalidID` (`1<<32 - 1`): no id, size or end may reach it.
const INVALID_ID: u64 = u32::MAX as u64;

/// A label with a bad id map; the message names the label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("label {label}={value:?}: {reason}")]
pub struct IdMapError {
    pub label: &'static str,
    pub value: String,
    pub reason: String,
}

/// The id map the labels ask for: `None` without either label.
pub fn from_labels<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Option<IdMap>, IdMapError> {
    let (mut uid, mut gid) = (None, None);
    for (k, v) in labels {
        match k {
            UID_LABEL => uid = Some(v),
            GID_LABEL => gid = Some(v),
            _ => {}
        }
    }
    match (uid, gid) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(missing(GID_LABEL, UID_LABEL)),
        (None, Some(_)) => Err(missing(UID_LABEL, GID_LABEL)),
        (Some(u), Some(g)) => {
            Ok(Some(IdMap { uid: parse(UID_LABEL, u)?, gid: parse(GID_LABEL, g)? }))
        }
    }
}

fn missing(absent: &'static str, present: &str) -> IdMapError {
    IdMapError {
        label: absent,
        value: String::new(),
        reason: format!("missing while {present} is set: an id map needs both labels"),
    }
}

/// One label's value: `ctr:host:size[,...]`, checked.
pub fn parse(label: &'static str, value: &str) -> Result<Vec<IdRange>, IdMapError> {
    let err = |reason: String| IdMapError { label, value: value.to_string(), reason };
    if value.is_empty() {
        return Err(err("empty: give ranges ctr:host:size[,ctr:host:size...]".into()));
    }
    let mut ranges: Vec<IdRange> = Vec::new();
    for (i, item) in value.split(',').enumerate() {
        if i == MAX_RANGES {
            return Err(err(format!("more than {MAX_RANGES} ranges (the kernel's limit)")));
        }
        let range =
            parse_range(item).map_err(|reason| err(format!("range {i} {item:?}: {reason}")))?;
        if let Some(j) =
            ranges.iter().position(|r| overlaps(r.container, range.container, r.size, range.size))
        {
            return Err(err(format!(
                "range {i} {item:?} overlaps range {j} on the container side"
            )));
        }
        if let Some(j) =
            ranges.iter().position(|r| overlaps(r.host, range.host, r.size, range.size))
        {
            return Err(err(format!("range {i} {item:?} overlaps range {j} on the host side")));
        }
        ranges.push(range);
    }
    if root_of(&ranges).is_none() {
        return Err(err("container id 0 is not mapped: a user namespace needs a root".into()));
    }
    Ok(ranges)
}

fn parse_range(item: &str) -> Result<IdRange, String> {
    let mut parts = item.split(':');
    let (Some(c), Some(h), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not ctr:host:size".into());
    };
    let number = |what: &str, text: &str| -> Result<u64, String> {
        // Digits only: no sign, no spaces, at most 10 digits (u32).
        if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{what} {text:?} is not a decimal number"));
        }
        let n: u64 = text.parse().map_err(|_| format!("{what} {text:?} is not a number"))?;
        if n >= INVALID_ID {
            return Err(format!("{what} {n} is out of range (ids are below {INVALID_ID})"));
        }
        Ok(n)
    };
    let (container, host, size) =
        (number("container id", c)?, number("host id", h)?, number("size", s)?);
    if size == 0 {
        return Err("size 0 maps nothing".into());
    }
    for (what, start) in [("container", container), ("host", host)] {
        if start + size > INVALID_ID {
            return Err(format!("{what} ids {start}+{size} run past {}", INVALID_ID - 1));
        }
    }
    Ok(IdRange { container: container as u32, host: host as u32, size: size as u32 })
}

fn overlaps(a: u32, b: u32, a_size: u32, b_size: u32) -> bool {
    let (a, b) = (u64::from(a), u64::from(b));
    a < b + u64::from(b_size) && b < a + u64::from(a_size)
}

fn root_of(ranges: &[IdRange]) -> Option<u32> {
    ranges.iter().find(|r| r.container == 0).map(|r| r.host)
}

impl IdMap {
    /// The host (uid, gid) that container root maps to (checked to exist
    /// when the map was parsed).
    pub fn root(&self) -> Option<(u32, u32)> {
        Some((root_of(&self.uid)?, root_of(&self.gid)?))
    }

    /// A uid (or gid) in the container as the host sees it.
    pub fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
        ranges.iter().find_map(|r| {
            let offset = id.checked_sub(r.container)?;
            (offset < r.size).then(|| r.host + offset)
        })
    }

    /// The `uidmap=`/`gidmap=` value of `ranges`: `ctr:host:size,...`.
    pub fn render(ranges: &[IdRange]) -> String {
        let mut out = String::new();
        for (i, r) in ranges.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Writing to a String cannot fail.
            let _ = write!(out, "{}:{}:{}", r.container, r.host, r.size);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(uid: &'a str, gid: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![(UID_LABEL, uid), (GID_LABEL, gid), ("other", "x")]
    }

    #[test]
    fn cri_map_parses_and_renders_back() {
        let map = from_labels(labels("0:100000:65536", "0:200000:65536")).unwrap().unwrap();
        assert_eq!(map.root(), Some((100000, 200000)));
        assert_eq!(IdMap::render(&map.uid), "0:100000:65536");
        assert_eq!(IdMap::to_host(&map.uid, 1000), Some(101000));
        assert_eq!(IdMap::to_host(&map.uid, 65536), None);
        let multi = parse(UID_LABEL, "1:300:10,0:100:1").unwrap();
        assert_eq!(IdMap::render(&multi), "1:300:10,0:100:1");
        assert_eq!(from_labels([("x", "y")]).unwrap(), None);
    }

    #[test]
    fn bad_maps_name_the_label_and_the_reason() {
        let cases = [
            ("0:100000:65536", "", GID_LABEL, "empty"),
            ("1:100000:65536", "0:1:1", UID_LABEL, "container id 0 is not mapped"),
            ("0:1:10,5:100:10", "0:1:1", UID_LABEL, "overlaps range 0 on the container side"),
            ("0:1:10,20:5:10", "0:1:1", UID_LABEL, "overlaps range 0 on the host side"),
            ("0:1:0", "0:1:1", UID_LABEL, "size 0"),
            ("0:-1:10", "0:1:1", UID_LABEL, "not a decimal number"),
            ("0:+1:10", "0:1:1", UID_LABEL, "not a decimal number"),
            ("0:4294967295:1", "0:1:1", UID_LABEL, "out of range"),
            ("0:4294967290:10", "0:1:1", UID_LABEL, "run past"),
            ("0:1", "0:1:1", UID_LABEL, "not ctr:host:size"),
            ("0:1:1:1", "0:1:1", UID_LABEL, "not ctr:host:size"),
            ("0:1:1,", "0:1:1", UID_LABEL, "range 1"),
        ];
        for (uid, gid, label, reason) in cases {
            let e = from_labels(labels(uid, gid)).unwrap_err();
            assert_eq!(e.label, label, "{uid} {gid}: {e}");
            assert!(e.to_string().contains(reason), "{uid} {gid}: {e}");
            assert!(e.to_string().starts_with(&format!("label {label}=")), "{e}");
        }
        let e = from_labels([(UID_LABEL, "0:1:1")]).unwrap_err();
        assert_eq!(e.label, GID_LABEL);
        let many: Vec<String> =
            (0..=MAX_RANGES as u32).map(|i| format!("{i}:{}:1", 1000 + i)).collect();
        let e = parse(UID_LABEL, &many.join(",")).unwrap_err();
        assert!(e.reason.contains("340"), "{e}");
        assert!(parse(UID_LABEL, &many[..MAX_RANGES].join(",")).is_ok());
    }
}
