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
    /// The id map of the snapshot's labels, parsed and checked by the host
    /// (see [`crate::idmap`]); policies of contract 0.1 never see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_map: Option<IdMap>,
}

/// One range of an id map: container ids `container..container+size` are
/// host ids `host..host+size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// A user namespace's uid and gid maps, as containerd's labels
/// `containerd.io/snapshot/uidmapping` and `.../gidmapping` give them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMap {
    pub uid: Vec<IdRange>,
    pub gid: Vec<IdRange>,
}

/// What a policy declares it supports (contract 0.2 `init`); a 0.1 policy
/// supports neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// A parentless active snapshot may be committed onto a parent.
    pub rebase: bool,
    /// The policy honours id maps (owner of new content, id-mapped mounts).
    pub remap_ids: bool,
}

impl Capabilities {
    /// containerd's names for them, as `[proxy_plugins.NAME] capabilities`
    /// lists them.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.rebase {
            names.push("rebase");
        }
        if self.remap_ids {
            names.push("remap-ids");
        }
        names
    }
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
    /// Own `name` by the host ids container uid/gid 0 map to.
    ChownToMappedRoot {
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

/// Whether `steps` copy the parent's tree: work as big as the parent, and
/// a tree that cannot be made again from the record alone.
pub fn copies_parent(steps: &[Step]) -> bool {
    steps.iter().any(|step| matches!(step, Step::CopyParent { .. }))
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
        /// Render the snapshot's id map as `uidmap=`/`gidmap=` options.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        id_mapped: bool,
    },
    /// No lowers and an upper without work: an extraction plan, rendered as
    /// `upperdir=` alone for containerd's applier (never mounted).
    Overlay {
        lower: Vec<DirRef>,
        upper: Option<DirRef>,
        work: Option<DirRef>,
        options: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        id_mapped: bool,
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
