//! The commands around the main job: show the inventory, gather facts,
//! render offline, check a playbook, print completions and the manual.

use crate::cli::{AuditArgs, CheckArgs, Cli, FactsArgs, InventoryArgs, OutputFormat, RenderArgs};
use crate::facts::Facts;
use crate::inventory::{self, Inventory};
use crate::output::{out, outln};
use crate::run::{self, Mode};
use crate::suggest::nearest;
use crate::transport::{self, script};
use crate::{BAD_INPUT, CHANGES_PENDING, HOST_FAILED, HOST_UNREACHABLE, bad_input};
use clap::CommandFactory;
use serde_json::{Map, Value, json};
use std::fmt::Write;

/// `inventory --list | --graph | --host H`, as ansible-inventory prints them;
/// `--limit` narrows the list and the graph to the hosts it selects.
pub fn inventory(args: &InventoryArgs) -> u8 {
    // The same checks as every command's, `--ssh-config` included.
    let settings = match args.common.settings(Mode::Check) {
        Ok(s) => s,
        Err(e) => return bad_input(&e),
    };
    let mut inventory = match inventory::load(&settings.inventory, &settings.extra_vars) {
        Ok(i) => i,
        Err(e) => return bad_input(&e.to_string()),
    };
    if let Some(limit) = &settings.limit {
        let keep: Vec<String> = match inventory.select(limit) {
            Ok(hosts) => hosts.iter().map(|h| h.name.clone()).collect(),
            Err(e) => return bad_input(&format!("--limit: {e}")),
        };
        if args.host.is_none() {
            inventory.hosts.retain(|h| keep.contains(&h.name));
            for (_, hosts) in inventory.tree.values_mut() {
                hosts.retain(|h| keep.contains(h));
            }
        }
    }
    if let Some(name) = &args.host {
        return match inventory.hosts.iter().find(|h| &h.name == name) {
            Some(host) => {
                outln!("{}", serde_json::to_string_pretty(&host.vars).expect("variables serialize"));
                0
            }
            None => bad_input(&format!(
                "no host `{name}` in the inventory{}",
                nearest(name, inventory.hosts.iter().map(|h| h.name.as_str()))
            )),
        };
    }
    if args.graph {
        out!("{}", graph(&inventory));
        return 0;
    }
    outln!("{}", serde_json::to_string_pretty(&list(&inventory)).expect("the inventory serializes"));
    0
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

/// The selected hosts of an inventory and how to reach them, for the
/// commands that talk to hosts without a playbook.
struct Reach {
    inventory: Inventory,
    selected: Vec<String>,
    ssh: transport::SshOptions,
    forks: usize,
    command_timeout: Option<std::time::Duration>,
    /// Holds the control sockets' folder for as long as the connections live.
    _control: transport::control::ControlFolder,
}

impl Reach {
    fn new(args: &crate::cli::CommonArgs) -> Result<Reach, String> {
        let settings = args.settings(Mode::Check)?;
        let inventory = inventory::load(&settings.inventory, &settings.extra_vars).map_err(|e| e.to_string())?;
        let selected = inventory
            .select(settings.limit.as_deref().unwrap_or("all"))
            .map_err(|e| format!("--limit: {e}"))?
            .iter()
            .map(|h| h.name.clone())
            .collect();
        let control =
            transport::control_directory().map_err(|e| format!("cannot create a control socket folder: {e}"))?;
        let ssh = run::ssh_options(&settings, control.path());
        Ok(Reach {
            inventory,
            selected,
            ssh,
            forks: settings.forks,
            command_timeout: settings.command_timeout,
            _control: control,
        })
    }

    fn hosts(&self) -> Vec<&inventory::Host> {
        self.inventory.hosts.iter().filter(|h| self.selected.contains(&h.name)).collect()
    }

    /// Runs `script` once on every selected host, through the run's
    /// fan-out: each host's output, in the order of [`Reach::hosts`], or why
    /// there is none.
    async fn run_everywhere(&self, script: String) -> Vec<Result<transport::Output, transport::Error>> {
        run::run_everywhere(&self.hosts(), &self.ssh, self.forks, self.command_timeout, script).await
    }
}

/// `facts`: one snapshot round trip per host, facts printed as JSON.
pub async fn facts(args: &FactsArgs) -> u8 {
    let reach = match Reach::new(&args.common) {
        Ok(r) => r,
        Err(e) => return bad_input(&e),
    };
    let hosts = reach.hosts();
    let state = script::StateFiles::new(script::STATE_DIR, "facts");
    let snapshot = script::snapshot(&state, &[], &[], &[]);
    let results = reach.run_everywhere(snapshot.text).await.into_iter().map(|output| {
        let parsed =
            script::parse_snapshot(&output?.stdout, &[], &[], &snapshot.token).map_err(transport::Error::Failed)?;
        Facts::from_snapshot(&parsed.facts, &parsed.tools, script::TOOLS).map_err(transport::Error::Failed)
    });
    let mut document = Map::new();
    let mut code = 0;
    for (host, result) in hosts.iter().zip(results) {
        let value = match result {
            Ok(facts) => serde_json::to_value(facts).expect("facts serialize"),
            Err(e) => {
                code |= HOST_UNREACHABLE;
                json!({ "error": e.to_string() })
            }
        };
        document.insert(host.name.clone(), value);
    }
    outln!("{}", serde_json::to_string_pretty(&Value::Object(document)).expect("facts serialize"));
    code
}

/// `audit`: one read-only round trip per host; findings against the guide.
pub async fn audit(args: &AuditArgs) -> u8 {
    let reach = match Reach::new(&args.common) {
        Ok(r) => r,
        Err(e) => return bad_input(&e),
    };
    let hosts = reach.hosts();
    let results: Vec<_> = reach
        .run_everywhere(crate::audit::script(&args.sentry_conf))
        .await
        .into_iter()
        .map(|output| {
            let output = output?;
            let seen = crate::audit::parse(&output.stdout).map_err(|e| {
                transport::Error::Failed(format!(
                    "{e} (exit status {}; stderr: {})",
                    output.status,
                    output.stderr_text()
                ))
            })?;
            Ok::<_, transport::Error>(crate::audit::analyse(&seen))
        })
        .collect();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let (code, document, text) = audit_outcome(&names, &results);
    let with = results.iter().filter(|r| r.as_ref().is_ok_and(|f| !f.is_empty())).count();
    let clean = results.iter().filter(|r| r.as_ref().is_ok_and(|f| f.is_empty())).count();
    match args.format {
        OutputFormat::Json => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({"exit_code": code, "hosts": document})).expect("serializes")
            )
        }
        OutputFormat::Human => {
            out!("{text}");
            outln!(
                "summary: {} host(s): {with} stray from the tuning guide, {clean} as it recommends, {} not read",
                hosts.len(),
                hosts.len() - with - clean
            );
        }
    }
    code
}

