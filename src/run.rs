//! A run: load and check everything offline, then per host, concurrently
//! (bounded by `--forks`), over one SSH master each: a snapshot round trip,
//! a local plan, then (apply) one install round trip and one handlers round
//! trip, or (drift) one round trip of live probes. The round trips are fixed
//! by these phases, not by the number of steps.

use crate::facts::Facts;
use crate::interrupt;
use crate::inventory::{self, Connection, Host, Vars};
use crate::plan::drift::{Applied, ItemState};
use crate::plan::{self, Action, Attributes, Plan, Snapshot, StepOutcome, Task};
use crate::playbook::{self, Playbook, State, StepKind};
use crate::progress::{HostProgress, Progress};
use crate::remote::{self, StateFiles};
use crate::render::Renderer;
use crate::secrets::Secrets;
use crate::test_hooks;
use crate::transport::{self, HostKeys, SshOptions, SshTarget, Target, Transport};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
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
    pub mode: Mode,
    /// Keep the previous version of every changed file (`--backup`).
    pub backup: bool,
    /// How long to wait for another run's lock on a host.
    pub lock_timeout: Duration,
    /// `-v`: round trips and timings on stderr; `-vv`: their stderr too.
    pub verbosity: u8,
    /// `-q`: no progress output.
    pub quiet: bool,
    /// `--serial`: hosts per batch, over the plays' own `serial`.
    pub serial: Option<playbook::Serial>,
    pub diff_context: usize,
    pub ssh_config: Option<PathBuf>,
    pub host_keys: HostKeys,
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// Plan and report; touch nothing.
    Check,
    /// Plan, probe live state, classify; remediate if asked.
    Drift(Remediate),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remediate {
    Nothing,
    /// Put back what moved on the host (files and live state), nothing else.
    HostDrift,
    /// Also apply what the playbook changed since the last apply.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    File,
    Live,
    Handler,
}

/// One thing that is not as the playbook wants it, found by `drift`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DriftItem {
    pub kind: ItemKind,
    /// The path, probe or handler name.
    pub subject: String,
    pub state: ItemState,
    pub expected: String,
    pub actual: String,
    /// Unified diff, for files.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Ok,
    Changed,
    Failed,
    Unreachable,
    /// Stopped by a signal before it finished (or before it started).
    Interrupted,
}

/// What `drift` says of handlers owed while another run holds the host's lock.
pub const OWED_BY_RUNNING_APPLY: &str = "owed by an apply running now (lock held)";

#[derive(Debug, Clone)]
pub struct HandlerOutcome {
    pub name: String,
    pub ok: bool,
    /// Run again by a rollback, on the restored files.
    pub rollback: bool,
}

/// A changed file's previous version, kept where no service loads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Backup {
    /// The file it is a copy of.
    pub path: String,
    /// Where the copy is.
    pub copy: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    pub path: String,
    /// Unified diff, plus a line per mode or owner change; secrets masked.
    pub diff: String,
}

#[derive(Debug, Clone, Default)]
pub struct HostReport {
    pub name: String,
    pub address: String,
    pub status: Status,
    pub steps: Vec<StepOutcome>,
    /// What changes (or would) in each file; not the contents, which a
    /// report kept for every host to the end of the run has no use for.
    pub files: Vec<FileDiff>,
    /// Handlers that ran (apply) or would run (check).
    pub handlers: Vec<HandlerOutcome>,
    /// Handlers an earlier run left pending on the host.
    pub carried_over: Vec<String>,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    pub round_trips: u32,
    pub elapsed: Duration,
    /// Drift found (drift mode).
    pub drift: Vec<DriftItem>,
    /// What remediation put back (drift mode).
    pub remediated: Vec<String>,
    /// Paths renamed into place by this run (and kept: a file the install
    /// put back is not among them). What "changed" counts, with `rolled_back`
    /// and `commands_ran`.
    pub written: Vec<String>,
    /// Command steps (by index) whose command ran.
    pub commands_ran: Vec<usize>,
    /// Backups of changed files, kept in the state folder.
    pub backups: Vec<Backup>,
    /// Paths put back by `--rollback-on-failure`.
    pub rolled_back: Vec<String>,
    /// Round trips and their timings, for `-v`.
    pub log: Vec<String>,
}

impl HostReport {
    /// `in_sync`, `drifted`, `pending`, `failed`, `unreachable` or `interrupted`.
    pub fn drift_status(&self) -> &'static str {
        match self.status {
            Status::Unreachable => "unreachable",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
            _ if self.drift.iter().any(|i| i.state == ItemState::HostDrift) => "drifted",
            _ if !self.drift.is_empty() => "pending",
            _ => "in_sync",
        }
    }
}

/// Everything loaded and checked before any host is contacted.
pub struct Prepared {
    playbook: Playbook,
    renderer: Renderer,
    jobs: Vec<Job>,
    /// sha256 of the playbook and its templates.
    pub digest: String,
    /// Said before the run starts: plays whose hosts the inventory lacks.
    pub warnings: Vec<String>,
}

impl Prepared {
    /// The secrets of every host, rendered with stand-in facts.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::default();
        self.jobs.iter().for_each(|job| secrets.extend(&job.before_facts.secrets));
        secrets
    }
}

struct Job {
    host: Host,
    plays: Vec<usize>,
    /// Run the scripts under `sudo -n` (the host's `ansible_become` or a play's `become`).
    become_root: bool,
    /// Where the host keeps this playbook's pending handlers and applied record.
    state: StateFiles,
    /// The managed paths and `unless` guards, known before facts (they may
    /// use variables, not facts): filled by `prepare` as it checks the host.
    before_facts: BeforeFacts,
}

#[derive(Default)]
struct BeforeFacts {
    paths: Vec<String>,
    patterns: Vec<String>,
    guards: Vec<(usize, String)>,
    /// What the host's reports mask from the start (facts may add to it).
    secrets: Secrets,
}

impl BeforeFacts {
    fn of(tasks: &HostTasks) -> BeforeFacts {
        BeforeFacts {
            paths: tasks.paths().into_iter().map(str::to_owned).collect(),
            patterns: tasks.patterns().into_iter().map(str::to_owned).collect(),
            guards: tasks.guards().into_iter().map(|(i, c)| (i, c.to_owned())).collect(),
            secrets: tasks.secrets.clone(),
        }
    }
}

/// Loads inventory, playbook and templates, selects hosts, and renders every
/// host's steps with stand-in facts, so that bad input of any kind is found
/// here, with exit code 1 and no host touched.
pub fn prepare(settings: &Settings) -> Result<Prepared, String> {
    let mut prepared = load(settings)?;
    let placeholder = Facts::placeholder(remote::TOOLS);
    let mut errors = Vec::new();
    let mut checked = Vec::new();
    for job in &prepared.jobs {
        match render_tasks(&prepared.playbook, &prepared.renderer, job, &placeholder, settings) {
            Ok(tasks) => checked.push(BeforeFacts::of(&tasks)),
            // The variables could not all be rendered: their values as written are masked.
            Err(e) => errors.push(format!("host {}: {}", job.host.name, raw_secrets(&prepared.playbook, job).mask(&e))),
        }
    }
    if !errors.is_empty() {
        errors.dedup_by(|a, b| a.split_once(": ").map(|x| x.1) == b.split_once(": ").map(|x| x.1));
        return Err(errors.join("\n"));
    }
    for (job, before_facts) in prepared.jobs.iter_mut().zip(checked) {
        job.before_facts = before_facts;
    }
    Ok(prepared)
}

