//! `wasmsnap explain` and `wasmsnap tree`: the daemon's admin API, printed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use wasmsnap_daemon::config::DEFAULT_ADDRESS;
use wasmsnap_daemon::wire::admin_client;
use wasmsnap_daemon::wire::proto::admin::TreeNode;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The daemon's socket.
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    address: PathBuf,
    /// The snapshotter (containerd's proxy name).
    #[arg(long)]
    snapshotter: String,
    /// The snapshot's key, as the snapshotter sees it (`ctr snapshots ls` shows it).
    key: String,
}

#[derive(clap::Args)]
pub struct TreeArgs {
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    address: PathBuf,
    #[arg(long)]
    snapshotter: String,
}

pub fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let e = admin_client::explain(&args.address, &args.snapshotter, &args.key)?;
    let r = e.record.unwrap_or_default();
    println!("snapshot   {} (id {}, {})", r.key, r.id, r.kind);
    println!("parent     {}", if r.parent.is_empty() { "(none)" } else { &r.parent });
    if !r.chain.is_empty() {
        println!("chain      {} (nearest first)", r.chain.join(" <- "));
    }
    let labels: BTreeMap<_, _> = r.labels.into_iter().collect();
    for (k, v) in &labels {
        println!("label      {k}={v}");
    }
    match (r.size, r.inodes) {
        (Some(s), Some(i)) => println!("usage      {s} bytes, {i} inodes (stored at commit)"),
        _ => println!("usage      not stored (measured by Usage for an active snapshot)"),
    }
    let p = e.policy.unwrap_or_default();
    println!("policy     {} sha256:{} wasmsnap:policy@{}", p.name, p.sha256, p.wit_version);
    println!("plan       {}", e.plan);
    println!("layout     {}", e.layout_steps.join("; "));
    if !e.content.is_empty() {
        println!("content    {}", e.content);
    }
    for m in &e.mounts {
        println!(
            "mount      type={} source={} options={}",
            m.r#type,
            m.source,
            m.options.join(",")
        );
    }
    let f = e.host_facts.unwrap_or_default();
    println!(
        "host facts overlay={} userxattr={} index_param={} reflink={} page_size={}",
        f.overlay, f.userxattr, f.index_param, f.reflink, f.page_size
    );
    Ok(())
}

pub fn tree(args: TreeArgs) -> anyhow::Result<()> {
    let nodes = admin_client::tree(&args.address, &args.snapshotter)?;
    let keys: std::collections::HashSet<&str> = nodes.iter().map(|n| n.key.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&TreeNode>> = BTreeMap::new();
    let mut roots = Vec::new();
    for n in &nodes {
        if keys.contains(n.parent.as_str()) {
            children.entry(n.parent.as_str()).or_default().push(n);
        } else {
            roots.push(n);
        }
    }
    fn print(n: &TreeNode, depth: usize, children: &BTreeMap<&str, Vec<&TreeNode>>) {
        println!("{}{} [{} {}] {}", "  ".repeat(depth), n.key, n.kind, n.id, n.plan);
        for c in children.get(n.key.as_str()).into_iter().flatten() {
            print(c, depth + 1, children);
        }
    }
    for r in roots {
        print(r, 0, &children);
    }
    Ok(())
}