/// The exit bits, the JSON entries and the text of an audit: each host's
/// findings, or its error labelled by its own result (unreachable or failed).
fn audit_outcome(
    hosts: &[&str],
    results: &[Result<Vec<crate::audit::Finding>, transport::Error>],
) -> (u8, Vec<Value>, String) {
    let mut code = 0;
    let mut document = Vec::new();
    let mut text = String::new();
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok(findings) => {
                if !findings.is_empty() {
                    code |= CHANGES_PENDING;
                }
                document.push(json!({"host": host, "findings": findings}));
                text.push_str(&crate::report::human::render_findings(host, findings));
            }
            Err(e) => {
                let unreachable = matches!(e, transport::Error::Unreachable(_));
                code |= if unreachable { HOST_UNREACHABLE } else { HOST_FAILED };
                document.push(json!({"host": host, "error": e.to_string()}));
                // The error quotes the host's stderr.
                text.push_str(&format!(
                    "{host}: {} {}\n",
                    if unreachable { "unreachable" } else { "failed" },
                    crate::report::human::printable(&e.to_string())
                ));
            }
        }
    }
    (code, document, text)
}

/// `render`: every host's files rendered locally with stand-in facts; no SSH.
pub fn render(args: &RenderArgs) -> u8 {
    let mut settings = match args.common.settings(Mode::Check) {
        Ok(s) => s,
        Err(e) => return bad_input(&e),
    };
    if let Some(host) = &args.host {
        settings.limit = Some(host.clone());
    }
    let started = std::time::Instant::now();
    let prepared = match run::load(&settings) {
        Ok(p) => p,
        Err(e) => return bad_input(&e),
    };
    let rendered = match run::render_offline(&prepared, &settings) {
        Ok(r) => r,
        Err(e) => return bad_input(&e),
    };
    let mut files = 0;
    for (host, outputs) in &rendered {
        for (path, content) in outputs {
            files += 1;
            match &args.out {
                Some(dir) => {
                    let target = dir.join(host).join(path.trim_start_matches('/'));
                    let written = target
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(&target, content));
                    if let Err(e) = written {
                        return bad_input(&format!("{}: {e}", target.display()));
                    }
                }
                None => {
                    outln!("==> {host}: {path} <==");
                    out!("{}", String::from_utf8_lossy(content));
                }
            }
        }
    }
    if args.out.is_some() {
        eprintln!("rendered {files} file(s) for {} host(s) in {:.3}s", rendered.len(), started.elapsed().as_secs_f64());
    }
    0
}

/// `check-playbook`: the playbook and its templates, rendered with the
/// playbook's defaults (and the inventory's variables, if given).
pub fn check_playbook(args: &CheckArgs) -> u8 {
    match run::check_playbook(&args.playbook, args.inventory.as_deref(), &args.extra_vars) {
        Ok(summary) => {
            outln!("{summary}");
            0
        }
        Err(e) => {
            bad_input(&e);
            BAD_INPUT
        }
    }
}

pub fn completions(shell: clap_complete::Shell) -> u8 {
    clap_complete::generate(shell, &mut Cli::command(), "sentry-provision", &mut std::io::stdout());
    0
}

pub fn man() -> u8 {
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        return bad_input(&e.to_string());
    }
    out!("{}", String::from_utf8_lossy(&page));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_host_after_an_unreachable_one_is_still_called_failed() {
        let results = [
            Err(transport::Error::Unreachable("connection refused".into())),
            Err(transport::Error::Failed("exit status 1".into())),
            Ok(Vec::new()),
        ];
        let (code, document, text) = audit_outcome(&["db01", "web01", "web02"], &results);
        assert!(text.starts_with("db01: unreachable connection refused\nweb01: failed exit status 1\n"), "{text}");
        assert_eq!(code, HOST_UNREACHABLE | HOST_FAILED);
        assert_eq!(document[1], json!({"host": "web01", "error": "exit status 1"}));
    }
}
