//! A policy that returns plans the host must refuse, one case per kind of
//! escape or broken rule, so the tests (and the daemon's hostile-policy
//! battery) see a real component's bad plan refused, not a hand-made one.
//!
//! The case is the config key `case`, or per snapshot the label
//! `containerd.io/snapshot/wasmsnap-test.case` (the only label prefix
//! containerd passes to a proxy snapshotter), which wins. Without a case,
//! or for the function a case does not concern, the plan is good: own
//! `fs`, bound read-write (read-only for a view).
//!
//! Layout cases: `layout-dotdot`, `layout-slash`, `layout-nul`,
//! `layout-mode`, `layout-content`, `layout-copy-orphan`,
//! `layout-chown-first`, `layout-too-many-steps`.
//!
//! Mount cases: `dotdot`, `slash`, `nul`, `charset`, `foreign-snapshot`,
//! `lowerdir-option`, `upperdir-option`, `workdir-option`, `comma-option`,
//! `path-option`, `reserved-option`, `other-bind-absolute`,
//! `other-source-path`, `writable-parent`, `writable-view`, `no-mounts`,
//! `too-many-mounts`, `no-lower`, `duplicate-lower`, `upper-without-work`,
//! `too-many-lowers`, `single-lower` (a read-only overlay of one layer,
//! which the kernel refuses), `unmade-dir` (a bind of an own directory
//! the layout does not create), `other-proc`, `other-sysfs`, `other-suid`,
//! `other-ro-rw` (for a view), `other-type-echo`.

use wasmsnap_guest::*;

pub const LABEL: &str = "containerd.io/snapshot/wasmsnap-test.case";

pub struct BadPlans {
    case: Option<String>,
}

impl Policy for BadPlans {
    fn init(config: &Config, _facts: &HostFacts) -> Result<Self, PolicyError> {
        config.only(&["case"])?;
        Ok(BadPlans { case: config.get("case").map(String::from) })
    }

    fn layout(&self, s: &Snapshot) -> Result<Layout, PolicyError> {
        let good = LayoutBuilder::new().mkdir("fs", 0o755).chown_like_parent("fs").content("fs");
        Ok(match self.case(s) {
            "layout-dotdot" => LayoutBuilder::new().mkdir("..", 0o755).build(),
            "layout-slash" => LayoutBuilder::new().mkdir("fs/../../escape", 0o755).build(),
            "layout-nul" => LayoutBuilder::new().mkdir("fs\0", 0o755).build(),
            "layout-mode" => LayoutBuilder::new().mkdir("fs", 0o104755).build(),
            "layout-content" => {
                LayoutBuilder::new().mkdir("fs", 0o755).content("elsewhere").build()
            }
            "layout-copy-orphan" => {
                LayoutBuilder::new().copy_parent("fs", CopyMode::Copy).content("fs").build()
            }
            "layout-chown-first" => {
                LayoutBuilder::new().chown_like_parent("fs").mkdir("fs", 0o755).build()
            }
            // Without id-map labels there is no mapped root to own it by.
            "layout-mapped-root" => LayoutBuilder::new()
                .mkdir("fs", 0o755)
                .chown_to_mapped_root("fs")
                .content("fs")
                .build(),
            "layout-too-many-steps" => (0..1000)
                .fold(LayoutBuilder::new(), |l, i| l.mkdir(&format!("d{i}"), 0o755))
                .build(),
            _ => good.build(),
        })
    }

