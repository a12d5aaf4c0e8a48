//! `group_vars/` and `host_vars/`: which files hold a group's or a host's
//! variables, found by name the way Ansible's `host_group_vars` plugin finds
//! them, so files of names the inventory lacks are never read.

use super::{Error, Vars, read_vars_file};
use std::path::{Path, PathBuf};

/// The variables of the first of `<dir>/<name>`, `<name>.yml`,
/// `<name>.yaml` and `<name>.json` that exists (only that one), as Ansible's
/// `host_group_vars` finds them; a folder gives every file in it (and in its
/// folders) without an extension or with one of those, by name.
pub fn read_vars_named(dir: &Path, name: &str) -> Result<Vars, Error> {
    let mut vars = Vars::new();
    for ext in ["", ".yml", ".yaml", ".json"] {
        let path = dir.join(format!("{name}{ext}"));
        if path.is_dir() {
            for file in vars_files_in(&path)? {
                vars.extend(read_vars_file(&file)?);
            }
        } else if path.is_file() {
            vars.extend(read_vars_file(&path)?);
        } else {
            continue;
        }
        break;
    }
    Ok(vars)
}

fn vars_files_in(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.') && !n.ends_with('~')))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let ext = path.extension().and_then(|e| e.to_str());
        if path.is_dir() && ext.is_none() {
            files.extend(vars_files_in(&path)?);
        } else if path.is_file() && matches!(ext, None | Some("yml" | "yaml" | "json")) {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::super::Vars;

    #[test]
    fn vars_files_are_found_by_name_with_or_without_an_extension_as_ansible_finds_them() {
        let dir = super::super::tests::inventory_dir(&[
            ("hosts", "[web]\nweb1.example.com\n"),
            ("ansible.cfg", "[defaults]\nthis is no inventory\n"),
            ("extra.json", r#"{"db": {"hosts": {"db1": null}}}"#),
            ("host_vars/web1.example.com", "plain: no extension\n"),
            ("group_vars/web.json", r#"{"from_json": 1}"#),
            ("group_vars/all.yml", "order: not read, as all/ comes first\n"),
            ("group_vars/all/10-first.yml", "order: first\n"),
            ("group_vars/all/deeper/20-second", "order: second\n"),
            ("group_vars/all/notes.txt", "not: read\n"),
        ]);
        let inv = super::super::load(dir.path(), &Vars::new()).unwrap();
        let web = &inv.hosts.iter().find(|h| h.name == "web1.example.com").unwrap().vars;
        assert_eq!(web["plain"], "no extension");
        assert_eq!(web["from_json"], 1);
        assert_eq!(web["order"], "second");
        assert!(!web.contains_key("not"));
        assert_eq!(inv.groups["db"], ["db1"], "a .json inventory file is read, a .cfg one skipped");
    }
}
