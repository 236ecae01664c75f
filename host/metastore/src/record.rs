//! What the metastore stores about one snapshot.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use wasmsnap_plan::{Kind, SnapshotId};

/// A UTC instant with nanosecond precision (containerd's Info timestamps keep
/// nanoseconds, and its test suite checks they survive a round trip).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (negative before it).
    pub secs: i64,
    /// Always below 1_000_000_000.
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Timestamp { secs: after.as_secs() as i64, nanos: after.subsec_nanos() },
            Err(before) => {
                let before = before.duration();
                let (secs, nanos) = (before.as_secs() as i64, before.subsec_nanos());
                if nanos == 0 {
                    Timestamp { secs: -secs, nanos: 0 }
                } else {
                    Timestamp { secs: -secs - 1, nanos: 1_000_000_000 - nanos }
                }
            }
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.secs >= 0 {
            UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
                + Duration::from_nanos(t.nanos.into())
        }
    }
}

/// Disk usage of a snapshot's content, as containerd's `Usage` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// One snapshot, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Storage id: names the directory; kept across Commit; never given to
    /// another record (see the crate's note on ids).
    pub id: SnapshotId,
    /// The key (containerd's `Info.name`): the active key, or the committed name.
    pub name: String,
    pub kind: Kind,
    /// The parent's key; always a committed snapshot.
    pub parent: Option<String>,
    /// Never holds an empty value: containerd drops those on write.
    pub labels: BTreeMap<String, String>,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// Stored at Commit; `None` for actives and views (computed live).
    pub usage: Option<Usage>,
    /// Name of the directory (inside the snapshot's own) that holds its
    /// content, as the policy's layout said; set by the daemon after creation.
    pub content: Option<String>,
}

/// containerd's `Info` as an Update request carries it. `name` picks the
/// snapshot; `kind` and `parent` are never applied (containerd refuses a mask
/// naming them and ignores them otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateInfo {
    pub name: String,
    pub kind: Option<Kind>,
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A kind as messages name it ("parent snapshot \"a\" is a view, not committed").
pub(crate) fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::View => "a view",
        Kind::Active => "active",
        Kind::Committed => "committed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_system_time_with_nanoseconds() {
        for t in [
            Timestamp { secs: 0, nanos: 0 },
            Timestamp { secs: 1_700_000_000, nanos: 123_456_789 },
            Timestamp { secs: -1, nanos: 999_999_999 },
            Timestamp { secs: -5, nanos: 0 },
        ] {
            assert_eq!(Timestamp::from(SystemTime::from(t)), t);
        }
        let now = Timestamp::now();
        assert!(now.secs > 1_600_000_000 && now.nanos < 1_000_000_000);
    }
}
