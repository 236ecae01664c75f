//! containerd's config (TOML, versions 2 and 3) against what wasmsnap
//! serves: the proxy entries on wasmsnap's socket, their capabilities and
//! exports, the snapshotters CRI uses, and (containerd 2.x) the transfer
//! service's `unpack_config`.
//!
//! Where the versions differ (containerd-facts.md): version 2 keeps CRI
//! in `io.containerd.grpc.v1.cri` (`containerd.snapshotter`,
//! `containerd.runtimes.NAME.snapshotter`); version 3 splits it into
//! `io.containerd.cri.v1.images` (`snapshotter`) and
//! `io.containerd.cri.v1.runtime` (`containerd.runtimes.NAME.snapshotter`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use toml::Value;

use crate::{Report, Served};

/// containerd's own snapshotters: a CRI setting may name these.
const BUILTIN: &[&str] =
    &["overlayfs", "native", "btrfs", "zfs", "devmapper", "aufs", "blockfile", "erofs"];
const TRANSFER: &str = "io.containerd.transfer.v1.local";

/// A `[proxy_plugins.NAME]` entry of type snapshot.
struct Proxy {
    ours: bool,
    capabilities: Vec<String>,
    exports_root: Option<String>,
}

pub fn check_containerd_config(
    file: &Path,
    version_hint: Option<&str>,
    served: &Served,
    report: &mut Report,
) {
    let config = match read(file) {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                "containerd.config",
                format!("{}: {e}", file.display()),
                "fix the file; `containerd config dump` shows what containerd reads",
            );
            return;
        }
    };
    let version = config.get("version").and_then(Value::as_integer).unwrap_or(1);
    // containerd's (major, minor): a version 3 file is containerd 2.x's.
    let containerd = if version >= 3 {
        Some(version_hint.and_then(parse_version).unwrap_or((2, 0)))
    } else {
        version_hint.and_then(parse_version).or_else(installed_version)
    };
    let shown = containerd.map_or("unknown".to_string(), |(a, b)| format!("{a}.{b}"));
    if version < 2 {
        report.warn(
            "containerd.config",
            format!(
                "{}: config version {version} (containerd {shown}); doctor reads versions 2 and 3",
                file.display()
            ),
            "migrate it: `containerd config migrate` (2.x), or write version = 2",
        );
    } else {
        report.ok(
            "containerd.config",
            format!("{}: version {version} (containerd {shown})", file.display()),
        );
    }

    let proxies = proxies(&config, served, report);
    let ours: Vec<&String> = proxies.iter().filter(|(_, p)| p.ours).map(|(n, _)| n).collect();
    if ours.is_empty() {
        report.fail(
            "containerd.proxy_plugins",
            format!("no [proxy_plugins] entry of type \"snapshot\" has address {}", served.address.display()),
            format!(
                "add one per served snapshotter: [proxy_plugins.{}] type = \"snapshot\" address = \"{}\"",
                served.snapshotters.keys().find(|n| *n != "native").map_or("NAME", String::as_str),
                served.address.display()
            ),
        );
    }
    for (name, proxy) in proxies.iter().filter(|(_, p)| p.ours) {
        check_capabilities(name, proxy, served, report);
        check_exports(name, proxy, containerd, served, report);
    }
    let cri = cri_snapshotters(&config, version);
    check_cri(&cri, &proxies, served, report);
    check_unpack(&config, containerd, &ours, &cri, report);
}

fn read(file: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    text.parse::<toml::Table>().map(Value::Table).map_err(|e| e.to_string().trim().to_string())
}

