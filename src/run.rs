//! A run: load and check everything offline, then per host, concurrently
//! (bounded by `--forks`), over one SSH master each: a snapshot round trip,
//! a local plan, then (unless checking) one install round trip and one
//! handlers round trip. The round trips are fixed by these phases, not by
//! the number of steps.

use crate::facts::Facts;
use crate::inventory::{self, Connection, Host, Vars};
use crate::plan::{self, Action, Attributes, FileChange, StepOutcome, Task};
use crate::playbook::{self, Playbook, State, StepKind};
use crate::render::Renderer;
use crate::transport::{self, HostKeys, SshOptions, SshTarget, Target, Transport, script};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory: PathBuf,
    pub playbook: PathBuf,
    pub limit: Option<String>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Vars,
    pub forks: usize,
    pub check: bool,
    pub diff_context: usize,
    pub ssh_config: Option<PathBuf>,
    pub host_keys: HostKeys,
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Unreachable,
}

#[derive(Debug, Clone)]
pub struct HandlerOutcome {
    pub name: String,
    pub ok: bool,
}

#[derive(Debug, Clone)]
pub struct HostReport {
    pub name: String,
    pub address: String,
    pub status: Status,
    pub steps: Vec<StepOutcome>,
    pub files: Vec<FileChange>,
    /// Handlers that ran (apply) or would run (check).
    pub handlers: Vec<HandlerOutcome>,
    /// Handlers an earlier run left pending on the host.
    pub carried_over: Vec<String>,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    pub round_trips: u32,
    pub elapsed: Duration,
}

/// Everything loaded and checked before any host is contacted.
pub struct Prepared {
    playbook: Playbook,
    renderer: Renderer,
    jobs: Vec<Job>,
}

struct Job {
    host: Host,
    plays: Vec<usize>,
    /// Run the scripts under `sudo -n` (the host's `ansible_become` or a play's `become`).
    become_root: bool,
    /// The host's record of handlers owed by this playbook.
    pending_file: String,
}

/// Loads inventory, playbook and templates, selects hosts, and renders every
/// host's steps with stand-in facts, so that bad input of any kind is found
/// here, with exit code 1 and no host touched.
pub fn prepare(settings: &Settings) -> Result<Prepared, String> {
    let inventory = inventory::load(&settings.inventory, &settings.extra_vars).map_err(|e| e.to_string())?;
    let playbook = playbook::load(&settings.playbook).map_err(|e| e.to_string())?;
    let renderer = Renderer::new(&playbook.templates_dir, &playbook.template_sources())?;
    let limited: Option<Vec<String>> = match &settings.limit {
        None => None,
        Some(pattern) => Some(
            inventory.select(pattern).map_err(|e| format!("--limit: {e}"))?.iter().map(|h| h.name.clone()).collect(),
        ),
    };
    let mut jobs: Vec<Job> = Vec::new();
    for (p, play) in playbook.plays.iter().enumerate() {
        let selected = inventory.select(&play.hosts).map_err(|e| {
            format!("{}: play `{}`: hosts: {e}", playbook.path.display(), play.name.as_deref().unwrap_or("?"))
        })?;
        for host in selected {
            if limited.as_ref().is_some_and(|l| !l.contains(&host.name)) {
                continue;
            }
            match jobs.iter_mut().find(|j| j.host.name == host.name) {
                Some(job) => {
                    job.plays.push(p);
                    job.become_root |= play.become_root;
                }
                None => jobs.push(Job {
                    host: host.clone(),
                    plays: vec![p],
                    become_root: host.become_root || play.become_root,
                    pending_file: pending_file(host, &playbook)?,
                }),
            }
        }
    }
    let order: Vec<&str> = inventory.hosts.iter().map(|h| h.name.as_str()).collect();
    jobs.sort_by_key(|j| order.iter().position(|n| *n == j.host.name));
    if jobs.is_empty() {
        return Err("no host matches the playbook's plays and --limit".into());
    }
    let placeholder = Facts::placeholder(script::TOOLS);
    let mut errors = Vec::new();
    for job in &jobs {
        if let Err(e) = render_tasks(&playbook, &renderer, job, &placeholder, settings) {
            errors.push(format!("host {}: {e}", job.host.name));
        }
    }
    if !errors.is_empty() {
        errors.dedup_by(|a, b| a.split_once(": ").map(|x| x.1) == b.split_once(": ").map(|x| x.1));
        return Err(errors.join("\n"));
    }
    Ok(Prepared { playbook, renderer, jobs })
}

/// A host's steps rendered for it, with its handlers in playbook order.
struct HostTasks {
    tasks: Vec<Task>,
    handlers: Vec<(String, String)>,
}