    fn mounts(&self, s: &Snapshot) -> Result<Vec<Mount>, PolicyError> {
        let view = s.is_view();
        let parent = s.parent().unwrap_or(s.id);
        let dir = |snapshot, name: &str| DirRef { snapshot, name: name.into() };
        let overlay_with = |options: &[&str]| {
            overlay(
                vec![dir(parent, "fs")],
                Some((s.dir("fs"), s.dir("work"))),
                options.iter().map(|o| o.to_string()).collect(),
            )
        };
        let other = |fs_type: &str, source: &str, options: &[&str]| {
            Mount::Other(OtherMount {
                type_: fs_type.into(),
                source: source.into(),
                options: options.iter().map(|o| o.to_string()).collect(),
            })
        };
        Ok(match self.case(s) {
            "dotdot" => vec![bind(dir(parent, ".."), view)],
            "slash" => vec![bind(dir(parent, "fs/../../../../etc"), view)],
            "nul" => vec![bind(dir(parent, "fs\0"), view)],
            "charset" => vec![bind(dir(parent, "fs:x"), view)],
            "foreign-snapshot" => vec![bind(dir(s.id + 1000, "fs"), true)],
            "lowerdir-option" => vec![overlay_with(&["lowerdir=/etc"])],
            "upperdir-option" => vec![overlay_with(&["upperdir=/tmp"])],
            "workdir-option" => vec![overlay_with(&["workdir=/tmp"])],
            "comma-option" => vec![overlay_with(&["index=off,lowerdir=/etc"])],
            "path-option" => vec![overlay_with(&["xino=/etc/passwd"])],
            "reserved-option" => {
                vec![Mount::Bind(BindMount {
                    source: s.dir("fs"),
                    readonly: true,
                    options: vec!["rw".into()],
                    id_mapped: false,
                })]
            }
            // A map written by hand: container root as host root.
            "idmap-option" => vec![overlay_with(&["uidmap=0:0:65536", "gidmap=0:0:65536"])],
            // An extraction plan on a snapshot with parents.
            "extraction-with-parents" => vec![extraction(s.dir("fs"), vec![])],
            // chown-to-mapped-root is a layout step: see `layout`.
            "other-bind-absolute" => vec![other("bind", "/etc", &["rbind", "rw"])],
            "other-source-path" => vec![other("tmpfs", "/etc", &[])],
            // Host namespaces: containerd mounts plans as root on the host.
            "other-proc" => vec![other("proc", "proc", &["ro"])],
            "other-sysfs" => vec![other("sysfs", "sysfs", &["ro"])],
            "other-suid" => vec![other("tmpfs", "tmpfs", &["size=1m", "suid"])],
            // A view whose tmpfs would end writable: the last of ro/rw wins.
            "other-ro-rw" => vec![other("tmpfs", "tmpfs", &["ro", "rw"])],
            // An unknown type is echoed in the error: escaped and capped.
            "other-type-echo" => {
                let fs_type = format!("\x1b[2J\nlevel=ERROR forged {}", "y".repeat(100_000));
                vec![other(&fs_type, "x", &[])]
            }
            "writable-parent" => vec![bind(dir(parent, "fs"), false)],
            "writable-view" => vec![bind(s.dir("fs"), false)],
            "no-mounts" => vec![],
            "too-many-mounts" => vec![bind(s.dir("fs"), view); 1000],
            "no-lower" => vec![overlay(vec![], None, vec![])],
            "duplicate-lower" => {
                vec![overlay(vec![dir(parent, "fs"), dir(parent, "fs")], None, vec![])]
            }
            "upper-without-work" => vec![Mount::Overlay(OverlayMount {
                lower: vec![dir(parent, "fs")],
                upper: Some(s.dir("fs")),
                work: None,
                options: vec![],
                id_mapped: false,
            })],
            "too-many-lowers" => vec![overlay(vec![dir(parent, "fs"); 501], None, vec![])],
            "single-lower" => vec![overlay(vec![dir(parent, "fs")], None, vec![])],
            "unmade-dir" => vec![bind(s.dir("data"), view)],
            _ => vec![bind(s.dir("fs"), view)],
        })
    }
}

impl BadPlans {
    fn case<'a>(&'a self, s: &'a Snapshot) -> &'a str {
        s.label(LABEL).or(self.case.as_deref()).unwrap_or("")
    }
}

export_policy!(BadPlans);
