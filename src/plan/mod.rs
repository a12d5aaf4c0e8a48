//! Planning: a host's snapshot (what is there) and its rendered steps (what
//! should be) in, the changes to make out. Pure: no SSH, no terminal.

pub mod compile;
pub mod diff;
pub mod drift;
pub mod edit;
pub mod nginx;
mod workers;

pub use workers::concurrency_warnings;

use bytes::Bytes;
use edit::Markers;
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};

/// What a managed path is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Missing,
    File {
        /// Shared, not copied, between the snapshot, the plan and rollback.
        content: Bytes,
        mode: u32,
        owner: String,
        group: String,
    },
    Link {
        target: String,
    },
    /// A directory, socket or anything else a step cannot manage.
    Other {
        kind: String,
    },
}

/// One round trip's worth of host state, as far as planning needs it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub entries: BTreeMap<String, Entry>,
    /// Indexes of command steps whose `unless` guard exited 0.
    pub guards_passed: BTreeSet<usize>,
    /// Handlers an earlier run recorded and did not finish.
    pub pending_handlers: Vec<String>,
    /// The files the steps' search patterns found; their contents are in `entries`.
    pub found: Vec<Found>,
}

/// A file a search pattern found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The pattern that found it.
    pub pattern: String,
    /// The path as the folder lists it (a link in `sites-enabled/`, say).
    pub listed: String,
    /// The file itself: `listed`, or where its link points.
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Action {
    Template {
        dest: String,
        content: Bytes,
        attributes: Attributes,
    },
    Line {
        path: String,
        line: Option<String>,
        regexp: Option<Regex>,
        present: bool,
        create: bool,
    },
    Block {
        path: String,
        block: String,
        marker: String,
        present: bool,
        create: bool,
    },
    Link {
        path: String,
        target: String,
    },
    Command {
        cmd: String,
        creates: Option<String>,
        unless: Option<String>,
    },
    /// Sentry's nginx site: the operator's vhosts that hand requests to
    /// `upstream` (found by `search`) are switched to uwsgi in place; where
    /// none does, the template goes to `dest`, linked from `enable`.
    Site {
        search: Vec<String>,
        upstream: String,
        dest: String,
        enable: String,
        content: Bytes,
        attributes: Attributes,
    },
}

