//! `inventory`: the inventory as ansible-inventory shows it (the host list
//! with variables, the group tree, or one host's variables); no SSH.

use crate::cli::InventoryArgs;
use crate::error::{Error, Outcome};
use crate::inventory::{self, Inventory};
use crate::output::{out, outln};
use crate::run::Mode;
use crate::suggest::nearest;
use serde_json::{Map, Value, json};
use std::fmt::Write;

/// `inventory --list | --graph | --host H`, as ansible-inventory prints them;
/// `--limit` narrows the list and the graph to the hosts it selects.
pub fn exec(args: &InventoryArgs) -> Outcome {
    // The same checks as every command's, `--ssh-config` included.
    let settings = args.common.settings(Mode::Check)?;
    let mut inventory = inventory::load(&settings.inventory, &settings.extra_vars).map_err(|e| e.to_string())?;
    if let Some(limit) = &settings.limit {
        let keep: Vec<String> =
            inventory.select(limit).map_err(|e| format!("--limit: {e}"))?.iter().map(|h| h.name.clone()).collect();
        if args.host.is_none() {
            inventory.hosts.retain(|h| keep.contains(&h.name));
            for (_, hosts) in inventory.tree.values_mut() {
                hosts.retain(|h| keep.contains(h));
            }
        }
    }
    if let Some(name) = &args.host {
        let Some(host) = inventory.hosts.iter().find(|h| &h.name == name) else {
            return Err(Error::BadInput(format!(
                "no host `{name}` in the inventory{}",
                nearest(name, inventory.hosts.iter().map(|h| h.name.as_str()))
            )));
        };
        outln!("{}", serde_json::to_string_pretty(&host.vars).expect("variables serialize"));
        return Ok(0);
    }
    if args.graph {
        out!("{}", graph(&inventory));
        return Ok(0);
    }
    outln!("{}", serde_json::to_string_pretty(&list(&inventory)).expect("the inventory serializes"));
    Ok(0)
}

fn list(inventory: &Inventory) -> Value {
    let mut document = Map::new();
    let hostvars: Map<String, Value> =
        inventory.hosts.iter().map(|h| (h.name.clone(), Value::Object(h.vars.clone()))).collect();
    document.insert("_meta".into(), json!({ "hostvars": hostvars }));
    for (group, (children, hosts)) in &inventory.tree {
        let mut entry = Map::new();
        if !children.is_empty() {
            entry.insert("children".into(), json!(children));
        }
        if !hosts.is_empty() {
            entry.insert("hosts".into(), json!(hosts));
        }
        document.insert(group.clone(), Value::Object(entry));
    }
    Value::Object(document)
}

fn graph(inventory: &Inventory) -> String {
    fn walk(inventory: &Inventory, group: &str, depth: usize, out: &mut String) {
        let indent = "|  ".repeat(depth.saturating_sub(1));
        let branch = if depth == 0 { "" } else { "|--" };
        let _ = writeln!(out, "{indent}{branch}@{group}:");
        if let Some((children, hosts)) = inventory.tree.get(group) {
            for child in children {
                walk(inventory, child, depth + 1, out);
            }
            for host in hosts {
                let _ = writeln!(out, "{}|--{host}", "|  ".repeat(depth));
            }
        }
    }
    let mut out = String::new();
    walk(inventory, "all", 0, &mut out);
    out
}