/// The secrets of a host's variables as written, before templating.
fn raw_secrets(playbook: &Playbook, job: &Job) -> Secrets {
    let mut secrets = Secrets::default();
    for &p in &job.plays {
        let mut vars = playbook.plays[p].vars.clone();
        vars.extend(job.host.vars.clone());
        secrets.extend(&Secrets::of(&vars));
    }
    secrets
}

/// Loads inventory, playbook and templates and selects the hosts, without
/// rendering every host's steps (for `render`, which does that itself).
pub fn load(settings: &Settings) -> Result<Prepared, String> {
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
    let mut warnings = Vec::new();
    for (p, play) in playbook.plays.iter().enumerate() {
        let play_name = play.name.as_deref().unwrap_or("?");
        // As in Ansible, a play whose hosts the inventory does not have is
        // skipped with a word (a worker box is not touched for Redis); a
        // pattern that cannot be read is bad input.
        let selected = match inventory.select(&play.hosts) {
            Ok(selected) => selected,
            Err(e) if e.0.contains("matches no host or group") => {
                warnings.push(format!("play `{play_name}`: hosts `{}`: {e}; the play is skipped", play.hosts));
                Vec::new()
            }
            Err(e) => return Err(format!("{}: play `{play_name}`: hosts: {e}", playbook.path.display())),
        };
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
                    state: state_files(host, &playbook)?,
                    before_facts: BeforeFacts::default(),
                }),
            }
        }
    }
    let order: Vec<&str> = inventory.hosts.iter().map(|h| h.name.as_str()).collect();
    jobs.sort_by_key(|j| order.iter().position(|n| *n == j.host.name));
    if jobs.is_empty() {
        let mut message = String::from("no host matches the playbook's plays and --limit");
        for warning in &warnings {
            message.push_str(&format!("\n  {warning}"));
        }
        return Err(message);
    }
    let digest = digest_of(&playbook)?;
    Ok(Prepared { playbook, renderer, jobs, digest, warnings })
}