impl Action {
    /// The paths the snapshot must read for this action.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Action::Template { dest, .. } => vec![dest],
            Action::Line { path, .. } | Action::Block { path, .. } | Action::Link { path, .. } => {
                vec![path]
            }
            Action::Command { creates, .. } => creates.iter().map(String::as_str).collect(),
            Action::Site { dest, enable, .. } => vec![dest, enable],
        }
    }

    /// The patterns whose matches the snapshot must read for this action.
    pub fn patterns(&self) -> Vec<&str> {
        match self {
            Action::Site { search, .. } => search.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// A step rendered for one host.
#[derive(Debug, Clone)]
pub struct Task {
    pub index: usize,
    pub name: String,
    pub action: Action,
    pub notify: Vec<String>,
    /// A command that must pass with every file of the run in place (`nginx -t`).
    pub validate: Option<String>,
    /// Keep the previous version of the file beside it.
    pub backup: bool,
}

/// What a path should become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    File { content: Bytes, mode: u32, owner: Option<String>, group: Option<String> },
    Link { target: String },
}

#[derive(Debug, Clone)]
pub struct FileChange {
    pub path: String,
    pub after: Desired,
    /// What was there before, for rollback.
    pub before: Entry,
    /// Validators of every step that touched the path.
    pub validate: Vec<String>,
    pub backup: bool,
    /// Unified diff of the content, plus a line per mode or owner change.
    pub diff: String,
}

#[derive(Debug, Clone)]
pub struct CommandRun {
    pub index: usize,
    pub cmd: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepOutcome {
    pub name: String,
    /// Planned: the step would change the host. After an apply (see
    /// [`carried_out`]): it did.
    pub changed: bool,
    /// The path or command the step is about.
    pub subject: String,
    /// The paths the step manages.
    pub paths: Vec<String>,
    /// A command step's index (as the install reports the commands it ran).
    pub command: Option<usize>,
    /// Planned to change, but the apply did not carry it out: the install
    /// failed first, or the change was put back.
    pub not_applied: bool,
}

/// The steps as an apply carried them out. A step changed the host only if
/// a path it manages was renamed into place and stayed there (`written`
/// less `put_back`), or its command ran; the plan said only what would
/// change, and a host where nothing was written must not read "9 changed".
pub fn carried_out(steps: &[StepOutcome], written: &[String], put_back: &[String], ran: &[usize]) -> Vec<StepOutcome> {
    let kept: BTreeSet<&str> =
        written.iter().map(String::as_str).filter(|p| !put_back.iter().any(|b| b == p)).collect();
    steps
        .iter()
        .map(|step| {
            let done = step.paths.iter().any(|p| kept.contains(p.as_str()))
                || step.command.is_some_and(|index| ran.contains(&index));
            let changed = step.changed && done;
            StepOutcome { changed, not_applied: step.changed && !done, ..step.clone() }
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<StepOutcome>,
    pub files: Vec<FileChange>,
    pub commands: Vec<CommandRun>,
    /// Handlers to run, in playbook order: notified now or left pending before.
    pub handlers: Vec<String>,
    /// Of `handlers`, those only pending from an earlier run.
    pub carried_over: Vec<String>,
    /// What every managed path should be once the plan is carried out.
    pub desired: BTreeMap<String, Desired>,
    /// Per path, the positions (in the task list) of the tasks that manage it.
    pub managed_by: BTreeMap<String, Vec<usize>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.commands.is_empty() && self.handlers.is_empty()
    }
}

const DEFAULT_MODE: u32 = 0o644;

/// Plans one host: applies every task to an in-memory copy of the snapshot,
/// in order, and keeps what differs from the host.
pub fn plan(
    tasks: &[Task],
    snapshot: &Snapshot,
    handler_order: &[String],
    diff_context: usize,
) -> Result<Plan, String> {
    let mut working: BTreeMap<String, Desired> = BTreeMap::new();
    let mut plan = Plan::default();
    let mut notified: BTreeSet<&str> = BTreeSet::new();

    for (position, task) in tasks.iter().enumerate() {
        let fail = |message: String| format!("step `{}`: {message}", task.name);
        let mut edit = Editing { snapshot, working: &mut working, managed_by: &mut plan.managed_by, position };
        let (subject, changed) = match &task.action {
            Action::Command { cmd, creates, unless } => {
                let created = creates.as_deref().is_some_and(|p| !matches!(edit.entry_of(p), Entry::Missing));
                let guarded = unless.is_some() && snapshot.guards_passed.contains(&task.index);
                let run = !created && !guarded;
                if run {
                    plan.commands.push(CommandRun { index: task.index, cmd: cmd.clone() });
                }
                (cmd.clone(), run)
            }
            Action::Link { path, target } => (path.clone(), edit.link(path, target)),
            Action::Site { search, upstream, dest, enable, content, attributes } => {
                // A file at `dest` that starts as the template does is
                // Sentry's own site; anything else there is the operator's.
                let ours_enabled = snapshot.found.iter().any(|f| {
                    f.path == *dest
                        && search.contains(&f.pattern)
                        && matches!(snapshot.entries.get(dest), Some(Entry::File { content: c, .. }) if nginx::is_ours(c, content))
                });
                let skip = if ours_enabled { Some(dest.as_str()) } else { None };
                let (switched, changed) = edit.switch_vhosts(search, upstream, skip).map_err(fail)?;
                // Sentry's own site, from the template, where no vhost of the
                // operator's serves Sentry web (or where it already is ours).
                if switched.is_empty() || ours_enabled {
                    if let Some(Entry::File { .. }) = snapshot.entries.get(enable) {
                        return Err(fail(format!(
                            "{enable} is a file of its own, where Sentry's site would be linked: \
                             not replaced (set nginx_site_enabled to another path)"
                        )));
                    }
                    let template = Action::Template {
                        dest: dest.clone(),
                        content: content.clone(),
                        attributes: attributes.clone(),
                    };
                    let installed = edit.file(&template, dest).map_err(fail)?;
                    let linked = edit.link(enable, dest);
                    let subjects: Vec<&str> = switched.iter().map(String::as_str).chain([dest.as_str()]).collect();
                    (subjects.join(", "), changed || installed || linked)
                } else {
                    (switched.join(", "), changed)
                }
            }
            action => {
                let path = action.paths()[0];
                (path.to_owned(), edit.file(action, path).map_err(fail)?)
            }
        };
        if changed {
            notified.extend(task.notify.iter().map(String::as_str));
        }
        let command = matches!(task.action, Action::Command { .. }).then_some(task.index);
        plan.steps.push(StepOutcome { name: task.name.clone(), changed, subject, command, ..StepOutcome::default() });
    }
    for (path, positions) in &plan.managed_by {
        for &position in positions {
            plan.steps[position].paths.push(path.clone());
        }
    }

    plan.desired = working.clone();
    for (path, after) in working {
        let before = snapshot.entries.get(&path).cloned().unwrap_or(Entry::Missing);
        if desired_of(&before).as_ref() == Some(&after) {
            continue;
        }
        let diff = describe_change(&path, &before, &after, diff_context);
        let touching: Vec<&Task> = plan.managed_by.get(&path).into_iter().flatten().map(|&p| &tasks[p]).collect();
        let mut validate: Vec<String> = touching.iter().filter_map(|t| t.validate.clone()).collect();
        validate.dedup();
        let backup = touching.iter().any(|t| t.backup);
        plan.files.push(FileChange { path, after, before, diff, validate, backup });
    }
    // A step that changed a path only for a later step to change it back
    // changes nothing overall; it must not notify either.
    if plan.files.is_empty() && plan.commands.is_empty() {
        notified.clear();
        for step in &mut plan.steps {
            step.changed = false;
        }
    }
    for handler in handler_order {
        let pending = snapshot.pending_handlers.contains(handler);
        if notified.contains(handler.as_str()) || pending {
            plan.handlers.push(handler.clone());
            if pending && !notified.contains(handler.as_str()) {
                plan.carried_over.push(handler.clone());
            }
        }
    }
    Ok(plan)
}

/// One task's view of the host while planning: what the snapshot found,
/// what earlier tasks made of each path, and who manages what.
struct Editing<'a> {
    snapshot: &'a Snapshot,
    working: &'a mut BTreeMap<String, Desired>,
    managed_by: &'a mut BTreeMap<String, Vec<usize>>,
    position: usize,
}

impl Editing<'_> {
    fn entry_of(&self, path: &str) -> Entry {
        self.snapshot.entries.get(path).cloned().unwrap_or(Entry::Missing)
    }

    /// What `path` is before this task: as an earlier task left it, or as the host has it.
    fn current(&self, path: &str) -> Option<Desired> {
        self.working.get(path).cloned().or_else(|| desired_of(&self.entry_of(path)))
    }

    fn manage(&mut self, path: &str) {
        let tasks = self.managed_by.entry(path.to_owned()).or_default();
        if !tasks.contains(&self.position) {
            tasks.push(self.position);
        }
    }

    /// Sets `path` to `after`; says whether that changes it.
    fn set(&mut self, path: &str, before: Option<Desired>, after: Option<Desired>) -> bool {
        self.manage(path);
        let changed = before != after;
        if let Some(after) = after {
            self.working.insert(path.to_owned(), after);
        }
        changed
    }

    fn link(&mut self, path: &str, target: &str) -> bool {
        let before = self.current(path);
        self.set(path, before, Some(Desired::Link { target: target.to_owned() }))
    }

    /// A template, line or block edit of the file at `path`.
    fn file(&mut self, action: &Action, path: &str) -> Result<bool, String> {
        let before = match self.working.get(path) {
            Some(desired) => Some(desired.clone()),
            None => match self.entry_of(path) {
                Entry::Link { target } => {
                    return Err(format!("{path} is a symbolic link to {target}; edit the file it points to"));
                }
                Entry::Other { kind } => return Err(format!("{path} is a {kind}, not a file")),
                entry => desired_of(&entry),
            },
        };
        let after = edit_file(action, before.clone())?;
        Ok(self.set(path, before, after))
    }

    /// Switches every file `search` found that hands requests to Sentry web
    /// at `upstream` (other than Sentry's own site at `dest`) to uwsgi.
    /// Returns those files, and whether any of them changes.
    fn switch_vhosts(
        &mut self,
        search: &[String],
        upstream: &str,
        ours: Option<&str>,
    ) -> Result<(Vec<String>, bool), String> {
        let mut serving: Vec<String> = Vec::new();
        let mut changed = false;
        let snapshot = self.snapshot;
        for found in snapshot.found.iter().filter(|f| search.contains(&f.pattern) && Some(f.path.as_str()) != ours) {
            if serving.contains(&found.path) {
                continue;
            }
            let before = self.current(&found.path);
            let Some(Desired::File { content, mode, owner, group }) = &before else { continue };
            let Ok(text) = std::str::from_utf8(content) else { continue };
            let switched = nginx::switch_to_uwsgi(text, upstream).map_err(|e| format!("{}: {e}", found.listed))?;
            let Some(switched) = switched else { continue };
            let after = Desired::File {
                content: Bytes::from(switched.into_bytes()),
                mode: *mode,
                owner: owner.clone(),
                group: group.clone(),
            };
            changed |= self.set(&found.path, before, Some(after));
            serving.push(found.path.clone());
        }
        Ok((serving, changed))
    }
}

impl Plan {
    /// The part of this plan that puts back `paths` and runs what they
    /// notify, plus `extra_handlers` and the handlers owed from before.
    pub fn restricted_to(
        &self,
        tasks: &[Task],
        paths: &BTreeSet<String>,
        extra_handlers: &[String],
        handler_order: &[String],
    ) -> Plan {
        let notified: BTreeSet<&str> = self
            .tasks_managing(tasks, paths)
            .flat_map(|t| t.notify.iter().map(String::as_str))
            .chain(extra_handlers.iter().map(String::as_str))
            .chain(self.carried_over.iter().map(String::as_str))
            .collect();
        Plan {
            steps: self.steps.iter().filter(|s| s.changed && paths.contains(&s.subject)).cloned().collect(),
            files: self.files.iter().filter(|f| paths.contains(&f.path)).cloned().collect(),
            commands: Vec::new(),
            handlers: handler_order.iter().filter(|h| notified.contains(h.as_str())).cloned().collect(),
            carried_over: self.carried_over.clone(),
            desired: self.desired.clone(),
            managed_by: self.managed_by.clone(),
        }
    }

    /// The tasks that manage any of `paths`.
    pub fn tasks_managing<'t>(
        &'t self,
        tasks: &'t [Task],
        paths: &'t BTreeSet<impl std::borrow::Borrow<str> + Ord>,
    ) -> impl Iterator<Item = &'t Task> + 't {
        let mut positions: Vec<usize> = (self.managed_by.iter())
            .filter(|(path, _)| paths.contains(path.as_str()))
            .flat_map(|(_, positions)| positions.iter().copied())
            .collect();
        positions.sort_unstable();
        positions.dedup();
        positions.into_iter().filter_map(|p| tasks.get(p))
    }

    /// This plan plus handlers that must run although no file changed.
    pub fn with_handlers(&self, extra_handlers: &[String], handler_order: &[String]) -> Plan {
        let mut plan = self.clone();
        plan.handlers =
            handler_order.iter().filter(|h| self.handlers.contains(h) || extra_handlers.contains(h)).cloned().collect();
        plan
    }
}

