//! `wasmsnap policy inspect`: what a policy component is, read from its
//! component type, whether it links into the daemon's sandbox, and, for a
//! contract this host speaks, what its `init` declares (capabilities), from
//! one instance in the daemon's sandbox with an empty config and this
//! machine's host facts.

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// The interface every policy exports, without its version.
const POLICY_INTERFACE: &str = "wasmsnap:policy/policy";

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub policy: String,
    pub size: usize,
    pub sha256: String,
    /// The `wasmsnap:policy` version it exports, if it exports one.
    pub wit_package: Option<String>,
    /// Whether this host can load that version.
    pub supported: bool,
    /// Why it cannot be linked into the sandbox (an import the host does
    /// not provide), if its version is supported but the link fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_error: Option<String>,
    pub host_supports: Vec<&'static str>,
    pub exports: Vec<Item>,
    pub imports: Vec<Item>,
    /// containerd's names of what `init` declared (`rebase`, `remap-ids`);
    /// `None` if it was not loaded.
    pub capabilities: Option<Vec<&'static str>>,
    /// Why `init` could not tell (e.g. the policy needs config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities_unknown: Option<String>,
}

/// An export or import: its name, and the functions of an instance.
#[derive(Debug, Serialize)]
pub struct Item {
    pub name: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
}

pub fn inspect(label: &str, wasm: &[u8]) -> anyhow::Result<Inspection> {
    // The daemon's engine configuration, so what compiles here loads there.
    let policy_engine = wasmsnap_engine::Engine::new()?;
    let engine = policy_engine.wasmtime();
    let component = Component::new(engine, wasm)
        .map_err(|e| anyhow::anyhow!("{label} is not a valid component: {e:#}"))?;
    let ty = component.component_type();
    let items = |list: &mut dyn Iterator<Item = (&str, ComponentItem)>| -> Vec<Item> {
        list.map(|(name, item)| describe(engine, name, item)).collect()
    };
    let exports = items(&mut ty.exports(engine).map(|(n, e)| (n, e.ty)));
    let imports = items(&mut ty.imports(engine).map(|(n, e)| (n, e.ty)));
    let wit_package = exports.iter().find_map(|e| {
        let rest = e.name.strip_prefix(POLICY_INTERFACE)?;
        Some(match rest.strip_prefix('@') {
            Some(version) => format!("wasmsnap:policy@{version}"),
            None => "wasmsnap:policy (unversioned)".to_string(),
        })
    });
    let supported = wit_package
        .as_deref()
        .and_then(|p| p.strip_prefix("wasmsnap:policy@"))
        .is_some_and(|v| wasmsnap_engine::SUPPORTED_WIT.contains(&v));
    // The load's own link step, so "supported" means the daemon loads it
    // (up to what `init` says of the config).
    let link_error = match wasmsnap_engine::Policy::check_link(&policy_engine, label, wasm) {
        Err(wasmsnap_engine::PolicyError::Load { reason, .. }) if supported => Some(reason),
        _ => None,
    };
    let (capabilities, capabilities_unknown) = if supported && link_error.is_none() {
        let facts = wasmsnap_engine::probe_facts(&std::env::temp_dir());
        let sandbox = wasmsnap_engine::Sandbox::default();
        match wasmsnap_engine::Policy::load(&policy_engine, label, wasm, &[], &facts, sandbox) {
            Ok(p) => (Some(p.capabilities().names()), None),
            Err(e) => (None, Some(format!("init with an empty config failed: {e}"))),
        }
    } else {
        (None, None)
    };
    Ok(Inspection {
        link_error,
        capabilities,
        capabilities_unknown,
        policy: label.to_string(),
        size: wasm.len(),
        sha256: hex::encode(Sha256::digest(wasm)),
        wit_package,
        supported,
        host_supports: wasmsnap_engine::SUPPORTED_WIT.to_vec(),
        exports,
        imports,
    })
}

fn describe(engine: &wasmtime::Engine, name: &str, item: ComponentItem) -> Item {
    let (kind, functions) = match item {
        ComponentItem::ComponentInstance(instance) => {
            let functions = instance
                .exports(engine)
                .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
                .map(|(n, _)| n.to_string())
                .collect();
            ("instance", functions)
        }
        ComponentItem::ComponentFunc(_) => ("function", Vec::new()),
        ComponentItem::CoreFunc(_) => ("core function", Vec::new()),
        ComponentItem::Module(_) => ("core module", Vec::new()),
        ComponentItem::Component(_) => ("component", Vec::new()),
        ComponentItem::Type(_) => ("type", Vec::new()),
        ComponentItem::Resource(_) => ("resource", Vec::new()),
    };
    Item { name: name.to_string(), kind, functions }
}

/// The human-readable form.
pub fn text(i: &Inspection) -> String {
    let mut out = String::new();
    let contract = match &i.wit_package {
        Some(p) if i.supported => match &i.link_error {
            None => format!("{p} (supported)"),
            Some(e) => format!("{p} (NOT loadable: {e})"),
        },
        Some(p) => format!(
            "{p} (NOT supported: this host supports wasmsnap:policy@{})",
            i.host_supports.join(", ")
        ),
        None => "none: it exports no wasmsnap:policy/policy interface".to_string(),
    };
    out.push_str(&format!("policy:   {}\n", i.policy));
    out.push_str(&format!("contract: {contract}\n"));
    out.push_str(&format!("size:     {} bytes\n", i.size));
    out.push_str(&format!("sha256:   {}\n", i.sha256));
    match (&i.capabilities, &i.capabilities_unknown) {
        (Some(c), _) => out.push_str(&format!(
            "capabilities: {}\n  containerd: capabilities = [{}]\n",
            if c.is_empty() { "none".to_string() } else { c.join(", ") },
            c.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
        )),
        (None, Some(why)) => out.push_str(&format!("capabilities: unknown ({why})\n")),
        (None, None) => {}
    }
    for (title, list) in [("exports", &i.exports), ("imports", &i.imports)] {
        out.push_str(&format!("{title}:\n"));
        if list.is_empty() {
            out.push_str("  (none)\n");
        }
        for item in list {
            out.push_str(&format!("  {} ({})", item.name, item.kind));
            if !item.functions.is_empty() {
                out.push_str(&format!(": {}", item.functions.join(", ")));
            }
            out.push('\n');
        }
    }
    out
}
