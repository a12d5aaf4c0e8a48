//! Hosts, groups and their variables, loaded from an Ansible-compatible
//! inventory (INI or YAML, a file or a folder) plus `group_vars/` and
//! `host_vars/`. Precedence, lowest first, as Ansible layers them: the
//! inventory file's group variables (`all`, then the other groups, parents
//! before children, then by `ansible_group_priority` and name), the
//! `group_vars/` files in that same order, the inventory file's host
//! variables, the `host_vars/` files, then `-e` extra variables. So a
//! parent's `group_vars/` file beats a child's `[child:vars]`.

pub mod ini;
pub mod pyliteral;
mod vars_dirs;
pub mod yaml;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::vars::Vars;
use crate::vars::kind_of;

/// A bad inventory: names the file and, where known, the line and column.
#[derive(Debug)]
pub struct Error(pub String);

impl Error {
    pub fn at(file: &Path, line: usize, column: usize, message: impl fmt::Display) -> Self {
        Error(format!("{}:{line}:{column}: {message}", file.display()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

#[derive(Debug, Default)]
pub struct RawGroup {
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub vars: Vars,
}

/// What the inventory files say, before groups are resolved and variables merged.
#[derive(Debug, Default)]
pub struct RawInventory {
    pub groups: BTreeMap<String, RawGroup>,
    /// Variables set on host lines of the inventory files.
    pub host_vars: BTreeMap<String, Vars>,
    /// `group_vars/<group>` files; those of groups the inventory lacks are
    /// ignored, as Ansible ignores them.
    pub group_files: BTreeMap<String, Vars>,
    /// `host_vars/<host>` files, likewise.
    pub host_files: BTreeMap<String, Vars>,
    /// Declaration order of hosts, which is the order they are reported in.
    pub host_order: Vec<String>,
}

impl RawInventory {
    pub fn group_mut(&mut self, name: &str) -> &mut RawGroup {
        self.groups.entry(name.to_owned()).or_default()
    }

    pub fn add_host(&mut self, group: &str, host: &str, vars: Vars, file: &Path, line: usize) -> Result<(), Error> {
        if self.groups.contains_key(host) {
            return Err(Error::at(file, line, 1, format!("`{host}` is already a group name and cannot be a host")));
        }
        if !self.host_vars.contains_key(host) {
            self.host_order.push(host.to_owned());
        }
        self.host_vars.entry(host.to_owned()).or_default().extend(vars);
        let members = &mut self.group_mut(group).hosts;
        if !members.iter().any(|h| h == host) {
            members.push(host.to_owned());
        }
        Ok(())
    }
}

/// How to reach a host, from Ansible's connection variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Ssh { address: String, port: Option<u16>, user: Option<String>, key_file: Option<PathBuf> },
    Local,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub vars: Vars,
    pub connection: Connection,
    pub become_root: bool,
}

impl Host {
    /// Where the host is reached, as reports show it: `address[:port]`, or `local`.
    pub fn address(&self) -> String {
        match &self.connection {
            Connection::Local => "local".into(),
            Connection::Ssh { address, port: Some(port), .. } => format!("{address}:{port}"),
            Connection::Ssh { address, port: None, .. } => address.clone(),
        }
    }
}

#[derive(Debug)]
pub struct Inventory {
    pub hosts: Vec<Host>,
    /// Every group with all its hosts, its children's included.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Every group's child groups and the hosts listed in it directly.
    pub tree: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

/// Loads an inventory file or folder and the `group_vars/`, `host_vars/` beside it.
pub fn load(path: &Path, extra_vars: &Vars) -> Result<Inventory, Error> {
    let mut raw = RawInventory::default();
    let base = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error(format!("{}: {e}", path.display())))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_inventory_file(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error(format!("{}: no inventory file in this folder", path.display())));
        }
        for file in &files {
            load_file(file, &mut raw)?;
        }
        path.to_path_buf()
    } else {
        load_file(path, &mut raw)?;
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    // Looked up by name, as Ansible does: files of unknown names are not read.
    raw.group_mut("all");
    raw.group_mut("ungrouped");
    let groups: Vec<String> = raw.groups.keys().cloned().collect();
    for group in groups {
        let vars = vars_dirs::read_vars_named(&base.join("group_vars"), &group)?;
        if !vars.is_empty() {
            raw.group_files.insert(group, vars);
        }
    }
    let hosts = raw.host_order.clone();
    for host in hosts {
        let vars = vars_dirs::read_vars_named(&base.join("host_vars"), &host)?;
        if !vars.is_empty() {
            raw.host_files.insert(host, vars);
        }
    }
    resolve(raw, extra_vars)
}

fn is_inventory_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with('.') || name.ends_with('~') {
        return false;
    }
    match path.extension().and_then(|e| e.to_str()) {
        None => true,
        // Ansible skips `.cfg` files in an inventory folder.
        Some(ext) => matches!(ext, "ini" | "yml" | "yaml" | "json"),
    }
}

fn load_file(file: &Path, raw: &mut RawInventory) -> Result<(), Error> {
    let text = crate::input::read_text(file).map_err(Error)?;
    let is_yaml = matches!(file.extension().and_then(|e| e.to_str()), Some("yml" | "yaml" | "json"))
        || text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .is_some_and(|l| l.trim_end().ends_with(':') || l.starts_with("---"));
    if is_yaml { yaml::parse(&text, file, raw) } else { ini::parse(&text, file, raw) }
}

/// A YAML mapping of variables; an empty file is no variables.
pub fn read_vars_file(file: &Path) -> Result<Vars, Error> {
    let text = crate::input::read_text(file).map_err(Error)?;
    if text.trim().is_empty() {
        return Ok(Vars::new());
    }
    let value: Value = serde_yaml::from_str(&text).map_err(|e| yaml_error(file, &e))?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Vars::new()),
        other => Err(Error(format!("{}: expected a mapping of variables, found {}", file.display(), kind_of(&other)))),
    }
}