impl HostTasks {
    fn paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.tasks.iter().flat_map(|t| t.action.paths()).collect();
        paths.sort();
        paths.dedup();
        paths
    }

    fn guards(&self) -> Vec<(usize, &str)> {
        self.tasks
            .iter()
            .filter_map(|t| match &t.action {
                Action::Command { unless: Some(cmd), .. } => Some((t.index, cmd.as_str())),
                _ => None,
            })
            .collect()
    }
}

fn selected_by_tags(step_tags: &[String], settings: &Settings) -> bool {
    let wanted = settings.tags.is_empty()
        || step_tags.iter().any(|t| settings.tags.contains(t))
        || settings.tags.iter().any(|t| t == "all");
    let skipped = step_tags.iter().any(|t| settings.skip_tags.contains(t));
    wanted && !skipped
}

fn render_tasks(
    playbook: &Playbook,
    renderer: &Renderer,
    job: &Job,
    facts: &Facts,
    settings: &Settings,
) -> Result<HostTasks, String> {
    let file = playbook.path.display().to_string();
    let mut tasks = Vec::new();
    let mut handlers = Vec::new();
    let mut index = 0;
    for &p in &job.plays {
        let play = &playbook.plays[p];
        let mut vars = play.vars.clone();
        vars.extend(job.host.vars.clone());
        vars.insert("facts".into(), serde_json::to_value(facts).expect("facts serialize"));
        let vars = renderer.resolve_vars(&vars).map_err(|e| format!("{file}: {e}"))?;
        for step in &play.steps {
            index += 1;
            let origin = |field: &str| format!("{file}: step `{}`: {field}", step.name);
            let text = |field: &str, value: &str| renderer.render_str(&origin(field), value, &vars);
            let path = |field: &str, value: &str| checked_path(&origin(field), &text(field, value)?);
            if !selected_by_tags(&step.tags, settings) {
                continue;
            }
            if let Some(condition) = &step.when
                && !renderer.test(&origin("when"), condition, &vars)?
            {
                continue;
            }
            let action = match step.kind() {
                StepKind::Template(t) => Action::Template {
                    dest: path("dest", &t.dest)?,
                    content: renderer.render_file(&playbook.templates_dir, &t.src, &vars)?.into_bytes(),
                    attributes: Attributes {
                        mode: t.mode,
                        owner: t.owner.as_deref().map(|o| text("owner", o)).transpose()?,
                        group: t.group.as_deref().map(|g| text("group", g)).transpose()?,
                    },
                },
                StepKind::Line(l) => Action::Line {
                    path: path("path", &l.path)?,
                    line: l.line.as_deref().map(|v| text("line", v)).transpose()?,
                    regexp: match &l.regexp {
                        None => None,
                        Some(re) => {
                            let re = text("regexp", re)?;
                            Some(
                                regex::Regex::new(&re)
                                    .map_err(|e| format!("{}: `{re}` is invalid: {e}", origin("regexp")))?,
                            )
                        }
                    },
                    present: l.state == State::Present,
                    create: l.create,
                },
                StepKind::Block(b) => Action::Block {
                    path: path("path", &b.path)?,
                    block: text("block", &b.block)?,
                    marker: b.marker.clone(),
                    present: b.state == State::Present,
                    create: b.create,
                },
                StepKind::Link(l) => Action::Link { path: path("dest", &l.dest)?, target: text("src", &l.src)? },
                StepKind::Command(c) => Action::Command {
                    cmd: text("cmd", &c.cmd)?,
                    creates: c.creates.as_deref().map(|v| path("creates", v)).transpose()?,
                    unless: c.unless.as_deref().map(|v| text("unless", v)).transpose()?,
                },
            };
            tasks.push(Task { index, name: step.name.clone(), action, notify: step.notify.clone() });
        }
        for handler in &play.handlers {
            let origin = format!("{file}: handler `{}`: command", handler.name);
            handlers.push((handler.name.clone(), renderer.render_str(&origin, &handler.command, &vars)?));
        }
    }
    Ok(HostTasks { tasks, handlers })
}

/// `<state dir>/<playbook name>.pending`: handlers are owed per playbook, so
/// two playbooks on one host do not settle each other's debts.
fn pending_file(host: &Host, playbook: &Playbook) -> Result<String, String> {
    let dir = match host.vars.get("sentry_provision_state_dir") {
        None => script::STATE_DIR.to_owned(),
        Some(serde_json::Value::String(dir)) => {
            checked_path(&format!("host {}: sentry_provision_state_dir", host.name), dir.trim_end_matches('/'))?
        }
        Some(other) => {
            return Err(format!("host {}: sentry_provision_state_dir must be a path, not {other}", host.name));
        }
    };
    let name = playbook.path.file_stem().and_then(|s| s.to_str()).unwrap_or("playbook");
    Ok(format!("{dir}/{name}.pending"))
}

