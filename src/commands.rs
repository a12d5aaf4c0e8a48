//! The commands around the main job: show the inventory, gather facts,
//! render offline, check a playbook, print completions and the manual.

use crate::cli::{AuditArgs, CheckArgs, Cli, FactsArgs, InventoryArgs, OutputFormat, RenderArgs};
use crate::facts::Facts;
use crate::inventory::{self, Inventory};
use crate::output::{out, outln};
use crate::remote;
use crate::run::{self, Mode};
use crate::suggest::nearest;
use crate::transport::{self, Transport};
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
        Ok(Reach { inventory, selected, ssh, command_timeout: settings.command_timeout, _control: control })
    }

    fn hosts(&self) -> Vec<&inventory::Host> {
        self.inventory.hosts.iter().filter(|h| self.selected.contains(&h.name)).collect()
    }

    /// Runs `script` once on every selected host, all at once: each host's
    /// output, in the order of [`Reach::hosts`], or why there is none.
    async fn run_everywhere(&self, script: String) -> Vec<Result<transport::Output, transport::Error>> {
        let script = std::sync::Arc::new(transport::Script::from(script));
        let hosts = self.hosts();
        let mut running = tokio::task::JoinSet::new();
        let mut hosts_of_tasks = std::collections::HashMap::new();
        let timeout = self.command_timeout;
        for (i, host) in hosts.iter().enumerate() {
            let (target, _) = run::target_of(host);
            let (ssh, script, become_root) = (self.ssh.clone(), script.clone(), host.become_root);
            let task = running.spawn(async move {
                let transport = match Transport::connect(&target, &ssh).await {
                    Ok(t) => t,
                    Err(e) => return (i, Err(e)),
                };
                let output = transport.run(&script, become_root, timeout).await;
                transport.close().await;
                (i, output)
            });
            hosts_of_tasks.insert(task.id(), i);
        }
        let mut outputs: Vec<Option<Result<transport::Output, transport::Error>>> =
            hosts.iter().map(|_| None).collect();
        while let Some(joined) = running.join_next_with_id().await {
            match joined {
                Ok((_, (i, output))) => outputs[i] = Some(output),
                // That host alone fails.
                Err(e) => {
                    if let Some(&i) = hosts_of_tasks.get(&e.id()) {
                        let why = if e.is_panic() { crate::unwind::message(&e.into_panic()) } else { e.to_string() };
                        outputs[i] = Some(Err(transport::Error::Failed(format!("internal error: {why}"))));
                    }
                }
            }
        }
        outputs.into_iter().map(|o| o.expect("every host's task reported")).collect()
    }
}

/// `facts`: one snapshot round trip per host, facts printed as JSON.
pub async fn facts(args: &FactsArgs) -> u8 {
    let reach = match Reach::new(&args.common) {
        Ok(r) => r,
        Err(e) => return bad_input(&e),
    };
    let hosts = reach.hosts();
    let state = remote::StateFiles::new(remote::STATE_DIR, "facts");
    let snapshot = remote::snapshot(&state, &[], &[], &[]);
    let results = reach.run_everywhere(snapshot.text).await.into_iter().map(|output| {
        let parsed =
            remote::parse_snapshot(&output?.stdout, &[], &[], &snapshot.token).map_err(transport::Error::Failed)?;
        Facts::from_snapshot(&parsed.facts, &parsed.tools, remote::TOOLS).map_err(transport::Error::Failed)
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
    let mut code = 0;
    let mut document = Vec::new();
    let mut text = String::new();
    for (host, result) in hosts.iter().zip(&results) {
        match result {
            Ok(findings) => {
                if !findings.is_empty() {
                    code |= CHANGES_PENDING;
                }
                document.push(json!({"host": host.name, "findings": findings}));
                text.push_str(&crate::report::human::render_findings(&host.name, findings));
            }
            Err(e) => {
                code |= if matches!(e, transport::Error::Unreachable(_)) { HOST_UNREACHABLE } else { HOST_FAILED };
                document.push(json!({"host": host.name, "error": e.to_string()}));
                // The error quotes the host's stderr.
                text.push_str(&format!(
                    "{}: {} {}\n",
                    host.name,
                    if code & HOST_UNREACHABLE != 0 { "unreachable" } else { "failed" },
                    crate::report::human::printable(&e.to_string())
                ));
            }
        }
    }
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