fn yaml_error(file: &Path, error: &serde_yaml::Error) -> Error {
    Error(crate::vars::yaml_error(file, error))
}

/// Orders groups parents-first and merges every host's variables.
fn resolve(mut raw: RawInventory, extra_vars: &Vars) -> Result<Inventory, Error> {
    raw.group_mut("all");
    raw.group_mut("ungrouped");
    let depth = group_depths(&raw)?;
    // Ansible reads `ansible_group_priority` as the group's place among its
    // siblings, not as a variable.
    let mut priority: BTreeMap<String, i64> = BTreeMap::new();
    for (name, group) in &mut raw.groups {
        if let Some(value) = group.vars.remove("ansible_group_priority") {
            let number = value.as_i64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()));
            let number = number.ok_or_else(|| {
                Error(format!("group `{name}`: ansible_group_priority `{value}` is not a whole number"))
            })?;
            priority.insert(name.clone(), number);
        }
    }
    // Like Ansible, `ungrouped` holds exactly the hosts in no other group
    // (a host listed before any section, or only under `all`).
    let grouped: BTreeSet<String> = raw
        .groups
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "all" | "ungrouped"))
        .flat_map(|(_, g)| g.hosts.iter().cloned())
        .collect();
    let lonely: Vec<String> = raw.host_order.iter().filter(|h| !grouped.contains(*h)).cloned().collect();
    raw.group_mut("ungrouped").hosts = lonely;
    // Membership: a host is in a group if listed there or in any descendant.
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in raw.groups.keys() {
        let mut seen = BTreeSet::new();
        collect_members(&raw, name, &mut seen, members.entry(name.clone()).or_default());
    }
    let all_hosts: BTreeSet<String> = raw.host_order.iter().cloned().collect();
    members.insert("all".to_owned(), all_hosts);

    let mut hosts = Vec::new();
    for name in &raw.host_order {
        let mut groups: Vec<&String> = members.iter().filter(|(_, m)| m.contains(name)).map(|(g, _)| g).collect();
        groups.sort_by_key(|g| {
            let place = (depth.get(*g).copied().unwrap_or(0), priority.get(*g).copied().unwrap_or(1));
            (g.as_str() != "all", place, g.as_str())
        });
        let mut vars = Vars::new();
        for group in &groups {
            vars.extend(raw.groups[*group].vars.clone());
        }
        for group in &groups {
            vars.extend(raw.group_files.get(*group).cloned().unwrap_or_default());
        }
        vars.extend(raw.host_vars[name].clone());
        vars.extend(raw.host_files.get(name).cloned().unwrap_or_default());
        vars.extend(extra_vars.clone());
        let connection = connection_of(name, &vars)?;
        let become_root = matches!(vars.get("ansible_become"), Some(Value::Bool(true)))
            || matches!(vars.get("ansible_become").and_then(Value::as_str), Some("true" | "yes" | "True"));
        vars.insert("inventory_hostname".to_owned(), Value::String(name.clone()));
        vars.insert(
            "group_names".to_owned(),
            Value::Array(groups.iter().filter(|g| g.as_str() != "all").map(|g| Value::String((*g).clone())).collect()),
        );
        hosts.push(Host { name: name.clone(), vars, connection, become_root });
    }
    let groups = members
        .into_iter()
        .map(|(g, m)| (g, raw.host_order.iter().filter(|h| m.contains(*h)).cloned().collect()))
        .collect();
    let mut tree: BTreeMap<String, (Vec<String>, Vec<String>)> =
        raw.groups.iter().map(|(name, g)| (name.clone(), (g.children.clone(), g.hosts.clone()))).collect();
    // Like Ansible: top-level groups are children of `all`, whose own hosts
    // are shown under `ungrouped`.
    let children: BTreeSet<&String> = raw.groups.values().flat_map(|g| &g.children).collect();
    let top: Vec<String> = raw.groups.keys().filter(|g| *g != "all" && !children.contains(g)).cloned().collect();
    let all = tree.entry("all".into()).or_default();
    all.0.extend(top);
    all.1.clear();
    Ok(Inventory { hosts, groups, tree })
}