/// The desired form of what is already there (so an unchanged file compares equal).
fn desired_of(entry: &Entry) -> Option<Desired> {
    match entry {
        Entry::File { content, mode, owner, group } => Some(Desired::File {
            content: content.clone(),
            mode: *mode,
            owner: Some(owner.clone()),
            group: Some(group.clone()),
        }),
        Entry::Link { target } => Some(Desired::Link { target: target.clone() }),
        Entry::Missing | Entry::Other { .. } => None,
    }
}

fn edit_file(action: &Action, before: Option<Desired>) -> Result<Option<Desired>, String> {
    let (content, mode, owner, group) = match before {
        Some(Desired::File { content, mode, owner, group }) => (Some(content), mode, owner, group),
        Some(Desired::Link { target }) => {
            return Err(format!("the path is a symbolic link to {target}"));
        }
        None => (None, DEFAULT_MODE, None, None),
    };
    let file = |content: String| Desired::File {
        content: Bytes::from(content.into_bytes()),
        mode,
        owner: owner.clone(),
        group: group.clone(),
    };
    Ok(match action {
        Action::Template { content: rendered, attributes, .. } => Some(Desired::File {
            content: rendered.clone(),
            mode: attributes.mode.unwrap_or(mode),
            owner: attributes.owner.clone().or(owner.clone()),
            group: attributes.group.clone().or(group.clone()),
        }),
        Action::Line { path, line, regexp, present, create } => match (text(content.as_deref())?, present) {
            (None, false) => None,
            (None, true) if !create => {
                return Err(format!("{path} does not exist (set `create: true` to create it)"));
            }
            (current, true) => {
                let current = current.unwrap_or_default();
                Some(file(edit::ensure_line(current, line.as_deref().unwrap_or_default(), regexp.as_ref())))
            }
            (Some(current), false) => Some(file(edit::remove_lines(current, line.as_deref(), regexp.as_ref()))),
        },
        Action::Block { path, block, marker, present, create } => {
            let markers = Markers::from_template(marker);
            match (text(content.as_deref())?, present) {
                (None, false) => None,
                (None, true) if !create => {
                    return Err(format!("{path} does not exist (set `create: true` to create it)"));
                }
                (current, true) => Some(file(edit::set_block(current.unwrap_or_default(), &markers, block))),
                (Some(current), false) => Some(file(edit::remove_block(current, &markers))),
            }
        }
        Action::Link { .. } | Action::Command { .. } | Action::Site { .. } => unreachable!("not a file edit"),
    })
}