fn checked_path(origin: &str, path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{origin}: `{path}` is not an absolute path"));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!("{origin}: `{path}` contains `..`"));
    }
    if path.contains('\0') || path.contains('\n') {
        return Err(format!("{origin}: `{path}` contains a NUL or newline"));
    }
    Ok(path.to_owned())
}

/// Runs every prepared host, `forks` at a time, and returns their reports in inventory order.
pub async fn execute(prepared: Prepared, settings: &Settings) -> Result<Vec<HostReport>, String> {
    let control =
        transport::control_directory().map_err(|e| format!("cannot create a control socket folder in /tmp: {e}"))?;
    let ssh = SshOptions {
        config_file: settings.ssh_config.clone(),
        host_keys: settings.host_keys,
        control_directory: control.path().to_path_buf(),
        connect_timeout: settings.connect_timeout,
    };
    let progress = ProgressBar::new(prepared.jobs.len() as u64);
    progress.set_style(ProgressStyle::with_template("{spinner} {pos}/{len} hosts {wide_msg}").expect("valid template"));
    let shared = Arc::new((prepared, ssh, settings.clone(), progress.clone()));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(settings.forks.max(1)));
    let mut running = tokio::task::JoinSet::new();
    for i in 0..shared.0.jobs.len() {
        let shared = shared.clone();
        let semaphore = semaphore.clone();
        running.spawn(async move {
            let _permit = semaphore.acquire().await.expect("semaphore is never closed");
            let (prepared, ssh, settings, progress) = &*shared;
            let report = run_host(prepared, &prepared.jobs[i], ssh, settings).await;
            progress.inc(1);
            progress.set_message(report.name.clone());
            (i, report)
        });
    }
    let mut reports: Vec<(usize, HostReport)> = Vec::new();
    while let Some(done) = running.join_next().await {
        reports.push(done.map_err(|e| format!("internal error: a host task failed: {e}"))?);
    }
    progress.finish_and_clear();
    reports.sort_by_key(|(i, _)| *i);
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

fn target_of(host: &Host) -> (Target, String) {
    match &host.connection {
        Connection::Local => (Target::Local, "local".into()),
        Connection::Ssh { address, port, user, key_file } => (
            Target::Ssh(SshTarget {
                address: address.clone(),
                port: *port,
                user: user.clone(),
                key_file: key_file.clone(),
            }),
            match port {
                Some(p) => format!("{address}:{p}"),
                None => address.clone(),
            },
        ),
    }
}

async fn run_host(prepared: &Prepared, job: &Job, ssh: &SshOptions, settings: &Settings) -> HostReport {
    let started = Instant::now();
    let (target, address) = target_of(&job.host);
    let mut report = HostReport {
        name: job.host.name.clone(),
        address,
        status: Status::Ok,
        steps: Vec::new(),
        files: Vec::new(),
        handlers: Vec::new(),
        carried_over: Vec::new(),
        warnings: Vec::new(),
        error: None,
        round_trips: 0,
        elapsed: Duration::ZERO,
    };
    match Transport::connect(&target, ssh).await {
        Err(e) => {
            report.status = Status::Unreachable;
            report.error = Some(format!("connect: {e}"));
        }
        Ok(transport) => {
            if let Err((status, message)) = converge(prepared, job, &transport, settings, &mut report).await {
                report.status = status;
                report.error = Some(message);
            }
            transport.close().await;
        }
    }
    report.elapsed = started.elapsed();
    report
}

type Failure = (Status, String);

fn transport_failure(phase: &str, e: transport::Error) -> Failure {
    match e {
        transport::Error::Unreachable(m) => (Status::Unreachable, format!("{phase}: {m}")),
        transport::Error::Failed(m) => (Status::Failed, format!("{phase}: {m}")),
    }
}

async fn round_trip(
    transport: &Transport,
    job: &Job,
    phase: &str,
    script: &str,
    settings: &Settings,
    report: &mut HostReport,
) -> Result<transport::Output, Failure> {
    report.round_trips += 1;
    let output = transport
        .run(script, job.become_root, settings.command_timeout)
        .await
        .map_err(|e| transport_failure(phase, e))?;
    Ok(output)
}

