//! Conversions between containerd's wire messages and core values.

use std::collections::BTreeMap;

use prost_types::Timestamp as WireTime;

use super::proto::{Mount as WireMount, snapshots as api};
use crate::error::Error;
use crate::info::{Info, InfoUpdate, Kind, Mount, Timestamp};

pub fn info(r: Info) -> api::Info {
    api::Info {
        name: r.name,
        parent: r.parent.unwrap_or_default(),
        // Always a real kind: containerd reads UNKNOWN as committed.
        kind: kind(r.kind) as i32,
        created_at: Some(time(r.created)),
        updated_at: Some(time(r.updated)),
        labels: r.labels.into_iter().collect(),
    }
}

fn kind(k: Kind) -> api::Kind {
    match k {
        Kind::View => api::Kind::View,
        Kind::Active => api::Kind::Active,
        Kind::Committed => api::Kind::Committed,
    }
}

fn time(t: Timestamp) -> WireTime {
    WireTime { seconds: t.secs, nanos: t.nanos as i32 }
}

/// An Update request's info; the kind is checked only if the mask names it.
pub fn update_info(i: api::Info) -> Result<InfoUpdate, Error> {
    let kind = match api::Kind::try_from(i.kind) {
        Ok(api::Kind::View) => Some(Kind::View),
        Ok(api::Kind::Active) => Some(Kind::Active),
        Ok(api::Kind::Committed) => Some(Kind::Committed),
        Ok(api::Kind::Unknown) => None,
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "snapshot {:?}: unknown kind {}",
                i.name, i.kind
            )));
        }
    };
    Ok(InfoUpdate {
        name: i.name,
        kind,
        parent: (!i.parent.is_empty()).then_some(i.parent),
        labels: i.labels.into_iter().collect(),
    })
}

pub fn labels(l: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    l.into_iter().collect()
}

pub fn mounts(m: Vec<Mount>) -> Vec<WireMount> {
    m.into_iter()
        .map(|m| WireMount {
            r#type: m.r#type,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}