fn digest_of(playbook: &Playbook) -> Result<String, String> {
    let mut hasher = Sha256::new();
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    hasher.update(read(&playbook.path)?);
    for source in playbook.template_sources() {
        hasher.update(source.as_bytes());
        hasher.update(read(&playbook.templates_dir.join(source))?);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A host's steps rendered for it, with its handlers in playbook order.
struct HostTasks {
    tasks: Vec<Task>,
    handlers: Vec<(String, String)>,
    /// Name, command and remedy of each live-state probe.
    probes: Vec<(String, String, Option<String>)>,
    /// The values of its secret variables, playbook `vars` included, rendered.
    secrets: Secrets,
}

impl HostTasks {
    fn paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.tasks.iter().flat_map(|t| t.action.paths()).collect();
        paths.sort();
        paths.dedup();
        paths
    }

    fn patterns(&self) -> Vec<&str> {
        let mut patterns: Vec<&str> = self.tasks.iter().flat_map(|t| t.action.patterns()).collect();
        patterns.sort();
        patterns.dedup();
        patterns
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
    let mut probes = Vec::new();
    let mut secrets = Secrets::default();
    let mut index = 0;
    for &p in &job.plays {
        let play = &playbook.plays[p];
        let mut vars = play.vars.clone();
        vars.extend(job.host.vars.clone());
        vars.insert("facts".into(), serde_json::to_value(facts).expect("facts serialize"));
        let vars = renderer.resolve_vars(&vars).map_err(|e| format!("{file}: {e}"))?;
        secrets.extend(&Secrets::of(&vars));
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
            let attributes = |mode: Option<u32>, owner: &Option<String>, group: &Option<String>| {
                Ok::<_, String>(Attributes {
                    mode,
                    owner: owner.as_deref().map(|o| text("owner", o)).transpose()?,
                    group: group.as_deref().map(|g| text("group", g)).transpose()?,
                })
            };
            let action = match step.kind() {
                StepKind::Template(t) => Action::Template {
                    dest: path("dest", &t.dest)?,
                    content: renderer.render_file(&playbook.templates_dir, &t.src, &vars)?.into_bytes().into(),
                    attributes: attributes(t.mode, &t.owner, &t.group)?,
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
                StepKind::Vhost(v) => Action::Site {
                    search: text("search", &v.search)?
                        .split_whitespace()
                        .map(|pattern| checked_pattern(&origin("search"), pattern))
                        .collect::<Result<_, _>>()?,
                    upstream: text("upstream", &v.upstream)?,
                    dest: path("dest", &v.dest)?,
                    enable: path("enable", &v.enable)?,
                    content: renderer.render_file(&playbook.templates_dir, &v.src, &vars)?.into_bytes().into(),
                    attributes: attributes(v.mode, &v.owner, &v.group)?,
                },
                StepKind::Command(c) => Action::Command {
                    cmd: text("cmd", &c.cmd)?,
                    creates: c.creates.as_deref().map(|v| path("creates", v)).transpose()?,
                    unless: c.unless.as_deref().map(|v| text("unless", v)).transpose()?,
                },
            };
            let (validate, backup) = step.safeguards();
            tasks.push(Task {
                index,
                name: step.name.clone(),
                action,
                notify: step.notify.clone(),
                validate: validate.map(|v| text("validate", v)).transpose()?,
                backup: backup || settings.backup,
            });
        }
        for handler in &play.handlers {
            let origin = format!("{file}: handler `{}`: command", handler.name);
            handlers.push((handler.name.clone(), renderer.render_str(&origin, &handler.command, &vars)?));
        }
        for probe in &play.verify {
            let origin = format!("{file}: probe `{}`: command", probe.name);
            let command = renderer.render_str(&origin, &probe.command, &vars)?;
            probes.push((probe.name.clone(), command, probe.remedy.clone()));
        }
    }
    Ok(HostTasks { tasks, handlers, probes, secrets })
}

/// `<state dir>/<playbook name>.pending` and `.applied`: kept per playbook, so
/// two playbooks on one host do not settle each other's debts.
fn state_files(host: &Host, playbook: &Playbook) -> Result<StateFiles, String> {
    let dir = match host.vars.get("sentry_provision_state_dir") {
        None => remote::STATE_DIR.to_owned(),
        Some(serde_json::Value::String(dir)) => {
            checked_path(&format!("host {}: sentry_provision_state_dir", host.name), dir.trim_end_matches('/'))?
        }
        Some(other) => {
            return Err(format!("host {}: sentry_provision_state_dir must be a path, not {other}", host.name));
        }
    };
    let name = playbook.path.file_stem().and_then(|s| s.to_str()).unwrap_or("playbook");
    Ok(StateFiles::new(&dir, name))
}

/// A search pattern: an absolute path whose last part may hold `*` and `?`
/// (so that the folder it searches is known, for the run's cleanup there).
fn checked_pattern(origin: &str, pattern: &str) -> Result<String, String> {
    let pattern = checked_path(origin, pattern)?;
    if remote::folder_of(&pattern).contains(['*', '?']) || pattern.contains(['[', ']']) {
        return Err(format!("{origin}: `{pattern}`: only the last part of a pattern may hold `*` or `?`"));
    }
    Ok(pattern)
}

fn checked_path(origin: &str, path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{origin}: `{path}` is not an absolute path"));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!("{origin}: `{path}` contains `..`"));
    }
    if path.contains('\0') {
        return Err(format!("{origin}: `{path}` contains a NUL byte"));
    }
    Ok(path.to_owned())
}

pub fn ssh_options(settings: &Settings, control_directory: &std::path::Path) -> SshOptions {
    SshOptions {
        config_file: settings.ssh_config.clone(),
        host_keys: settings.host_keys,
        control_directory: control_directory.to_path_buf(),
        connect_timeout: settings.connect_timeout,
    }
}

/// A host's name and its rendered templates: destination path and content.
pub type RenderedHost = (String, Vec<(String, bytes::Bytes)>);

/// Every host's template outputs, rendered with stand-in facts, no SSH.
pub fn render_offline(prepared: &Prepared, settings: &Settings) -> Result<Vec<RenderedHost>, String> {
    let placeholder = Facts::placeholder(remote::TOOLS);
    prepared
        .jobs
        .iter()
        .map(|job| {
            let tasks = render_tasks(&prepared.playbook, &prepared.renderer, job, &placeholder, settings)
                .map_err(|e| format!("host {}: {e}", job.host.name))?;
            let files = tasks
                .tasks
                .into_iter()
                .filter_map(|t| match t.action {
                    // Sentry's own site: what a host with no vhost serving Sentry gets.
                    Action::Template { dest, content, .. } | Action::Site { dest, content, .. } => {
                        Some((dest, content))
                    }
                    _ => None,
                })
                .collect();
            Ok((job.host.name.clone(), files))
        })
        .collect()
}

/// Checks a playbook and its templates without any host: everything is
/// compiled and rendered with the playbook's defaults, stand-in facts and
/// (given an inventory) each host's variables.
pub fn check_playbook(
    playbook_path: &std::path::Path,
    inventory: Option<&std::path::Path>,
    extra: &[String],
) -> Result<String, String> {
    let extra_vars = crate::cli::parse_extra_vars(extra)?;
    let playbook = playbook::load(playbook_path).map_err(|e| e.to_string())?;
    let renderer = Renderer::new(&playbook.templates_dir, &playbook.template_sources())?;
    let hosts: Vec<Host> = match inventory {
        Some(path) => inventory::load(path, &extra_vars).map_err(|e| e.to_string())?.hosts,
        None => {
            let mut vars = extra_vars.clone();
            vars.insert("inventory_hostname".into(), "check-playbook".into());
            vars.insert("group_names".into(), serde_json::json!([]));
            vec![Host { name: "check-playbook".into(), vars, connection: Connection::Local, become_root: false }]
        }
    };
    let settings = Settings::offline(playbook_path);
    let placeholder = Facts::placeholder(remote::TOOLS);
    let mut steps = 0;
    for host in &hosts {
        let job = Job {
            host: host.clone(),
            plays: (0..playbook.plays.len()).collect(),
            become_root: false,
            state: StateFiles::new(remote::STATE_DIR, "check"),
            before_facts: BeforeFacts::default(),
        };
        steps = render_tasks(&playbook, &renderer, &job, &placeholder, &settings)
            .map_err(|e| if inventory.is_some() { format!("host {}: {e}", host.name) } else { e })?
            .tasks
            .len();
    }
    Ok(format!(
        "{}: ok ({} play(s), {steps} step(s), {} template(s), checked for {} host(s))",
        playbook_path.display(),
        playbook.plays.len(),
        playbook.template_sources().len(),
        hosts.len()
    ))
}

impl Settings {
    /// Settings for work that contacts no host.
    pub fn offline(playbook: &std::path::Path) -> Settings {
        Settings {
            inventory: PathBuf::new(),
            playbook: playbook.to_path_buf(),
            limit: None,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            extra_vars: Vars::new(),
            forks: 1,
            mode: Mode::Check,
            backup: false,
            lock_timeout: Duration::ZERO,
            verbosity: 0,
            serial: None,
            quiet: true,
            diff_context: 3,
            ssh_config: None,
            host_keys: HostKeys::Strict,
            connect_timeout: Duration::from_secs(10),
            command_timeout: None,
        }
    }
}

/// Runs every prepared host, `forks` at a time, and returns their reports in inventory order.
/// `splay` delays each host's start by a random part of it, so scheduled
/// passes do not hit every host at the same instant.
pub async fn execute(prepared: Prepared, settings: &Settings, splay: Duration) -> Result<Vec<HostReport>, String> {
    let control =
        transport::control_directory().map_err(|e| format!("cannot create a control socket folder in /tmp: {e}"))?;
    let ssh = ssh_options(settings, control.path());
    let progress = Arc::new(Progress::new(prepared.jobs.len(), settings.quiet));
    let total = prepared.jobs.len();
    let serial = settings.serial.or_else(|| prepared.playbook.plays.iter().filter_map(|p| p.serial).next());
    let batch = serial.map_or(total, |s| s.of(total));
    let max_fail = prepared.playbook.plays.iter().find_map(|p| p.max_fail_percentage);
    let shared = Arc::new((prepared, ssh, settings.clone(), progress.clone()));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(settings.forks.max(1)));
    let mut reports: Vec<(usize, HostReport)> = Vec::new();
    let batches: Vec<Vec<usize>> = (0..total).collect::<Vec<_>>().chunks(batch.max(1)).map(<[usize]>::to_vec).collect();
    for (number, members) in batches.iter().enumerate() {
        if batches.len() > 1 {
            let names: Vec<&str> = members.iter().map(|i| shared.0.jobs[*i].host.name.as_str()).collect();
            progress.note(&format!("batch {}/{}: {}", number + 1, batches.len(), names.join(", ")));
        }
        let done = run_batch(&shared, &semaphore, members, splay).await;
        let failed = done.iter().filter(|(_, r)| matches!(r.status, Status::Failed | Status::Unreachable)).count();
        reports.extend(done);
        let stop = batch_stops(number + 1, failed, members.len(), max_fail);
        let stop = if interrupt::requested() {
            Some((Status::Interrupted, "interrupted".to_owned()))
        } else {
            stop.map(|why| (Status::Failed, why))
        };
        if let (Some((status, why)), true) = (stop, number + 1 < batches.len()) {
            for rest in batches[number + 1..].iter().flatten() {
                let mut skipped = blank_report(&shared.0.jobs[*rest].host);
                skipped.status = status;
                skipped.error = Some(format!("not run: {why}"));
                reports.push((*rest, skipped));
            }
            break;
        }
    }
    progress.finish();
    reports.sort_by_key(|(i, _)| *i);
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

/// Why a rolling run stops after a batch, as Ansible stops: when the
/// batch's failed share is over `max_fail_percentage`, or, with or without
/// it, when every host of the batch failed.
fn batch_stops(batch: usize, failed: usize, size: usize, max_fail: Option<f64>) -> Option<String> {
    let share = failed as f64 * 100.0 / size.max(1) as f64;
    match max_fail {
        Some(limit) if share > limit => {
            Some(format!("{failed} of {size} host(s) in batch {batch} failed, over max_fail_percentage {limit}"))
        }
        _ if failed > 0 && failed == size => Some(format!("every host of batch {batch} failed ({failed} of {size})")),
        _ => None,
    }
}

type Shared = Arc<(Prepared, SshOptions, Settings, Arc<Progress>)>;

/// One batch of hosts, concurrently, `forks` at a time. A host's task
/// that dies (a panic outside its phases) fails that host alone.
async fn run_batch(
    shared: &Shared,
    semaphore: &Arc<tokio::sync::Semaphore>,
    members: &[usize],
    splay: Duration,
) -> Vec<(usize, HostReport)> {
    let mut running = tokio::task::JoinSet::new();
    let mut hosts_of_tasks = std::collections::HashMap::new();
    for &i in members {
        let shared = shared.clone();
        let semaphore = semaphore.clone();
        // The fork is taken here, host by host, so that hosts start in
        // inventory order (tasks racing for it would start in any order).
        // With a splay each host waits its own random delay first, and its
        // start is random anyway.
        let permit = if splay.is_zero() {
            Some(semaphore.clone().acquire_owned().await.expect("semaphore is never closed"))
        } else {
            None
        };
        let task = running.spawn(async move {
            let _permit = match permit {
                Some(permit) => permit,
                None => {
                    tokio::time::sleep(splay.mul_f64(random_fraction())).await;
                    semaphore.acquire_owned().await.expect("semaphore is never closed")
                }
            };
            let (prepared, ssh, settings, progress) = &*shared;
            if interrupt::requested() {
                progress.host_done();
                return (i, not_run_interrupted(&prepared.jobs[i].host));
            }
            let line = progress.host(&prepared.jobs[i].host.name);
            let report = run_host(prepared, &prepared.jobs[i], ssh, settings, &line).await;
            line.finish(match report.status {
                Status::Ok => "ok",
                Status::Changed => "changed",
                Status::Failed => "failed",
                Status::Unreachable => "unreachable",
                Status::Interrupted => "interrupted",
            });
            progress.host_done();
            (i, report)
        });
        hosts_of_tasks.insert(task.id(), i);
    }
    let mut reports: Vec<(usize, HostReport)> = Vec::new();
    while let Some(done) = running.join_next_with_id().await {
        match done {
            Ok((_, done)) => reports.push(done),
            Err(e) => {
                let Some(&i) = hosts_of_tasks.get(&e.id()) else { continue };
                let (prepared, _, _, progress) = &**shared;
                let host = &prepared.jobs[i].host;
                let why = if e.is_panic() { crate::unwind::message(&e.into_panic()) } else { e.to_string() };
                interrupt::left(&host.name);
                progress.host_done();
                let error = Some(format!("internal error: {why} (this host only; the others went on)"));
                reports.push((i, HostReport { status: Status::Failed, error, ..blank_report(host) }));
            }
        }
    }
    reports
}

/// A number in [0, 1).
fn random_fraction() -> f64 {
    (remote::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

pub fn target_of(host: &Host) -> (Target, String) {
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

fn blank_report(host: &Host) -> HostReport {
    HostReport { name: host.name.clone(), address: target_of(host).1, ..HostReport::default() }
}

/// A host a signal kept from starting.
fn not_run_interrupted(host: &Host) -> HostReport {
    HostReport { status: Status::Interrupted, error: Some("not run: interrupted".into()), ..blank_report(host) }
}

async fn run_host(
    prepared: &Prepared,
    job: &Job,
    ssh: &SshOptions,
    settings: &Settings,
    line: &HostProgress,
) -> HostReport {
    let started = Instant::now();
    let (target, _) = target_of(&job.host);
    let mut report = blank_report(&job.host);
    let mut secrets = job.before_facts.secrets.clone();
    line.phase("connect");
    interrupt::entering(&job.host.name, "connect");
    match Transport::connect(&target, ssh).await {
        // The terminal's Ctrl-C reaches the ssh still connecting, too.
        Err(_) if interrupt::requested() => report = not_run_interrupted(&job.host),
        Err(e) => {
            report.status = Status::Unreachable;
            report.error = Some(format!("connect: {e}"));
        }
        Ok(transport) if interrupt::requested() => {
            report = not_run_interrupted(&job.host);
            transport.close().await;
        }
        Ok(transport) => {
            let mut host = HostRun {
                prepared,
                job,
                transport: &transport,
                settings,
                report: &mut report,
                lock: None,
                line,
                install_token: format!("{:016x}", remote::random_u64()),
                handlers_sent: Vec::new(),
                secrets: job.before_facts.secrets.clone(),
            };
            // A panic in a phase (a reply no parser foresaw) fails this host
            // with what it did so far, its lock released; the others go on.
            let result = crate::unwind::caught(host.run()).await.unwrap_or_else(|panic| {
                Err(failed(format!("internal error: {panic} (this host only; the others went on)")))
            });
            if let Some(lock) = host.lock.take() {
                lock.release(settings.command_timeout).await;
            }
            secrets = std::mem::take(&mut host.secrets);
            if let Err((status, message)) = result {
                report.status = status;
                report.error = Some(message);
            }
            transport.close().await;
        }
    }
    interrupt::left(&job.host.name);
    report.elapsed = started.elapsed();
    mask_report(&mut report, &secrets);
    report
}

/// The one place a host's report is masked, once the host is done and
/// before anything shows it: human and JSON output, Prometheus, `-v` logs
/// and the drift history are all made from it. Diffs of files others may
/// not read lost their secret-looking lines where they were made (the
/// report no longer knows the files' modes).
fn mask_report(report: &mut HostReport, secrets: &Secrets) {
    let mask = |text: &mut String| *text = secrets.mask(text);
    report.steps.iter_mut().for_each(|step| mask(&mut step.subject));
    for file in &mut report.files {
        file.diff = secrets.mask_diff(&file.diff, false);
    }
    for item in &mut report.drift {
        mask(&mut item.subject);
        mask(&mut item.expected);
        mask(&mut item.actual);
        item.diff = secrets.mask_diff(&item.diff, false);
    }
    let lists = [&mut report.warnings, &mut report.remediated, &mut report.log, &mut report.rolled_back];
    lists.into_iter().flatten().for_each(mask);
    report.error.iter_mut().for_each(mask);
}

type Failure = (Status, String);

fn failed(message: String) -> Failure {
    (Status::Failed, message)
}

fn transport_failure(phase: &str, e: transport::Error) -> Failure {
    match e {
        transport::Error::Unreachable(m) => (Status::Unreachable, format!("{phase}: {m}")),
        transport::Error::Failed(m) => (Status::Failed, format!("{phase}: {m}")),
    }
}

/// What the snapshot round trip found, and the plan made from it.
struct Inspection {
    tasks: HostTasks,
    snapshot: Snapshot,
    applied: Option<Applied>,
    plan: Plan,
    /// Another run held the host's lock (asked only by runs that do not take it).
    lock_held: bool,
    /// Keyed with the host's secret, for the record of what was applied.
    fingerprints: plan::drift::Fingerprints,
}

/// One host's run over an open connection: the phases, each a round trip.
struct HostRun<'a> {
    prepared: &'a Prepared,
    job: &'a Job,
    transport: &'a Transport,
    settings: &'a Settings,
    report: &'a mut HostReport,
    /// The host's lock, held from the snapshot to the end of the run when writing.
    lock: Option<transport::Held<'a>>,
    line: &'a HostProgress,
    /// The token of this run's install, which names the entries it kept
    /// for a rollback ([`remote::kept_path`]).
    install_token: String,
    /// The handlers sent in the last handlers round trip: when its reply
    /// is lost, any of them may have run.
    handlers_sent: Vec<String>,
    /// What its report masks: the host's secrets, rendered with its facts once known.
    secrets: Secrets,
}

impl HostRun<'_> {
    async fn run(&mut self) -> Result<(), Failure> {
        let inspection = self.inspect().await?;
        // Test hook: this host's work panics here, after the host was
        // touched (its snapshot taken, its lock held).
        test_hooks::panic_if_in(&self.job.host.name);
        // A check is done once it has the snapshot; anything else would go on.
        if self.settings.mode != Mode::Check {
            self.stop_if_interrupted("after the snapshot; nothing was changed")?;
        }
        self.report.steps = inspection.plan.steps.clone();
        self.report.files = inspection
            .plan
            .files
            .iter()
            .map(|file| FileDiff {
                path: file.path.clone(),
                diff: self.secrets.mask_diff(&file.diff, is_sensitive(file)),
            })
            .collect();
        self.report.carried_over = inspection.plan.carried_over.clone();
        match self.settings.mode {
            Mode::Check => {
                if !inspection.plan.is_empty() {
                    self.report.status = Status::Changed;
                }
                self.report.handlers = inspection
                    .plan
                    .handlers
                    .iter()
                    .map(|h| HandlerOutcome { name: h.clone(), ok: true, rollback: false })
                    .collect();
                Ok(())
            }
            Mode::Apply => {
                if !inspection.plan.is_empty() {
                    self.report.status = Status::Changed;
                }
                let result = self.install_and_reload(&inspection, &inspection.plan).await;
                // What was done, not what was planned: after a failed install
                // or a rollback, less than the plan.
                let report = &mut *self.report;
                report.steps =
                    plan::carried_out(&report.steps, &report.written, &report.rolled_back, &report.commands_ran);
                result
            }
            Mode::Drift(remediate) => self.drift(&inspection, remediate).await,
        }
    }

    /// Stops here, `when` (said in the report), if a signal asked the run to stop.
    fn stop_if_interrupted(&self, when: &str) -> Result<(), Failure> {
        match interrupt::requested() {
            true => Err((Status::Interrupted, format!("interrupted {when}"))),
            false => Ok(()),
        }
    }

    async fn round_trip(&mut self, phase: &str, script: &transport::Script) -> Result<transport::Output, Failure> {
        self.report.round_trips += 1;
        self.line.phase(phase);
        interrupt::entering(&self.job.host.name, phase);
        let started = Instant::now();
        let result = self
            .transport
            .run(script, self.job.become_root, self.settings.command_timeout)
            .await
            .map_err(|e| transport_failure(phase, e));
        if self.settings.verbosity > 0 {
            let status = result.as_ref().map_or_else(|(_, e)| e.clone(), |o| format!("exit {}", o.status));
            let mut line = format!(
                "{phase}: {:.3}s, {}-byte script, {status}",
                started.elapsed().as_secs_f64(),
                script.sent_bytes()
            );
            if let (Ok(output), true) = (&result, self.settings.verbosity > 1) {
                line.push_str(&format!("; stderr: {}", output.stderr_text()));
            }
            self.report.log.push(line);
        }
        match result {
            Ok(output) if output.status == remote::LOCK_LOST => Err(failed(format!(
                "{phase}: this run no longer holds the host's lock: the host heard nothing from it for {}s \
                 and let the lock go; nothing was done in this step (run again)",
                remote::HOLDER_PATIENCE_SECONDS
            ))),
            result => result,
        }
    }

    fn render(&self, facts: &Facts) -> Result<HostTasks, Failure> {
        render_tasks(&self.prepared.playbook, &self.prepared.renderer, self.job, facts, self.settings).map_err(failed)
    }

    /// Round trip 1: facts, managed paths, guards, pending handlers, the
    /// applied record; then the plan, made locally.
    async fn inspect(&mut self) -> Result<Inspection, Failure> {
        // Paths and guards are known before facts: they may use variables but not facts.
        // `prepare` rendered this host once with stand-in facts: reuse what it found.
        let BeforeFacts { paths, patterns, guards, .. } = &self.job.before_facts;
        let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let pattern_refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let guard_refs: Vec<(usize, &str)> = guards.iter().map(|(i, c)| (*i, c.as_str())).collect();

        let writes = match self.settings.mode {
            Mode::Apply | Mode::Drift(Remediate::HostDrift | Remediate::All) => true,
            Mode::Check | Mode::Drift(Remediate::Nothing) => false,
        };
        let remote::SnapshotScript { text, token } =
            remote::snapshot(&self.job.state, &path_refs, &pattern_refs, &guard_refs);
        self.line.phase("snapshot");
        interrupt::entering(&self.job.host.name, "snapshot");
        let mut lock_held = false;
        let output = if writes {
            // Runs that write hold the host's lock from before the snapshot to
            // their end, so two runs never interleave; one round trip still.
            self.report.round_trips += 1;
            // The folders install writes its temp files in (the same folder_of).
            let mut dirs: Vec<&str> = path_refs.iter().chain(&pattern_refs).map(|p| remote::folder_of(p)).collect();
            dirs.sort_unstable();
            dirs.dedup();
            let locked = remote::locked(&self.job.state, self.settings.lock_timeout.as_secs(), &dirs, &text);
            let (output, held) = self
                .transport
                .run_and_hold(
                    &locked.into(),
                    &remote::end_line(&token),
                    self.job.become_root,
                    // The wait for the lock is the round trip's, on top.
                    self.settings.command_timeout.map(|limit| limit + self.settings.lock_timeout),
                )
                .await
                .map_err(|e| transport_failure("snapshot", e))?;
            self.lock = Some(held);
            // Printed before anything else: file contents follow, raw.
            if let Some(why) = output.stdout.strip_prefix(b"STATEBAD ") {
                let why = String::from_utf8_lossy(why);
                return Err(failed(format!(
                    "the state folder is refused: {} (sentry_provision_state_dir)",
                    why.lines().next().unwrap_or_default()
                )));
            }
            if output.stdout.starts_with(b"LOCKBUSY\n") {
                return Err(failed(format!(
                    "another run holds the host's lock ({}/lock) and did not release it within {}s (--lock-timeout)",
                    self.job.state.dir(),
                    self.settings.lock_timeout.as_secs()
                )));
            }
            output
        } else {
            let probed = remote::lock_probe(&self.job.state) + &text;
            let output = self.round_trip("snapshot", &probed.into()).await?;
            lock_held = output.stdout.starts_with(b"LOCKHELD\n");
            output
        };
        test_hooks::crash_here("after-snapshot");
        let snap = remote::parse_snapshot(&output.stdout, &path_refs, &pattern_refs, &token).map_err(|e| {
            failed(format!("snapshot: {e} (exit status {}; stderr: {})", output.status, output.stderr_text()))
        })?;
        let facts =
            Facts::from_snapshot(&snap.facts, &snap.tools, remote::TOOLS).map_err(|e| failed(format!("facts: {e}")))?;
        let tasks = self.render(&facts)?;
        self.secrets.extend(&tasks.secrets);
        if tasks.paths() != path_refs || tasks.patterns() != pattern_refs || tasks.guards() != guard_refs {
            return Err(failed("managed paths and `unless` guards may use variables but not facts".into()));
        }
        let applied = match &snap.applied {
            None => None,
            Some(text) => match serde_json::from_str::<Applied>(text) {
                Ok(record) => Some(record),
                Err(e) => {
                    self.report
                        .warnings
                        .push(format!("{}: unreadable ({e}); treated as absent", self.job.state.applied));
                    None
                }
            },
        };
        let order = handler_order(&tasks);
        let plan = plan::plan(&tasks.tasks, &snap.snapshot, &order, self.settings.diff_context).map_err(failed)?;
        let applying = self.settings.mode == Mode::Apply;
        self.report.warnings.extend(plan::concurrency_warnings(&snap.snapshot, &plan.desired, applying));
        for stale in snap.snapshot.pending_handlers.iter().filter(|h| !order.contains(h)) {
            self.report.warnings.push(format!(
                "pending handler `{stale}` from an earlier run is not in this playbook, so it cannot run; \
                 the host's record keeps it until an apply records handlers again"
            ));
        }
        let fingerprints =
            snap.key.as_deref().map(|key| plan::drift::Fingerprints::keyed(key.as_bytes())).unwrap_or_default();
        Ok(Inspection { tasks, snapshot: snap.snapshot, applied, plan, lock_held, fingerprints })
    }

    /// Round trips 2 and 3: write what changed (recording the handlers owed
    /// first and what was applied last), then run the handlers and verify
    /// each took effect. The install is all or nothing on the host. A
    /// handler that fails, or does not take effect, after files moved
    /// takes the run back: every file of the run returns, with the record
    /// of what was applied, and the handlers that ran (and the one that
    /// failed) run again, so the services run what the restored files say
    /// (web and nginx switch protocol together, or not at all).
    async fn install_and_reload(&mut self, inspection: &Inspection, plan: &Plan) -> Result<(), Failure> {
        let result = self.install_then_reload(inspection, plan).await;
        let Err((status, message)) = result else { return Ok(()) };
        if status == Status::Interrupted && !self.report.written.is_empty() && self.report.handlers.is_empty() {
            return match self.roll_back(inspection, plan, &[]).await {
                Ok(()) => Err((
                    status,
                    format!(
                        "{message}: undone, {} file(s) back as they were before any service loaded them; no handler ran",
                        self.report.rolled_back.len()
                    ),
                )),
                Err((_, why)) => Err((status, format!("{message}; undoing the install failed: {why}"))),
            };
        }
        if status != Status::Failed || self.report.written.is_empty() {
            return Err((status, message));
        }
        // The handlers that may have loaded the new files: those that ran,
        // and the one that failed.
        let rerun: Vec<String> = if self.report.handlers.is_empty() {
            // No reply from the handlers round trip (a timeout, a reply cut
            // short): any of them may have run.
            self.handlers_sent.clone()
        } else {
            self.report.handlers.iter().map(|h| h.name.clone()).collect()
        };
        match self.roll_back(inspection, plan, &rerun).await {
            Ok(()) => Err((
                status,
                format!(
                    "{message}; rolled back {} file(s){}",
                    self.report.rolled_back.len(),
                    if rerun.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " and ran {} again on them",
                            rerun.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ")
                        )
                    }
                ),
            )),
            Err((_, why)) => Err((status, format!("{message}; the rollback failed too: {why}"))),
        }
    }

    /// Puts back every file this run wrote, each on its own (the entries
    /// the install kept are renamed back: no space needed, inode, owner and
    /// times as they were), with the records of what was applied and of
    /// the handlers owed, then runs `rerun` (handlers in playbook order) on
    /// them. The handlers read the restored files, so live state follows
    /// the files. A path that cannot go back is named, and the handlers
    /// still run on the others.
    async fn roll_back(&mut self, inspection: &Inspection, plan: &Plan, rerun: &[String]) -> Result<(), Failure> {
        let token = self.install_token.clone();
        let written: Vec<(usize, &plan::FileChange)> =
            plan.files.iter().enumerate().filter(|(_, f)| self.report.written.contains(&f.path)).collect();
        let kept: Vec<Option<String>> = written
            .iter()
            .map(|(i, f)| match f.before {
                plan::Entry::Missing => None,
                _ => Some(remote::kept_path(&f.path, &token, *i)),
            })
            .collect();
        let paths: Vec<remote::Restore> = written
            .iter()
            .zip(&kept)
            .map(|((_, f), kept)| remote::Restore { path: &f.path, kept: kept.as_deref() })
            .collect();
        let record =
            serde_json::to_string(&inspection.applied.clone().unwrap_or_default()).expect("the record serializes");
        // Owed after the rollback: what an earlier run left, and what runs
        // again now.
        let owed: Vec<String> = handler_order(&inspection.tasks)
            .into_iter()
            .filter(|h| inspection.plan.carried_over.contains(h) || rerun.contains(h))
            .collect();
        let mut folders: Vec<String> = written.iter().map(|(_, f)| remote::private_dir(&f.path, &token)).collect();
        folders.sort();
        folders.dedup();
        let restore = remote::restore(&self.job.state, &paths, &folders, &owed, &record);
        let output = self.round_trip("rollback", &restore.into()).await?;
        let result = remote::parse_restore(&output.stdout).map_err(|e| {
            failed(format!("rollback: {e} (exit status {}; stderr: {})", output.status, output.stderr_text()))
        })?;
        self.report.rolled_back =
            result.back.iter().filter_map(|&k| written.get(k)).map(|(_, f)| f.path.clone()).collect();
        self.report.written.retain(|path| !self.report.rolled_back.contains(path));
        let stuck: Vec<String> = (result.stuck.iter())
            .filter_map(|(k, why)| written.get(*k).map(|(_, f)| format!("{} ({why})", f.path)))
            .collect();
        let undo = Plan { handlers: rerun.to_vec(), ..Plan::default() };
        let forward = std::mem::take(&mut self.report.handlers);
        let result_handlers = self.run_handlers(inspection, &undo, false).await;
        let undone = std::mem::replace(&mut self.report.handlers, forward);
        self.report.handlers.extend(undone.into_iter().map(|h| HandlerOutcome { rollback: true, ..h }));
        if let Some(why) = result.failure {
            return Err(failed(format!("rollback: {why}")));
        }
        if !stuck.is_empty() {
            return Err(failed(format!("rollback: could NOT put back {}", stuck.join("; "))));
        }
        result_handlers
    }

    async fn install_then_reload(&mut self, inspection: &Inspection, plan: &Plan) -> Result<(), Failure> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let restored = plan.files.iter().map(|f| (&f.path, &f.after));
        let in_place = plan.desired.iter().filter(|(path, _)| !inspection.snapshot_differs(path, plan));
        let record = plan::drift::record(
            inspection.applied.as_ref(),
            restored.chain(in_place),
            &self.prepared.digest,
            now,
            &inspection.fingerprints,
        );
        let record_changed = inspection.applied.as_ref() != Some(&record);

        if !plan.files.is_empty() || !plan.commands.is_empty() || record_changed {
            let writes: Vec<remote::FileWrite> = plan
                .files
                .iter()
                .map(|f| remote::FileWrite {
                    path: &f.path,
                    desired: Some(&f.after),
                    validate: &f.validate,
                    backup: f.backup,
                })
                .collect();
            let commands: Vec<(usize, &str)> = plan.commands.iter().map(|c| (c.index, c.cmd.as_str())).collect();
            let record_json = serde_json::to_string(&record).expect("the record serializes");
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
            let install = remote::install(&remote::Install {
                state: &self.job.state,
                pending: &plan.handlers,
                writes: &writes,
                commands: &commands,
                applied: Some(&record_json),
                stamp: &stamp,
                token: &self.install_token,
                keep_olds: !plan.handlers.is_empty(),
                crash_at: test_hooks::crash_at(),
            });
            let output = self.round_trip("install", &install).await;
            // A crash point in the install script kills the controller too, once the round trip ends.
            test_hooks::crash_if(|at| !at.starts_with("after-") && !at.starts_with("handler:"));
            let output = output?;
            let result = remote::parse_install(&output.stdout).map_err(|e| {
                failed(format!("install: {e} (exit status {}; stderr: {})", output.status, output.stderr_text()))
            })?;
            self.report.written =
                result.written.iter().filter_map(|&i| plan.files.get(i)).map(|f| f.path.clone()).collect();
            self.report.commands_ran = result.commands_ran.clone();
            self.report.backups = (result.backups.into_iter())
                .filter_map(|(i, copy)| plan.files.get(i).map(|f| Backup { path: f.path.clone(), copy }))
                .collect();
            if let Some((what, message)) = result.failure {
                // The install took its backups back with it.
                self.report.backups.clear();
                let what = describe_failed_write(&what, plan, &inspection.tasks);
                let after = if result.stuck.is_empty() {
                    "every file of the run is back as it was, and no handler ran".to_owned()
                } else {
                    let stuck: Vec<&str> =
                        result.stuck.iter().filter_map(|&i| plan.files.get(i)).map(|f| f.path.as_str()).collect();
                    format!("no handler ran; these could NOT be put back: {}", stuck.join(", "))
                };
                return Err(failed(format!("install: {what}: {message} ({after})")));
            }
        }
        test_hooks::crash_here("after-install");
        // Interrupted here with handlers to come, the run is undone
        // (install_and_reload): its files go back before any service has
        // loaded them. With none to come, the run is whole as it is.
        if !plan.handlers.is_empty() {
            self.stop_if_interrupted("after the install")?;
        }
        self.run_handlers(inspection, plan, true).await
    }

    /// Runs the plan's handlers, each followed (`verify`) by the probes whose
    /// remedy it is, in one round trip: a handler counts as done only when
    /// those pass.
    async fn run_handlers(&mut self, inspection: &Inspection, plan: &Plan, verify: bool) -> Result<(), Failure> {
        if plan.handlers.is_empty() {
            return Ok(());
        }
        let to_run: Vec<(&str, &str)> = plan
            .handlers
            .iter()
            .filter_map(|name| {
                inspection.tasks.handlers.iter().find(|(n, _)| n == name).map(|(n, c)| (n.as_str(), c.as_str()))
            })
            .collect();
        let probes: Vec<remote::Verify> = if verify {
            inspection
                .tasks
                .probes
                .iter()
                .filter_map(|(name, command, remedy)| {
                    let after = to_run.iter().position(|(n, _)| Some(*n) == remedy.as_deref())?;
                    Some(remote::Verify { after, name, command })
                })
                .collect()
        } else {
            Vec::new()
        };
        // After the forward run's handlers all took effect, the entries its
        // install kept for a rollback go.
        let kept: Vec<String> = if verify {
            let mut folders: Vec<String> = (plan.files.iter())
                .filter(|f| self.report.written.contains(&f.path))
                .map(|f| remote::private_dir(&f.path, &self.install_token))
                .collect();
            folders.sort();
            folders.dedup();
            folders
        } else {
            Vec::new()
        };
        self.handlers_sent = to_run.iter().map(|(n, _)| n.to_string()).collect();
        let crash_at = test_hooks::crash_at();
        let output = self
            .round_trip("handlers", &remote::handlers(&self.job.state, &to_run, &probes, &kept, crash_at).into())
            .await;
        // A crash point in the handlers script kills the controller too, once the round trip ends.
        test_hooks::crash_if(|at| at.starts_with("handler:"));
        let output = output?;
        let result = remote::parse_handlers(&output.stdout, to_run.len(), probes.len()).map_err(|e| {
            failed(format!("handlers: {e} (exit status {}; stderr: {})", output.status, output.stderr_text()))
        })?;
        self.report.handlers = to_run[..result.succeeded]
            .iter()
            .map(|(n, _)| HandlerOutcome { name: n.to_string(), ok: true, rollback: false })
            .collect();
        if let Some((i, status, message)) = result.failure {
            let (name, cmd) = to_run[i];
            self.report.handlers.push(HandlerOutcome { name: name.to_owned(), ok: false, rollback: false });
            let what = if result.no_effect {
                format!("handler `{name}` exited 0 but did not take effect: {message} (exit {status})")
            } else {
                format!("handler `{name}`: `{}` exited {status}: {message}", remote::first_line(cmd))
            };
            return Err(failed(format!("{what} (left pending; it runs again next time)")));
        }
        test_hooks::crash_here("after-handlers");
        Ok(())
    }

    /// Round trip 2: the live probes; then drift is classified item by item,
    /// and put right if asked.
    async fn drift(&mut self, inspection: &Inspection, remediate: Remediate) -> Result<(), Failure> {
        let commands: Vec<&str> = inspection.tasks.probes.iter().map(|(_, c, _)| c.as_str()).collect();
        let results = if commands.is_empty() {
            Vec::new()
        } else {
            let output = self.round_trip("probes", &remote::probes(&commands).into()).await?;
            remote::parse_probes(&output.stdout, commands.len()).map_err(|e| {
                failed(format!("probes: {e} (exit status {}; stderr: {})", output.status, output.stderr_text()))
            })?
        };
        let diffs: std::collections::BTreeMap<&str, &str> =
            inspection.plan.files.iter().map(|f| (f.path.as_str(), f.diff.as_str())).collect();
        let mut items: Vec<DriftItem> = plan::drift::classify(
            &inspection.plan.desired,
            &inspection.snapshot.entries,
            inspection.applied.as_ref(),
            &inspection.fingerprints,
        )
        .into_iter()
        .map(|f| DriftItem {
            kind: ItemKind::File,
            diff: diffs.get(f.path.as_str()).copied().unwrap_or_default().to_owned(),
            subject: f.path,
            state: f.state,
            expected: f.expected,
            actual: f.actual,
        })
        .collect();
        // Live state that a pending file change would also change (its remedy is
        // a handler those files notify) is pending too, not drift of the host.
        let pending_paths: BTreeSet<String> =
            items.iter().filter(|i| i.state != ItemState::HostDrift).map(|i| i.subject.clone()).collect();
        let pending_handlers: BTreeSet<&str> = inspection
            .plan
            .tasks_managing(&inspection.tasks.tasks, &pending_paths)
            .flat_map(|t| t.notify.iter().map(String::as_str))
            .collect();
        let mut remedies = Vec::new();
        for ((name, _, remedy), (status, output)) in inspection.tasks.probes.iter().zip(&results) {
            if *status != 0 {
                let follows_pending = remedy.as_deref().is_some_and(|r| pending_handlers.contains(r));
                items.push(DriftItem {
                    kind: ItemKind::Live,
                    subject: name.clone(),
                    state: if follows_pending { ItemState::Pending } else { ItemState::HostDrift },
                    expected: "probe passes".into(),
                    actual: if output.is_empty() { format!("exit status {status}") } else { output.clone() },
                    diff: String::new(),
                });
                remedies.extend(remedy.clone());
            }
        }
        for handler in &inspection.plan.carried_over {
            items.push(DriftItem {
                kind: ItemKind::Handler,
                subject: handler.clone(),
                state: ItemState::Pending,
                expected: "run".into(),
                actual: if inspection.lock_held { OWED_BY_RUNNING_APPLY } else { "left pending by an earlier run" }
                    .into(),
                diff: String::new(),
            });
        }
        let sensitive: BTreeSet<&str> =
            inspection.plan.files.iter().filter(|f| is_sensitive(f)).map(|f| f.path.as_str()).collect();
        for item in &mut items {
            item.diff = self.secrets.mask_diff(&item.diff, sensitive.contains(item.subject.as_str()));
        }
        self.report.drift = items;
        let drifted = self.report.drift.iter().any(|i| i.state == ItemState::HostDrift);
        let order = handler_order(&inspection.tasks);
        let plan = match remediate {
            Remediate::Nothing => return Ok(()),
            Remediate::HostDrift if !drifted => return Ok(()),
            Remediate::HostDrift => {
                let paths: BTreeSet<String> = self
                    .report
                    .drift
                    .iter()
                    .filter(|i| i.kind == ItemKind::File && i.state == ItemState::HostDrift)
                    .map(|i| i.subject.clone())
                    .collect();
                inspection.plan.restricted_to(&inspection.tasks.tasks, &paths, &remedies, &order)
            }
            Remediate::All if self.report.drift.is_empty() => return Ok(()),
            Remediate::All => inspection.plan.with_handlers(&remedies, &order),
        };
        self.stop_if_interrupted("after the probes; nothing was put back")?;
        self.install_and_reload(inspection, &plan).await?;
        self.report.remediated = plan
            .files
            .iter()
            .map(|f| f.path.clone())
            .chain(plan.commands.iter().map(|c| format!("command `{}`", c.cmd)))
            .chain(self.report.handlers.iter().map(|h| format!("handler `{}`", h.name)))
            .collect();
        Ok(())
    }
}