async fn converge(
    prepared: &Prepared,
    job: &Job,
    transport: &Transport,
    settings: &Settings,
    report: &mut HostReport,
) -> Result<(), Failure> {
    let failed = |m: String| (Status::Failed, m);
    // Paths and guards are known before facts: they may use variables but not facts.
    let offline =
        render_tasks(&prepared.playbook, &prepared.renderer, job, &Facts::placeholder(script::TOOLS), settings)
            .map_err(failed)?;
    let paths = offline.paths();
    let guards = offline.guards();

    let snapshot_script = script::snapshot(&job.pending_file, &paths, &guards);
    let output = round_trip(transport, job, "snapshot", &snapshot_script, settings, report).await?;
    let snap = script::parse_snapshot(&output.stdout, &paths).map_err(|e| {
        failed(format!("snapshot: {e} (exit status {}; stderr: {})", output.status, output.stderr_text()))
    })?;
    let facts =
        Facts::from_snapshot(&snap.facts, &snap.tools, script::TOOLS).map_err(|e| failed(format!("facts: {e}")))?;
    let host_tasks = render_tasks(&prepared.playbook, &prepared.renderer, job, &facts, settings).map_err(failed)?;
    if host_tasks.paths() != paths || host_tasks.guards() != guards {
        return Err(failed("managed paths and `unless` guards may use variables but not facts".into()));
    }
    report.warnings.extend(plan::concurrency_warnings(&snap.snapshot));
    let handler_order: Vec<String> = host_tasks.handlers.iter().map(|(n, _)| n.clone()).collect();
    let planned =
        plan::plan(&host_tasks.tasks, &snap.snapshot, &handler_order, settings.diff_context).map_err(failed)?;
    for stale in snap.snapshot.pending_handlers.iter().filter(|h| !handler_order.contains(h)) {
        report
            .warnings
            .push(format!("pending handler `{stale}` from an earlier run is not in this playbook; left recorded"));
    }
    report.steps = planned.steps.clone();
    report.files = planned.files.clone();
    report.carried_over = planned.carried_over.clone();
    if !planned.is_empty() {
        report.status = Status::Changed;
    }
    if settings.check {
        report.handlers = planned.handlers.iter().map(|h| HandlerOutcome { name: h.clone(), ok: true }).collect();
        return Ok(());
    }

    if !planned.files.is_empty() || !planned.commands.is_empty() {
        let writes: Vec<script::FileWrite> =
            planned.files.iter().map(|f| script::FileWrite { path: &f.path, desired: &f.after }).collect();
        let commands: Vec<(usize, &str)> = planned.commands.iter().map(|c| (c.index, c.cmd.as_str())).collect();
        let install = script::install(&job.pending_file, &planned.handlers, &writes, &commands);
        let output = round_trip(transport, job, "install", &install, settings, report).await?;
        let result = script::parse_install(&output.stdout).map_err(|e| {
            failed(format!("install: {e} (exit status {}; stderr: {})", output.status, output.stderr_text()))
        })?;
        if let Some((what, message)) = result.failure {
            let what = describe_failed_write(&what, &planned, &host_tasks);
            return Err(failed(format!("install: {what}: {message}")));
        }
    }
    if !planned.handlers.is_empty() {
        let to_run: Vec<(&str, &str)> = planned
            .handlers
            .iter()
            .filter_map(|name| {
                host_tasks.handlers.iter().find(|(n, _)| n == name).map(|(n, c)| (n.as_str(), c.as_str()))
            })
            .collect();
        let output =
            round_trip(transport, job, "handlers", &script::handlers(&job.pending_file, &to_run), settings, report)
                .await?;
        let result = script::parse_handlers(&output.stdout).map_err(|e| {
            failed(format!("handlers: {e} (exit status {}; stderr: {})", output.status, output.stderr_text()))
        })?;
        report.handlers =
            to_run[..result.succeeded].iter().map(|(n, _)| HandlerOutcome { name: n.to_string(), ok: true }).collect();
        if let Some((i, status, message)) = result.failure {
            let (name, cmd) = to_run[i];
            report.handlers.push(HandlerOutcome { name: name.to_owned(), ok: false });
            return Err(failed(format!(
                "handler `{name}`: `{}` exited {status}: {message} (left pending; it runs again next time)",
                cmd.trim()
            )));
        }
    }
    Ok(())
}

fn describe_failed_write(what: &str, planned: &plan::Plan, tasks: &HostTasks) -> String {
    if let Some(i) = what.strip_prefix("file:").and_then(|i| i.parse::<usize>().ok()) {
        return planned.files.get(i).map_or_else(|| what.to_owned(), |f| format!("writing {}", f.path));
    }
    if let Some(i) = what.strip_prefix("command:").and_then(|i| i.parse::<usize>().ok()) {
        return tasks.tasks.iter().find(|t| t.index == i).map_or_else(
            || what.to_owned(),
            |t| match &t.action {
                Action::Command { cmd, .. } => format!("step `{}`: command `{cmd}`", t.name),
                _ => t.name.clone(),
            },
        );
    }
    if what == "record" {
        return "recording pending handlers".into();
    }
    what.to_owned()
}

/// Changes were found (check) or made (apply) on any host.
pub fn any_changes(reports: &[HostReport]) -> bool {
    reports.iter().any(|r| r.status == Status::Changed || (r.status == Status::Failed && !r.files.is_empty()))
}