fn text(content: Option<&[u8]>) -> Result<Option<&str>, String> {
    content.map(|c| std::str::from_utf8(c).map_err(|_| "the file is not UTF-8 text".to_owned())).transpose()
}

fn describe_change(path: &str, before: &Entry, after: &Desired, context: usize) -> String {
    match (before, after) {
        (
            Entry::File { content, mode, owner, group },
            Desired::File { content: new, mode: new_mode, owner: new_owner, group: new_group },
        ) => {
            let mut out = String::new();
            if mode != new_mode {
                out.push_str(&format!("mode {path}: {mode:04o} -> {new_mode:04o}\n"));
            }
            if let Some(o) = new_owner.as_ref().filter(|o| *o != owner) {
                out.push_str(&format!("owner {path}: {owner} -> {o}\n"));
            }
            if let Some(g) = new_group.as_ref().filter(|g| *g != group) {
                out.push_str(&format!("group {path}: {group} -> {g}\n"));
            }
            if content != new {
                out.push_str(&diff::unified(path, Some(content), Some(new), context));
            }
            out
        }
        (Entry::Missing, Desired::File { content, .. }) => diff::unified(path, None, Some(content), context),
        (before, Desired::Link { target }) => {
            format!("link {path}: {} -> {target}\n", describe_entry(before))
        }
        (before, Desired::File { content, .. }) => {
            format!(
                "replace {path}: {} -> file\n{}",
                describe_entry(before),
                diff::unified(path, None, Some(content), context)
            )
        }
    }
}

fn describe_entry(entry: &Entry) -> String {
    match entry {
        Entry::Missing => "absent".into(),
        Entry::File { .. } => "a file".into(),
        Entry::Link { target } => format!("link to {target}"),
        Entry::Other { kind } => kind.clone(),
    }
}

#[cfg(test)]
mod tests;
