//! The plan model. These mirror `wit/policy.wit`; the engine converts the
//! generated bindings of each supported contract version into them.

use serde::{Deserialize, Serialize};

/// A snapshot's storage id; its directory is `<root>/snapshots/<id>`.
pub type SnapshotId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View,
    Active,
    Committed,
}

/// The snapshot a policy is asked about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub kind: Kind,
    /// Nearest first.
    pub parent_ids: Vec<SnapshotId>,
    pub labels: Vec<(String, String)>,
}

/// Facts the host probed, handed to a policy's `init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub overlay: bool,
    pub userxattr: bool,
    pub index_param: bool,
    pub reflink: bool,
    pub page_size: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMode {
    Copy,
    CloneOrCopy,
}

/// One step of a layout, run inside the new snapshot's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum Step {
    /// `mode` is written as an octal string (`"0755"`), as case files and
    /// the harness's text show it.
    Mkdir {
        name: String,
        #[serde(with = "octal_mode")]
        mode: u32,
    },
    CopyParent {
        name: String,
        mode: CopyMode,
    },
    ChownLikeParent {
        name: String,
    },
}

/// What to create for a new snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub steps: Vec<Step>,
    /// The directory holding the snapshot's own content, if any.
    pub content: Option<String>,
}

/// A snapshot directory by reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirRef {
    pub snapshot: SnapshotId,
    pub name: String,
}

/// One mount of a plan, before rendering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum MountPlan {
    Bind {
        source: DirRef,
        readonly: bool,
        options: Vec<String>,
    },
    Overlay {
        lower: Vec<DirRef>,
        upper: Option<DirRef>,
        work: Option<DirRef>,
        options: Vec<String>,
    },
    Other {
        fs_type: String,
        source: String,
        options: Vec<String>,
    },
}

/// A permission mode as an octal string, `"0755"`; a number is read too.
mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:04o}"))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(u32),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(t) => u32::from_str_radix(t.strip_prefix("0o").unwrap_or(&t), 8)
                .map_err(|_| D::Error::custom(format!("mode {t:?} is not an octal number"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mkdir_mode_is_octal_text_in_json() {
        let step = Step::Mkdir { name: "fs".into(), mode: 0o755 };
        let json = serde_json::to_string(&step).unwrap();
        assert_eq!(json, r#"{"step":"mkdir","name":"fs","mode":"0755"}"#);
        assert_eq!(serde_json::from_str::<Step>(&json).unwrap(), step);
        let number = r#"{"step":"mkdir","name":"fs","mode":493}"#;
        assert_eq!(serde_json::from_str::<Step>(number).unwrap(), step);
    }
}
