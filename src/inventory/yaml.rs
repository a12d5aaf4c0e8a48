//! The Ansible YAML inventory format: `all:` with `hosts`, `vars` and
//! nested `children`, read with a strict schema so a misspelt key is an
//! error that points at its line and column.

use super::{Error, RawInventory, Vars, yaml_error};
use crate::vars::kind_of;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    #[serde(default)]
    hosts: Option<serde_yaml::Mapping>,
    #[serde(default)]
    vars: Option<Vars>,
    #[serde(default)]
    children: Option<BTreeMap<String, Option<Group>>>,
}

pub fn parse(text: &str, file: &Path, inv: &mut RawInventory) -> Result<(), Error> {
    let top: Option<BTreeMap<String, Option<Group>>> = serde_yaml::from_str(text).map_err(|e| yaml_error(file, &e))?;
    for (name, group) in top.unwrap_or_default() {
        add_group(&name, group, file, inv)?;
    }
    Ok(())
}

fn add_group(name: &str, group: Option<Group>, file: &Path, inv: &mut RawInventory) -> Result<(), Error> {
    inv.group_mut(name);
    let Some(group) = group else { return Ok(()) };
    for (host, vars) in group.hosts.unwrap_or_default() {
        let host = match host {
            serde_yaml::Value::String(s) => s,
            other => serde_yaml::to_string(&other).unwrap_or_default().trim().to_owned(),
        };
        let (hosts, mut port) =
            super::ini::host_pattern(&host).map_err(|e| Error(format!("{}: {e}", file.display())))?;
        let vars: Vars = match vars {
            serde_yaml::Value::Null => Vars::new(),
            other => match serde_yaml::from_value::<serde_json::Value>(other) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(v) => {
                    return Err(Error(format!(
                        "{}: host `{host}` in group `{name}`: expected a mapping of variables, found {}",
                        file.display(),
                        kind_of(&v)
                    )));
                }
                Err(e) => return Err(Error(format!("{}: host `{host}`: {e}", file.display()))),
            },
        };
        // A `host:port` key's port gives way to the host's own variables.
        port.extend(vars);
        for expanded in hosts {
            inv.add_host(name, &expanded, port.clone(), file, 0)?;
        }
    }
    inv.group_mut(name).vars.extend(group.vars.unwrap_or_default());
    for (child, body) in group.children.unwrap_or_default() {
        inv.group_mut(name).children.push(child.clone());
        add_group(&child, body, file, inv)?;
    }
    Ok(())
}