/// `1.6.20~ds1`, `v2.1.4`, `2.1` -> (major, minor).
fn parse_version(s: &str) -> Option<(u64, u64)> {
    let mut parts = s.trim().trim_start_matches('v').split(['.', '~', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `containerd --version`: `containerd github.com/containerd/containerd 1.6.20~ds1 ...`.
fn installed_version() -> Option<(u64, u64)> {
    let out = std::process::Command::new("containerd").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().find_map(|w| parse_version(w).filter(|_| w.contains('.')))
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

fn same_socket(a: &str, b: &Path) -> bool {
    let a = Path::new(a);
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Every snapshot proxy, checking names and addresses on the way.
fn proxies(config: &Value, served: &Served, report: &mut Report) -> BTreeMap<String, Proxy> {
    let mut out = BTreeMap::new();
    let Some(table) = config.get("proxy_plugins").and_then(Value::as_table) else {
        return out;
    };
    for (name, entry) in table {
        if entry.get("type").and_then(Value::as_str) != Some("snapshot") {
            continue;
        }
        let check = format!("containerd.proxy_plugins.{name}");
        let address = entry.get("address").and_then(Value::as_str).unwrap_or("");
        let ours = same_socket(address, &served.address);
        if name == "native" {
            report.fail(
                &check,
                "a proxy snapshotter called `native` clashes with containerd's own: containerd 1.6 panics at start, later versions refuse the plugin",
                "rename the entry (e.g. [proxy_plugins.wasmsnap-native]) and serve the native policy under that name in wasmsnap's config",
            );
        } else if ours && !served.snapshotters.contains_key(name) {
            report.fail(
                &check,
                format!(
                    "on wasmsnap's socket, but wasmsnap serves no snapshotter {name:?} (it serves: {}); every request fails NotFound",
                    served.snapshotters.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                format!("add [snapshotters.{name}] to wasmsnap's config, or rename the entry to a served name"),
            );
        } else if ours {
            report.ok(&check, format!("served by wasmsnap on {address}"));
        } else {
            report.ok(&check, format!("another proxy snapshotter ({address}), not wasmsnap's"));
        }
        let capabilities = entry
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let exports_root =
            get(entry, &["exports", "root"]).and_then(Value::as_str).map(str::to_string);
        out.insert(name.clone(), Proxy { ours, capabilities, exports_root });
    }
    out
}

fn check_capabilities(name: &str, proxy: &Proxy, served: &Served, report: &mut Report) {
    let Some(supported) = served.snapshotters.get(name) else { return };
    let check = format!("containerd.proxy_plugins.{name}.capabilities");
    let declared: BTreeSet<String> = proxy.capabilities.iter().cloned().collect();
    let extra: Vec<&String> = declared.difference(supported).collect();
    let missing: Vec<&String> = supported.difference(&declared).collect();
    if !extra.is_empty() {
        report.fail(
            &check,
            format!(
                "declares {extra:?}, which the policy of {name:?} does not support (it supports: {supported:?}): containerd would hand it work it does not do"
            ),
            format!("set capabilities = {:?}", supported.iter().collect::<Vec<_>>()),
        );
    } else if !missing.is_empty() {
        report.warn(
            &check,
            format!("the policy of {name:?} supports {missing:?}, which the entry does not declare: containerd will not use it"),
            format!("set capabilities = {:?}", supported.iter().collect::<Vec<_>>()),
        );
    } else {
        report.ok(&check, format!("{:?}, as the policy supports", declared));
    }
}

fn check_exports(
    name: &str,
    proxy: &Proxy,
    containerd: Option<(u64, u64)>,
    served: &Served,
    report: &mut Report,
) {
    let check = format!("containerd.proxy_plugins.{name}.exports");
    let dir = served.root.join(name);
    if matches!(containerd, Some((1, m)) if m < 7) {
        report.ok(&check, "containerd 1.6 has no proxy exports (kubelet's image filesystem stats come from containerd's own root)");
        return;
    }
    match &proxy.exports_root {
        None => report.warn(
            &check,
            "no exports.root: kubelet cannot account the image filesystem's usage, and image garbage collection misjudges disk pressure",
            format!("add exports = {{ root = \"{}\" }} to [proxy_plugins.{name}]", dir.display()),
        ),
        Some(root) if !Path::new(root).starts_with(&served.root) => report.warn(
            &check,
            format!("exports.root = {root:?} is outside wasmsnap's root {}", served.root.display()),
            format!("set exports = {{ root = \"{}\" }}", dir.display()),
        ),
        Some(root) => report.ok(&check, format!("exports.root = {root:?}")),
    }
}

/// Where CRI names a snapshotter: (setting, name).
fn cri_snapshotters(config: &Value, version: i64) -> Vec<(String, String)> {
    let (images, runtime) = if version >= 3 {
        (
            vec!["plugins", "io.containerd.cri.v1.images"],
            vec!["plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"],
        )
    } else {
        (
            vec!["plugins", "io.containerd.grpc.v1.cri", "containerd"],
            vec!["plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"],
        )
    };
    let mut out = Vec::new();
    let image = get(config, &images).and_then(|t| t.get("snapshotter")).and_then(Value::as_str);
    out.push((
        format!("{}.snapshotter", images[1..].join(".")),
        image.unwrap_or("overlayfs").to_string(),
    ));
    if let Some(runtimes) = get(config, &runtime).and_then(Value::as_table) {
        for (handler, r) in runtimes {
            if let Some(s) = r.get("snapshotter").and_then(Value::as_str).filter(|s| !s.is_empty())
            {
                out.push((
                    format!("{}.{handler}.snapshotter", runtime[1..].join(".")),
                    s.to_string(),
                ));
            }
        }
    }
    out
}

fn check_cri(
    cri: &[(String, String)],
    proxies: &BTreeMap<String, Proxy>,
    served: &Served,
    report: &mut Report,
) {
    for (i, (setting, name)) in cri.iter().enumerate() {
        let check = if i == 0 {
            "containerd.cri.snapshotter".to_string()
        } else {
            format!("containerd.cri.runtime.{}", setting.rsplit('.').nth(1).unwrap_or(""))
        };
        match proxies.get(name) {
            Some(p) if p.ours && served.snapshotters.contains_key(name) => {
                report.ok(&check, format!("{setting} = {name:?}, served by wasmsnap"))
            }
            Some(p) if p.ours => report.fail(
                &check,
                format!("{setting} = {name:?}: on wasmsnap's socket but not served by wasmsnap"),
                format!("serve {name:?} in wasmsnap's config, or point {setting} at a served name"),
            ),
            Some(_) => report.ok(&check, format!("{setting} = {name:?}, another proxy snapshotter")),
            None if served.snapshotters.contains_key(name) && !BUILTIN.contains(&name.as_str()) => {
                report.fail(
                    &check,
                    format!("{setting} = {name:?}: wasmsnap serves it, but containerd has no [proxy_plugins.{name}]"),
                    format!("add [proxy_plugins.{name}] type = \"snapshot\" address = \"{}\"", served.address.display()),
                )
            }
            None if BUILTIN.contains(&name.as_str()) && i == 0 => report.warn(
                &check,
                format!("{setting} = {name:?}: pods' images go to containerd's own snapshotter, not wasmsnap"),
                format!(
                    "set {setting} = one of wasmsnap's ({}) if pods should use it",
                    proxies.iter().filter(|(_, p)| p.ours).map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ),
            None if BUILTIN.contains(&name.as_str()) => {
                report.ok(&check, format!("{setting} = {name:?}, containerd's own"))
            }
            None => report.fail(
                &check,
                format!("{setting} = {name:?}: containerd has no snapshotter of that name"),
                "name a [proxy_plugins] entry or one of containerd's own snapshotters",
            ),
        }
    }
}

fn check_unpack(
    config: &Value,
    containerd: Option<(u64, u64)>,
    ours: &[&String],
    cri: &[(String, String)],
    report: &mut Report,
) {
    const CHECK: &str = "containerd.transfer.unpack_config";
    match containerd {
        Some((1, _)) => {
            report.ok(
                CHECK,
                "containerd 1.x pulls without the transfer service: no unpack_config needed",
            );
            return;
        }
        None => {
            report.warn(
                CHECK,
                "cannot tell containerd's version (config version 2 and no `containerd --version`)",
                "pass --containerd-version; for 2.x every proxy that images are pulled into must be in unpack_config",
            );
            return;
        }
        Some(_) => {}
    }
    let listed: BTreeSet<&str> = get(config, &["plugins", TRANSFER, "unpack_config"])
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|u| u.get("snapshotter")?.as_str()).collect())
        .unwrap_or_default();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    for name in ours {
        let check = format!("{CHECK}.{name}");
        let used_by_cri = cri.iter().any(|(_, s)| s == *name);
        let fix = format!(
            "add [[plugins.\"{TRANSFER}\".unpack_config]] platform = \"linux/{arch}\" snapshotter = \"{name}\""
        );
        if listed.contains(name.as_str()) {
            report.ok(&check, format!("{name:?} is an unpack target"));
        } else if used_by_cri {
            report.fail(
                &check,
                format!("{name:?} is CRI's snapshotter but not in unpack_config: pulls fail with \"no unpack platforms defined\""),
                fix,
            );
        } else {
            report.warn(
                &check,
                format!("{name:?} is not in unpack_config: `ctr pull`/`ctr images import` into it fail with \"no unpack platforms defined\""),
                fix,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.6.20~ds1"), Some((1, 6)));
        assert_eq!(parse_version("v2.1.4"), Some((2, 1)));
        assert_eq!(parse_version("2.1"), Some((2, 1)));
        assert_eq!(parse_version("github.com/containerd/containerd"), None);
    }
}
