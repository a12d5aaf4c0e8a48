//! Loading, before any host is contacted: the inventory, the playbook and
//! its templates read and checked, the hosts selected, and every host's
//! steps rendered once with stand-in facts, so bad input stops the run here.

use super::known_facts::KnownFacts;
use super::settings::Settings;
use crate::facts::Facts;
use crate::inventory::{self, Connection, Host};
use crate::plan::Action;
use crate::plan::compile::{self, HostTasks, Selection, checked_path};
use crate::playbook::{self, Playbook};
use crate::remote::{self, StateFiles};
use crate::render::Renderer;
use crate::secrets::Secrets;
use sha2::{Digest, Sha256};

/// Everything loaded and checked before any host is contacted.
pub struct Prepared {
    pub(super) playbook: Playbook,
    renderer: Renderer,
    pub(super) jobs: Vec<Job>,
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

    /// Gives each host the facts it had at its last pass, where `known` has
    /// them: a drift pass renders its live-state probes with them and runs
    /// them in its snapshot's round trip, before it reads the facts, and
    /// keeps their results (and the steps rendered) only where this pass's
    /// facts are the same, so a host unlike the stand-in facts (more than
    /// 8 CPUs: more workers to count) would run them again in a second
    /// round trip on every pass. A guess that misses costs that round trip:
    /// probes only read.
    pub fn expect_facts(&mut self, known: &KnownFacts) {
        for job in &mut self.jobs {
            job.before_facts.known_facts = known.of(&job.host).cloned();
        }
    }

    /// A host's steps, rendered with its variables and `facts`.
    pub(super) fn render(&self, job: &Job, facts: &Facts, settings: &Settings) -> Result<HostTasks, String> {
        compile::render_tasks(&self.playbook, &self.renderer, &job.plays, &job.host.vars, facts, &settings.selection())
    }
}

pub(super) struct Job {
    pub(super) host: Host,
    plays: Vec<usize>,
    /// Run the scripts under `sudo -n` (the host's `ansible_become` or a play's `become`).
    pub(super) become_root: bool,
    /// Where the host keeps this playbook's pending handlers and applied record.
    pub(super) state: StateFiles,
    /// The managed paths and `unless` guards, known before facts (they may
    /// use variables, not facts): filled by `prepare` as it checks the host.
    pub(super) before_facts: BeforeFacts,
}

#[derive(Default)]
pub(super) struct BeforeFacts {
    pub(super) paths: Vec<String>,
    pub(super) patterns: Vec<String>,
    pub(super) guards: Vec<(usize, String)>,
    /// The live-state probes as rendered with stand-in facts: a drift pass
    /// runs them with its snapshot (unless `known_facts` renders them), and
    /// keeps their results when this pass's facts render them alike.
    pub(super) probes: Vec<String>,
    /// The facts the host had at its last drift pass (`expect_facts`).
    pub(super) known_facts: Option<Facts>,
    /// What the host's reports mask from the start (facts may add to it).
    pub(super) secrets: Secrets,
}

impl BeforeFacts {
    fn of(tasks: &HostTasks) -> BeforeFacts {
        BeforeFacts {
            paths: tasks.paths().into_iter().map(str::to_owned).collect(),
            patterns: tasks.patterns().into_iter().map(str::to_owned).collect(),
            guards: tasks.guards().into_iter().map(|(i, c)| (i, c.to_owned())).collect(),
            probes: tasks.probes.iter().map(|(_, command, _)| command.clone()).collect(),
            known_facts: None,
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
        match prepared.render(job, &placeholder, settings) {
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

/// A host's name and its rendered templates: destination path and content.
pub type RenderedHost = (String, Vec<(String, bytes::Bytes)>);

/// Every host's template outputs, rendered with stand-in facts, no SSH.
pub fn render_offline(prepared: &Prepared, settings: &Settings) -> Result<Vec<RenderedHost>, String> {
    let placeholder = Facts::placeholder(remote::TOOLS);
    prepared
        .jobs
        .iter()
        .map(|job| {
            let tasks =
                prepared.render(job, &placeholder, settings).map_err(|e| format!("host {}: {e}", job.host.name))?;
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
    let extra_vars = crate::extra_vars::parse_extra_vars(extra)?;
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
    let every_step = Selection { tags: &[], skip_tags: &[], backup: false };
    let every_play: Vec<usize> = (0..playbook.plays.len()).collect();
    let placeholder = Facts::placeholder(remote::TOOLS);
    let mut steps = 0;
    for host in &hosts {
        steps = compile::render_tasks(&playbook, &renderer, &every_play, &host.vars, &placeholder, &every_step)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn every_probe_of_the_shipped_playbook_runs_in_the_one_perl_of_its_pass() {
        let cli = Cli::try_parse_from(["sentry-provision", "drift", "-i", "inventory"]).unwrap();
        let Command::Drift(drift) = cli.command else { unreachable!() };
        let settings = drift.common.settings(crate::run::Mode::Check).unwrap();
        let prepared = load(&settings).unwrap();
        let placeholder = Facts::placeholder(remote::TOOLS);
        let mut probes = std::collections::BTreeSet::new();
        for job in &prepared.jobs {
            for (name, command, _) in prepared.render(job, &placeholder, &settings).unwrap().probes {
                assert!(remote::runs_in_one_perl(&command), "{name}:\n{command}");
                probes.insert(name);
            }
        }
        assert_eq!(probes.len(), 4, "{probes:?}");
    }
}