fn collect_members(raw: &RawInventory, group: &str, seen: &mut BTreeSet<String>, into: &mut BTreeSet<String>) {
    if !seen.insert(group.to_owned()) {
        return;
    }
    if let Some(g) = raw.groups.get(group) {
        into.extend(g.hosts.iter().cloned());
        for child in &g.children {
            collect_members(raw, child, seen, into);
        }
    }
}

/// Depth of each group below its top-most parent; a cycle is an error.
fn group_depths(raw: &RawInventory) -> Result<BTreeMap<String, usize>, Error> {
    fn visit(
        raw: &RawInventory,
        group: &str,
        depth: usize,
        path: &mut Vec<String>,
        out: &mut BTreeMap<String, usize>,
    ) -> Result<(), Error> {
        if let Some(start) = path.iter().position(|g| g == group) {
            let mut cycle = path[start..].to_vec();
            cycle.push(group.to_owned());
            return Err(Error(format!("inventory groups form a cycle: {}", cycle.join(" -> "))));
        }
        let entry = out.entry(group.to_owned()).or_insert(0);
        *entry = (*entry).max(depth);
        path.push(group.to_owned());
        // Every group is below `all`, listed there or not, so being listed
        // there adds no depth.
        let below = if group == "all" { depth } else { depth + 1 };
        for child in &raw.groups[group].children {
            visit(raw, child, below, path, out)?;
        }
        path.pop();
        Ok(())
    }
    let mut depths = BTreeMap::new();
    for name in raw.groups.keys() {
        visit(raw, name, 0, &mut Vec::new(), &mut depths)?;
    }
    Ok(depths)
}

