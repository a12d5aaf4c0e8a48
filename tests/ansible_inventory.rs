//! Our reading of inventories against Ansible's own: each test writes an
//! inventory folder, runs `sentry-provision inventory --list` and
//! `ansible-inventory --list` on it, and compares every host's variables and
//! every group's hosts. ansible-core comes from PyPI, in a venv that
//! `scripts/ansible-venv` makes the first time (python3-venv is installed
//! when missing). Nothing here needs the sandbox fleet.

mod common;

use common::{bin, needs};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// Variables only we show in `--list` (Ansible keeps its magic ones out).
const OURS_ONLY: [&str; 2] = ["inventory_hostname", "group_names"];

/// An inventory folder in a temporary directory.
struct Folder {
    dir: tempfile::TempDir,
}

fn folder(files: &[(&str, &str)]) -> Folder {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join("inventory").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    Folder { dir }
}

impl Folder {
    fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory")
    }

    fn ours(&self, args: &[&str]) -> Value {
        let mut cmd = Command::new(bin());
        cmd.arg("inventory").arg("-i").arg(self.inventory()).args(args);
        let out = common::run(cmd);
        assert_eq!(out.code, 0, "sentry-provision inventory {args:?}: {out:?}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    }

    fn ansible(&self, args: &[&str]) -> Value {
        // Its own config and temp folder, so nothing of this machine's
        // Ansible setup (or lack of one) takes part.
        let config = self.dir.path().join("ansible.cfg");
        fs::write(&config, "[defaults]\n").unwrap();
        let out = Command::new(common::ansible_inventory().expect("needs!(AnsibleCore) saw it made"))
            .current_dir(self.dir.path())
            .arg("-i")
            .arg(self.inventory())
            .args(args)
            .env("ANSIBLE_CONFIG", &config)
            .env("ANSIBLE_HOME", self.dir.path().join(".ansible"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join(".ansible/tmp"))
            .env("ANSIBLE_DEPRECATION_WARNINGS", "False")
            .env("ANSIBLE_NOCOLOR", "1")
            .output()
            .expect("ansible-inventory runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ansible-inventory {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Runs both with `args` after `--list` and asserts they agree; returns
    /// our document for further checks.
    fn agrees(&self, args: &[&str]) -> Value {
        let list: Vec<&str> = ["--list"].iter().chain(args).copied().collect();
        let (ours, theirs) = (self.ours(&list), self.ansible(&list));
        let (our_vars, their_vars) = (host_vars(&ours, &OURS_ONLY), host_vars(&theirs, &[]));
        assert_eq!(
            our_vars.keys().collect::<Vec<_>>(),
            their_vars.keys().collect::<Vec<_>>(),
            "the same hosts\nours: {ours:#}\nansible: {theirs:#}"
        );
        for (host, theirs_of_host) in &their_vars {
            let ours_of_host = &our_vars[host];
            for key in ours_of_host.keys().chain(theirs_of_host.keys()).collect::<BTreeSet<_>>() {
                assert_eq!(
                    ours_of_host.get(key),
                    theirs_of_host.get(key),
                    "host `{host}`, variable `{key}` (left ours, right Ansible's)"
                );
            }
        }
        assert_eq!(members(&ours), members(&theirs), "every group's hosts\nours: {ours:#}\nansible: {theirs:#}");
        ours
    }
}

/// `_meta.hostvars`, without `skip` keys.
fn host_vars(list: &Value, skip: &[&str]) -> BTreeMap<String, Map<String, Value>> {
    let hostvars = list["_meta"]["hostvars"].as_object().cloned().unwrap_or_default();
    hostvars
        .into_iter()
        .map(|(host, vars)| {
            let mut vars = vars.as_object().cloned().unwrap_or_default();
            vars.retain(|k, _| !skip.contains(&k.as_str()));
            (host, vars)
        })
        .collect()
}

/// Every group with at least one host, and all its hosts, its children's too.
fn members(list: &Value) -> BTreeMap<String, BTreeSet<String>> {
    fn collect(list: &Value, group: &str, seen: &mut BTreeSet<String>, into: &mut BTreeSet<String>) {
        if !seen.insert(group.to_owned()) {
            return;
        }
        let strings = |key: &str| -> Vec<String> {
            list[group][key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        };
        into.extend(strings("hosts"));
        for child in strings("children") {
            collect(list, &child, seen, into);
        }
    }
    let mut out = BTreeMap::new();
    for group in list.as_object().unwrap().keys().filter(|g| *g != "_meta") {
        let mut hosts = BTreeSet::new();
        collect(list, group, &mut BTreeSet::new(), &mut hosts);
        if !hosts.is_empty() {
            out.insert(group.clone(), hosts);
        }
    }
    out
}

const INI: &str = "\
# A layout Sentry operators keep: web and workers under one parent.
lonely.example.com

[sentry_web]
web[01:03].example.com ansible_user=deploy ansible_become=true
web02.example.com who=host-line tier=host-line

[sentry_workers]
worker-[a:b] ansible_host=10.0.0.21 sentry_worker_numprocs=24 num=042

[sentry_redis]
cache1 ansible_host=10.0.0.9 ansible_port=2222 maxmemory=2gb

[sentry:children]
sentry_web
sentry_workers
sentry_redis

[sentry:vars]
maxmemory=1gb
who=sentry-inline
tier=sentry-inline
memmon_email=ops@example.com

[sentry_web:vars]
who=web-inline
tier=web-inline
layer=web-inline

[all:vars]
who=all-inline
colour=all-inline
";

/// The precedence the issue names: a parent group's `group_vars/` file
/// against a child group's `[child:vars]`, files against files, host lines
/// against `host_vars/`.
#[test]
fn an_ini_inventory_with_children_ranges_and_vars_folders_reads_as_ansible_reads_it() {
    needs!(AnsibleCore);
    let f = folder(&[
        ("hosts.ini", INI),
        ("group_vars/all.yml", "colour: all-file\nmaxmemory: 512mb\n"),
        ("group_vars/sentry.yml", "who: sentry-file\nlayer: sentry-file\nsentry_bin: /www/sentry/bin/sentry\n"),
        ("group_vars/sentry_workers/main.yml", "tier: workers-file\n"),
        ("group_vars/sentry_workers/more.yaml", "extra: workers-more\n"),
        ("group_vars/no_such_group.yml", "ghost: true\n"),
        ("host_vars/web02.example.com.yml", "tier: web02-file\n"),
        ("host_vars/cache1/vars.yml", "maxmemory: 3gb\n"),
    ]);
    let ours = f.agrees(&[]);
    let web01 = &ours["_meta"]["hostvars"]["web01.example.com"];
    assert_eq!(web01["who"], "sentry-file", "the parent's group_vars file beats the child's [g:vars]");
    assert_eq!(ours["_meta"]["hostvars"]["worker-a"]["num"], "042");
}

#[test]
fn ini_values_are_typed_as_ansible_types_them() {
    needs!(AnsibleCore);
    let hosts = concat!(
        "[g]\n",
        "h1 num=042 n=42 zero=00 neg=-3 f=1.5 e=1e3 hex=0x1f oct=0o17 us=1_000 t=true T=True F=False y=yes ",
        "q=\"quoted\" s=\"'042'\" sp=\"a b\" l=[1,2] tup=(1,2) d=\"{'a': 1, 'b': [None]}\" empty= ",
        "ip=10.0.0.1 size=2gb path=/www/sentry mail=ops@example.com esc=a\\ b cut=x#y dropped=1\n",
        "[g:vars]\n",
        "gnum=042\n",
        "gn=42 # a comment that Python ignores\n",
        "gf=1.5\n",
        "gt=true\n",
        "gT=True\n",
        "gq=\"quoted\"\n",
        "gs=a b # kept, as no literal\n",
        "gl=[1, 'two', {'k': None}]\n",
        "gd={'a': 1}\n",
        "gcat='x' 'y'\n",
        "gempty=\n",
        "gnone=None\n",
        "gspaced =   padded   \n",
    );
    let f = folder(&[("hosts", hosts)]);
    let ours = f.agrees(&[]);
    let h1 = &ours["_meta"]["hostvars"]["h1"];
    assert_eq!(
        (&h1["num"], &h1["n"], &h1["gnum"], &h1["t"], &h1["T"]),
        (&json!("042"), &json!(42), &json!("042"), &json!("true"), &json!(true))
    );
}

#[test]
fn a_yaml_inventory_with_nested_children_reads_as_ansible_reads_it() {
    needs!(AnsibleCore);
    let yaml = "\
all:
  vars:
    who: all-inline
    maxmemory: 1gb
  hosts:
    lonely:
  children:
    sentry:
      vars:
        who: sentry-inline
        tier: sentry-inline
      children:
        sentry_web:
          hosts:
            web[1:2]:
              ansible_user: deploy
          vars:
            who: web-inline
            tier: web-inline
            options: {workers: 3, protocol: uwsgi}
        sentry_redis:
          hosts:
            cache1: {ansible_port: 2222, maxmemory: 2gb}
            web1:
";
    let f = folder(&[
        ("hosts.yml", yaml),
        ("group_vars/sentry.yaml", "who: sentry-file\nlist: [a, b]\n"),
        ("host_vars/web2.yml", "tier: web2-file\n"),
    ]);
    let ours = f.agrees(&[]);
    assert_eq!(ours["_meta"]["hostvars"]["web1"]["who"], "sentry-file");
}

#[test]
fn a_folder_of_ini_and_yaml_files_with_group_priorities_reads_as_ansible_reads_it() {
    needs!(AnsibleCore);
    let f = folder(&[
        ("10-web.ini", "[web]\nweb1\nshared\n[web:vars]\nwho=web\nansible_group_priority=5\n"),
        ("20-db.yml", "db:\n  hosts:\n    db1:\n    shared:\n  vars:\n    who: db\n"),
        ("group_vars/web.yml", "file: web\n"),
        ("group_vars/db.yml", "file: db\n"),
    ]);
    let ours = f.agrees(&[]);
    assert_eq!(ours["_meta"]["hostvars"]["shared"]["who"], "web", "priority 5 puts web after db");
}

#[test]
fn vars_files_without_extensions_json_files_cfg_files_and_ports_read_as_ansible_reads_them() {
    needs!(AnsibleCore);
    let f = folder(&[
        ("hosts", "[web]\nweb1.example.com\nweb2.example.com:2222\nweb[3:4]:2200 ansible_port=9\n10.0.0.5:22\n"),
        ("ansible.cfg", "[defaults]\nthis is no inventory\n"),
        ("more.json", r#"{"db": {"hosts": {"db1": null, "db2:2022": {"x": 1}}, "vars": {"port": 5432}}}"#),
        ("host_vars/web1.example.com", "plain: no extension\n"),
        ("host_vars/web2.example.com/a.yml", "order: a\n"),
        ("host_vars/web2.example.com/b", "order: b\n"),
        ("group_vars/web.json", r#"{"from_json": [1, 2]}"#),
        ("group_vars/web.yml", "from_json: the only one read, as .yml comes before .json\n"),
        ("group_vars/all.yml", "order: not read, as all/ comes first\n"),
        ("group_vars/all/10-first.yml", "order: first\n"),
        ("group_vars/all/deeper/20-second", "order: second\n"),
        ("group_vars/all/notes.txt", "not: read\n"),
    ]);
    f.agrees(&[]);
}

#[test]
fn extra_variables_and_a_limit_read_as_ansible_reads_them() {
    needs!(AnsibleCore);
    let f = folder(&[("hosts.ini", INI), ("group_vars/sentry.yml", "who: sentry-file\n")]);
    let ours = f.agrees(&["-e", "who=extra greeting=\"hello world\" tier='quoted'", "-e", r#"{"list": [1, 2]}"#]);
    assert_eq!(ours["_meta"]["hostvars"]["cache1"]["greeting"], "hello world");
    f.agrees(&["-l", "sentry_web:!web03.example.com"]);
}