impl Inspection {
    /// Whether `path` is not yet as `plan` wants it on the host.
    fn snapshot_differs(&self, path: &str, plan: &Plan) -> bool {
        let Some(want) = plan.desired.get(path) else { return true };
        let entry = self.snapshot.entries.get(path).cloned().unwrap_or(plan::Entry::Missing);
        let fingerprints = &self.fingerprints;
        fingerprints.of_entry(&entry) != Some(fingerprints.of_desired(want))
    }
}

/// A file others may not read: its diff hides the values of lines that look secret.
fn is_sensitive(file: &plan::FileChange) -> bool {
    let before = match &file.before {
        plan::Entry::File { mode, .. } => *mode & 0o004 == 0,
        _ => false,
    };
    let after = matches!(file.after, plan::Desired::File { mode, .. } if mode & 0o004 == 0);
    before || after
}

fn handler_order(tasks: &HostTasks) -> Vec<String> {
    tasks.handlers.iter().map(|(n, _)| n.clone()).collect()
}

fn describe_failed_write(what: &remote::FailedAt, planned: &Plan, tasks: &HostTasks) -> String {
    match *what {
        remote::FailedAt::File(i) => {
            planned.files.get(i).map_or_else(|| what.to_string(), |f| format!("writing {}", f.path))
        }
        remote::FailedAt::Check(i) => {
            // Every file that names the check: the fault may be in any of them.
            let Some(first) = planned.files.get(i) else { return what.to_string() };
            let paths: Vec<&str> =
                planned.files.iter().filter(|f| f.validate == first.validate).map(|f| f.path.as_str()).collect();
            format!("checking {}", paths.join(", "))
        }
        remote::FailedAt::Command(i) => tasks.tasks.iter().find(|t| t.index == i).map_or_else(
            || what.to_string(),
            |t| match &t.action {
                Action::Command { cmd, .. } => format!("step `{}`: command `{cmd}`", t.name),
                _ => t.name.clone(),
            },
        ),
        remote::FailedAt::Record => "recording the run's state".into(),
        remote::FailedAt::Other(_) => what.to_string(),
    }
}

/// Changes were found (check) or made (apply) on any host.
pub fn any_changes(reports: &[HostReport]) -> bool {
    reports.iter().any(|r| r.status == Status::Changed || (r.status == Status::Failed && !r.files.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolling_run_stops_when_every_host_of_a_batch_failed() {
        assert_eq!(batch_stops(1, 2, 2, None).as_deref(), Some("every host of batch 1 failed (2 of 2)"));
        assert_eq!(batch_stops(1, 1, 2, None), None, "without max_fail_percentage, one survivor is enough");
        assert_eq!(batch_stops(1, 0, 2, None), None);
    }

    #[test]
    fn a_rolling_run_stops_over_max_fail_percentage() {
        assert_eq!(
            batch_stops(1, 1, 1, Some(0.0)).as_deref(),
            Some("1 of 1 host(s) in batch 1 failed, over max_fail_percentage 0")
        );
        assert_eq!(batch_stops(2, 1, 2, Some(50.0)), None, "exactly the limit is not over it");
        assert!(
            batch_stops(3, 2, 2, Some(100.0)).unwrap().contains("every host of batch 3"),
            "all failed stops at 100"
        );
    }
}