fn connection_of(host: &str, vars: &Vars) -> Result<Connection, Error> {
    let text = |key: &str| {
        vars.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    if text("ansible_connection").as_deref() == Some("local") {
        return Ok(Connection::Local);
    }
    if let Some(other) = text("ansible_connection").filter(|c| c != "ssh" && c != "smart") {
        return Err(Error(format!("host `{host}`: ansible_connection `{other}` is not supported (use ssh or local)")));
    }
    let port = match text("ansible_port").or_else(|| text("ansible_ssh_port")) {
        None => None,
        Some(p) => Some(
            p.parse::<u16>().map_err(|_| Error(format!("host `{host}`: ansible_port `{p}` is not a port number")))?,
        ),
    };
    Ok(Connection::Ssh {
        address: text("ansible_host").or_else(|| text("ansible_ssh_host")).unwrap_or_else(|| host.to_owned()),
        port,
        user: text("ansible_user").or_else(|| text("ansible_ssh_user")),
        key_file: text("ansible_ssh_private_key_file").map(PathBuf::from),
    })
}

impl Inventory {
    /// Hosts matching a pattern: names of hosts or groups separated by `,` or
    /// `:`, `*` wildcards, `!name` to exclude, `&name` to intersect.
    pub fn select(&self, pattern: &str) -> Result<Vec<&Host>, Error> {
        let mut chosen: Vec<&str> = Vec::new();
        let mut excluded = BTreeSet::new();
        let mut required: Option<BTreeSet<&str>> = None;
        for term in pattern.split([',', ':']).map(str::trim).filter(|t| !t.is_empty()) {
            let (kind, name) = match term.as_bytes()[0] {
                b'!' => ('!', &term[1..]),
                b'&' => ('&', &term[1..]),
                _ => ('+', term),
            };
            let matched = self.matching(name);
            if matched.is_empty() {
                let known = self.groups.keys().map(String::as_str).chain(self.hosts.iter().map(|h| h.name.as_str()));
                return Err(Error(format!(
                    "`{name}` matches no host or group in the inventory{} (groups: {})",
                    crate::suggest::nearest(name, known),
                    self.groups.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            match kind {
                '!' => excluded.extend(matched),
                '&' => {
                    let set: BTreeSet<&str> = matched.into_iter().collect();
                    required = Some(match required {
                        None => set,
                        Some(r) => r.intersection(&set).copied().collect(),
                    });
                }
                _ => chosen.extend(matched),
            }
        }
        Ok(self
            .hosts
            .iter()
            .filter(|h| chosen.contains(&h.name.as_str()))
            .filter(|h| !excluded.contains(h.name.as_str()))
            .filter(|h| required.as_ref().is_none_or(|r| r.contains(h.name.as_str())))
            .collect())
    }

    fn matching(&self, name: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for (group, members) in &self.groups {
            if glob_match(name, group) {
                out.extend(members.iter().map(String::as_str));
            }
        }
        for host in &self.hosts {
            if glob_match(name, &host.name) {
                out.push(&host.name);
            }
        }
        out
    }
}

fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            let Some(tail) = name.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| glob_match(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    pub(super) fn inventory_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    const INI: &str = "\
[web]
web[01:02] ansible_user=deploy

[redis]
cache1 ansible_host=10.0.0.9 ansible_port=2222 maxmemory=2gb

[sentry:children]
web
redis

[sentry:vars]
maxmemory=1gb
tier=sentry
";

    #[test]
    fn ini_groups_children_and_ranges_are_resolved() {
        let dir = inventory_dir(&[("hosts.ini", INI)]);
        let inv = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap();
        let names: Vec<_> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["web01", "web02", "cache1"]);
        assert_eq!(inv.groups["sentry"], ["web01", "web02", "cache1"]);
        let cache = &inv.hosts[2];
        assert_eq!(
            cache.connection,
            Connection::Ssh { address: "10.0.0.9".into(), port: Some(2222), user: None, key_file: None }
        );
    }

    #[test]
    fn host_variables_beat_child_groups_which_beat_parent_groups() {
        let dir = inventory_dir(&[
            ("hosts.ini", INI),
            ("group_vars/all.yml", "maxmemory: 512mb\ncolour: all\n"),
            ("group_vars/web.yml", "tier: web\n"),
            ("host_vars/web02.yml", "tier: special\n"),
        ]);
        let inv = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap();
        let var = |host: usize, key: &str| inv.hosts[host].vars[key].clone();
        assert_eq!(var(0, "maxmemory"), "512mb", "a group_vars file, even all's, beats [sentry:vars]");
        assert_eq!(var(0, "tier"), "web", "child group web beats parent sentry");
        assert_eq!(var(1, "tier"), "special", "host_vars beat groups");
        assert_eq!(var(2, "maxmemory"), "2gb", "host line beats groups");
        assert_eq!(var(2, "colour"), "all");
    }

    #[test]
    fn a_parent_groups_vars_file_beats_a_child_groups_inline_variable() {
        let dir = inventory_dir(&[
            ("hosts.ini", "[web]\nweb1\n[web:vars]\nwho=web-inline\n[sentry:children]\nweb\n"),
            ("group_vars/sentry.yml", "who: sentry-file\n"),
        ]);
        let inv = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap();
        assert_eq!(inv.hosts[0].vars["who"], "sentry-file");
    }

    #[test]
    fn within_a_layer_children_beat_parents_and_files_of_unknown_groups_are_ignored() {
        let dir = inventory_dir(&[
            ("hosts.ini", "[web]\nweb1\n[sentry:children]\nweb\n[sentry:vars]\nwho=sentry\n[web:vars]\nwho=web\n"),
            ("group_vars/sentry.yml", "file: sentry\n"),
            ("group_vars/web.yml", "file: web\n"),
            ("group_vars/nosuch.yml", "file: nosuch\n"),
        ]);
        let inv = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap();
        assert_eq!(inv.hosts[0].vars["who"], "web");
        assert_eq!(inv.hosts[0].vars["file"], "web");
        assert!(!inv.groups.contains_key("nosuch"), "{:?}", inv.groups.keys());
    }

    #[test]
    fn a_host_line_loses_to_a_host_vars_file_and_beats_every_group_file() {
        let dir = inventory_dir(&[
            ("hosts.ini", "[web]\nweb1 who=line tier=line\n"),
            ("group_vars/web.yml", "who: group-file\n"),
            ("host_vars/web1.yml", "tier: host-file\n"),
        ]);
        let inv = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap();
        assert_eq!(inv.hosts[0].vars["who"], "line");
        assert_eq!(inv.hosts[0].vars["tier"], "host-file");
    }

    #[test]
    fn group_priority_orders_sibling_groups_and_is_not_a_variable() {
        let ini = "[a]\nh1\n[b]\nh1\n[a:vars]\nwho=a\nansible_group_priority=10\n[b:vars]\nwho=b\n";
        let dir = inventory_dir(&[("hosts.ini", ini)]);
        let inv = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap();
        assert_eq!(inv.hosts[0].vars["who"], "a", "a's priority 10 puts it after b (1)");
        assert!(!inv.hosts[0].vars.contains_key("ansible_group_priority"));
    }

    #[test]
    fn a_group_listed_under_all_is_as_deep_as_one_that_is_not() {
        let yaml = "all:\n  children:\n    a:\n      hosts: {h1: }\n      vars: {who: a}\nb:\n  hosts: {h1: }\n  vars: {who: b}\n";
        let dir = inventory_dir(&[("hosts.yml", yaml)]);
        let inv = load(&dir.path().join("hosts.yml"), &Vars::new()).unwrap();
        assert_eq!(inv.hosts[0].vars["who"], "b", "siblings go by name: b after a");
    }

    #[test]
    fn only_hosts_in_no_other_group_are_ungrouped() {
        let dir = inventory_dir(&[("hosts.ini", "lone\nboth\n[web]\nboth\n")]);
        let inv = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap();
        assert_eq!(inv.groups["ungrouped"], ["lone"]);
        assert_eq!(inv.tree["ungrouped"].1, ["lone"]);
    }

    #[test]
    fn extra_variables_beat_everything() {
        let dir = inventory_dir(&[("hosts.ini", INI)]);
        let mut extra = Vars::new();
        extra.insert("maxmemory".into(), "4gb".into());
        let inv = load(&dir.path().join("hosts.ini"), &extra).unwrap();
        assert!(inv.hosts.iter().all(|h| h.vars["maxmemory"] == "4gb"));
    }

    #[test]
    fn yaml_inventories_read_like_ansible_ones() {
        let yaml = "all:\n  vars:\n    maxmemory: 1gb\n  children:\n    redis:\n      hosts:\n        r1:\n          ansible_connection: local\n        r2:\n      vars:\n        maxmemory: 2gb\n";
        let dir = inventory_dir(&[("hosts.yml", yaml)]);
        let inv = load(&dir.path().join("hosts.yml"), &Vars::new()).unwrap();
        assert_eq!(inv.hosts.len(), 2);
        assert_eq!(inv.hosts[0].connection, Connection::Local);
        assert_eq!(inv.hosts[1].vars["maxmemory"], "2gb");
    }

    #[test]
    fn an_unknown_yaml_key_names_file_line_and_column() {
        let dir = inventory_dir(&[("hosts.yml", "all:\n  hostz:\n    r1:\n")]);
        let err = load(&dir.path().join("hosts.yml"), &Vars::new()).unwrap_err().to_string();
        assert!(err.contains("hosts.yml:2:3"), "{err}");
        assert!(err.contains("hostz"), "{err}");
    }

    #[test]
    fn cyclic_groups_are_refused() {
        let dir = inventory_dir(&[("hosts.ini", "[a:children]\nb\n[b:children]\na\n")]);
        let err = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
    }

    #[test]
    fn a_bad_ini_line_names_file_and_line() {
        let dir = inventory_dir(&[("hosts.ini", "[web]\nweb1 ansible_port\n")]);
        let err = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap_err().to_string();
        assert!(err.contains("hosts.ini:2:1"), "{err}");
    }

    #[test]
    fn limit_patterns_select_groups_hosts_and_exclusions() {
        let dir = inventory_dir(&[("hosts.ini", INI)]);
        let inv = load(&dir.path().join("hosts.ini"), &Vars::new()).unwrap();
        let names = |p: &str| inv.select(p).unwrap().iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        assert_eq!(names("web"), ["web01", "web02"]);
        assert_eq!(names("sentry:!web01"), ["web02", "cache1"]);
        assert_eq!(names("web0*"), ["web01", "web02"]);
        assert!(inv.select("nosuch").unwrap_err().to_string().contains("matches no host"));
    }
}
