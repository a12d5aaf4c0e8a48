//! Planning: a host's snapshot (what is there) and its rendered steps (what
//! should be) in, the changes to make out. Pure: no SSH, no terminal.

pub mod diff;
pub mod drift;
pub mod edit;
pub mod nginx;

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

/// The tuning guide's warning about worker concurrency: many workers at
/// `-c 4` beat one at `-c 64`, because of lock contention in the master.
///
/// Said of the host as the snapshot found it. Where the playbook's version
/// of the file (`desired`) runs at `-c 4` or less, the warning says so; and
/// when `applying`, it speaks of the host before this run, since the report
/// is read after the file changed.
pub fn concurrency_warnings(snapshot: &Snapshot, desired: &BTreeMap<String, Desired>, applying: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    for (path, entry) in &snapshot.entries {
        let Entry::File { content, .. } = entry else {
            continue;
        };
        let after = match desired.get(path) {
            Some(Desired::File { content: wanted, .. }) if wanted != content => {
                Some(worker_concurrencies(wanted).into_iter().max())
            }
            _ => None,
        };
        for c in worker_concurrencies(content).into_iter().filter(|c| *c > 4) {
            warnings.push(match after {
                Some(new) if new.is_none_or(|n| n <= 4) => {
                    let now = new.map_or("no worker at all".to_owned(), |n| format!("-c {n}"));
                    if applying {
                        format!(
                            "{path}: Sentry workers were running at concurrency -c {c} before this run (above 4 is \
                             a smell: lock contention); the playbook's file has {now}"
                        )
                    } else {
                        format!(
                            "{path}: Sentry workers run at concurrency -c {c}; above 4 is a smell (lock contention); \
                             the playbook's file has {now}"
                        )
                    }
                }
                _ => format!(
                    "{path}: Sentry workers run at concurrency -c {c}; above 4 is a smell (lock contention): \
                     prefer more worker processes (numprocs) at -c 4"
                ),
            });
        }
    }
    warnings
}

/// The `-c N` of each `sentry run worker` command line, comments aside.
fn worker_concurrencies(content: &[u8]) -> Vec<u32> {
    let worker = Regex::new(r"sentry\S*\s.*\brun\s+worker\b.*\s-c\s*(\d+)").expect("valid regex");
    String::from_utf8_lossy(content)
        .lines()
        .filter(|l| !l.trim_start().starts_with(['#', ';']))
        .filter_map(|line| worker.captures(line).and_then(|c| c[1].parse::<u32>().ok()))
        .collect()
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
mod tests {
    use super::*;

    fn file(content: &str) -> Entry {
        Entry::File {
            content: Bytes::copy_from_slice(content.as_bytes()),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        }
    }

    fn task(index: usize, name: &str, action: Action, notify: &[&str]) -> Task {
        Task {
            index,
            name: name.into(),
            action,
            notify: notify.iter().map(|s| s.to_string()).collect(),
            validate: None,
            backup: false,
        }
    }

    fn line(path: &str, line: Option<&str>, regexp: &str, present: bool) -> Action {
        Action::Line {
            path: path.into(),
            line: line.map(Into::into),
            regexp: Some(Regex::new(regexp).unwrap()),
            present,
            create: false,
        }
    }

    fn redis_tasks() -> Vec<Task> {
        vec![
            task(0, "no snapshots", line("/r.conf", None, r"^\s*save\s+\d", false), &["redis"]),
            task(1, "save off", line("/r.conf", Some("save \"\""), r"^\s*save\s", true), &["redis"]),
            task(2, "maxmemory", line("/r.conf", Some("maxmemory 1gb"), r"^\s*maxmemory\s", true), &["redis"]),
        ]
    }

    fn snapshot(entries: &[(&str, Entry)]) -> Snapshot {
        Snapshot { entries: entries.iter().map(|(p, e)| (p.to_string(), e.clone())).collect(), ..Default::default() }
    }

    #[test]
    fn several_edits_of_one_file_become_one_change_with_one_diff() {
        let snap = snapshot(&[("/r.conf", file("bind 127.0.0.1\nsave 900 1\nsave 60 10000\n"))]);
        let plan = plan(&redis_tasks(), &snap, &["redis".into()], 3).unwrap();
        assert_eq!(plan.files.len(), 1);
        let Desired::File { content, .. } = &plan.files[0].after else { panic!() };
        assert_eq!(String::from_utf8_lossy(content), "bind 127.0.0.1\nsave \"\"\nmaxmemory 1gb\n");
        assert!(plan.files[0].diff.contains("-save 900 1"), "{}", plan.files[0].diff);
        assert_eq!(plan.handlers, ["redis"]);
        assert!(plan.steps.iter().all(|s| s.changed));
    }

    #[test]
    fn a_converged_host_plans_nothing_and_notifies_nobody() {
        let snap = snapshot(&[("/r.conf", file("bind 127.0.0.1\nsave \"\"\nmaxmemory 1gb\n"))]);
        let plan = plan(&redis_tasks(), &snap, &["redis".into()], 3).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        assert!(plan.steps.iter().all(|s| !s.changed));
    }

    #[test]
    fn handlers_left_pending_by_an_earlier_run_run_again() {
        let mut snap = snapshot(&[("/r.conf", file("save \"\"\nmaxmemory 1gb\n"))]);
        snap.pending_handlers = vec!["nginx".into()];
        let order = ["redis".to_string(), "nginx".to_string()];
        let plan = plan(&redis_tasks(), &snap, &order, 3).unwrap();
        assert_eq!(plan.handlers, ["nginx"]);
        assert_eq!(plan.carried_over, ["nginx"]);
    }

    #[test]
    fn a_template_over_a_missing_file_is_a_new_file_with_default_mode() {
        let t = task(
            0,
            "site",
            Action::Template {
                dest: "/s".into(),
                content: Bytes::from_static(b"x\n"),
                attributes: Attributes::default(),
            },
            &[],
        );
        let plan = plan(&[t], &Snapshot::default(), &[], 3).unwrap();
        assert!(matches!(plan.files[0].after, Desired::File { mode: 0o644, .. }));
        assert!(plan.files[0].diff.starts_with("--- /dev/null"));
    }

    #[test]
    fn a_mode_change_alone_is_a_change_and_is_described() {
        let attributes = Attributes { mode: Some(0o600), ..Default::default() };
        let t = task(
            0,
            "secret",
            Action::Template { dest: "/s".into(), content: Bytes::from_static(b"x\n"), attributes },
            &[],
        );
        let plan = plan(&[t], &snapshot(&[("/s", file("x\n"))]), &[], 3).unwrap();
        assert_eq!(plan.files[0].diff, "mode /s: 0644 -> 0600\n");
    }

    #[test]
    fn editing_a_missing_file_without_create_is_an_error_naming_the_step() {
        let err = plan(&redis_tasks()[1..2], &Snapshot::default(), &[], 3).unwrap_err();
        assert!(err.contains("step `save off`") && err.contains("create: true"), "{err}");
    }

    #[test]
    fn commands_run_unless_their_guards_say_done() {
        let cmd = |i, creates: Option<&str>, unless: Option<&str>| {
            task(
                i,
                "install",
                Action::Command {
                    cmd: "make".into(),
                    creates: creates.map(Into::into),
                    unless: unless.map(Into::into),
                },
                &[],
            )
        };
        let mut snap = snapshot(&[("/bin/memmon", file(""))]);
        snap.guards_passed.insert(1);
        let tasks = [cmd(0, Some("/bin/memmon"), None), cmd(1, None, Some("true")), cmd(2, Some("/nope"), None)];
        let plan = plan(&tasks, &snap, &[], 3).unwrap();
        assert_eq!(plan.commands.iter().map(|c| c.index).collect::<Vec<_>>(), [2]);
    }

    /// Two files and a command: redis.conf (three steps), a site and its
    /// link (one step), and `make`, all of them to change.
    fn two_files_and_a_command() -> Plan {
        let mut tasks = redis_tasks();
        tasks.push(task(
            3,
            "site",
            Action::Template {
                dest: "/s".into(),
                content: Bytes::from_static(b"x\n"),
                attributes: Attributes::default(),
            },
            &[],
        ));
        tasks.push(task(4, "build", Action::Command { cmd: "make".into(), creates: None, unless: None }, &[]));
        let snap = snapshot(&[("/r.conf", file("save 900 1\n"))]);
        plan(&tasks, &snap, &["redis".into()], 3).unwrap()
    }

    fn changed_names(steps: &[StepOutcome]) -> Vec<&str> {
        steps.iter().filter(|s| s.changed).map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn a_step_changed_the_host_only_when_a_path_it_manages_was_written() {
        let plan = two_files_and_a_command();
        assert_eq!(changed_names(&plan.steps), ["no snapshots", "save off", "maxmemory", "site", "build"]);
        let steps = carried_out(&plan.steps, &["/r.conf".into()], &[], &[]);
        assert_eq!(changed_names(&steps), ["no snapshots", "save off", "maxmemory"]);
        let not_applied: Vec<&str> = steps.iter().filter(|s| s.not_applied).map(|s| s.name.as_str()).collect();
        assert_eq!(not_applied, ["site", "build"], "planned, not done");
    }

    #[test]
    fn a_host_where_nothing_was_written_changed_nothing() {
        let plan = two_files_and_a_command();
        let steps = carried_out(&plan.steps, &[], &[], &[]);
        assert_eq!(changed_names(&steps), Vec::<&str>::new());
        assert_eq!(steps.iter().filter(|s| s.not_applied).count(), 5);
    }

    #[test]
    fn files_put_back_by_a_rollback_count_as_unchanged() {
        let plan = two_files_and_a_command();
        let written = ["/r.conf".to_string(), "/s".to_string()];
        let steps = carried_out(&plan.steps, &written, &["/r.conf".into()], &[4]);
        assert_eq!(changed_names(&steps), ["site", "build"]);
    }

    #[test]
    fn a_command_step_changed_the_host_only_if_its_command_ran() {
        let plan = two_files_and_a_command();
        let written = ["/r.conf".to_string(), "/s".to_string()];
        assert_eq!(changed_names(&carried_out(&plan.steps, &written, &[], &[4])).len(), 5);
        assert!(!changed_names(&carried_out(&plan.steps, &written, &[], &[])).contains(&"build"));
    }

    #[test]
    fn a_step_that_needed_no_change_stays_unchanged_when_its_file_is_written_by_another() {
        let snap = snapshot(&[("/r.conf", file("save \"\"\n"))]);
        let plan = plan(&redis_tasks(), &snap, &["redis".into()], 3).unwrap();
        let steps = carried_out(&plan.steps, &["/r.conf".into()], &[], &[]);
        assert_eq!(changed_names(&steps), ["maxmemory"]);
        assert!(steps.iter().all(|s| !s.not_applied));
    }

    const AT_64: &str = "[program:worker]\ncommand=/www/sentry/bin/sentry run worker -c 64 -l WARNING\n";
    const AT_4: &str = "; many processes at -c 4\ncommand=/www/sentry/bin/sentry run worker -c 4 -l WARNING\n";

    fn wanting(path: &str, content: &str) -> BTreeMap<String, Desired> {
        let want = Desired::File { content: Bytes::from(content.to_owned()), mode: 0o644, owner: None, group: None };
        [(path.to_owned(), want)].into()
    }

    #[test]
    fn a_worker_concurrency_above_four_is_called_out() {
        let unmanaged = concurrency_warnings(&snapshot(&[("/w.conf", file(AT_64))]), &BTreeMap::new(), true);
        assert_eq!(
            unmanaged,
            ["/w.conf: Sentry workers run at concurrency -c 64; above 4 is a smell (lock contention): \
              prefer more worker processes (numprocs) at -c 4"],
            "a file the playbook leaves alone runs at -c 64 after an apply too"
        );
        assert!(concurrency_warnings(&snapshot(&[("/w.conf", file(AT_4))]), &BTreeMap::new(), false).is_empty());
    }

    #[test]
    fn a_check_says_the_host_runs_at_c64_and_what_the_playbook_sets() {
        let warnings = concurrency_warnings(&snapshot(&[("/w.conf", file(AT_64))]), &wanting("/w.conf", AT_4), false);
        assert_eq!(
            warnings,
            ["/w.conf: Sentry workers run at concurrency -c 64; above 4 is a smell (lock contention); \
              the playbook's file has -c 4"]
        );
    }

    #[test]
    fn an_apply_that_fixes_c64_speaks_of_the_host_before_it() {
        let warnings = concurrency_warnings(&snapshot(&[("/w.conf", file(AT_64))]), &wanting("/w.conf", AT_4), true);
        assert_eq!(
            warnings,
            ["/w.conf: Sentry workers were running at concurrency -c 64 before this run (above 4 is a smell: \
              lock contention); the playbook's file has -c 4"]
        );
        let still = concurrency_warnings(&snapshot(&[("/w.conf", file(AT_64))]), &wanting("/w.conf", AT_64), true);
        assert!(still[0].contains("run at concurrency -c 64; above 4"), "a playbook that keeps -c 64: {still:?}");
    }

    #[test]
    fn the_concurrency_warning_as_check_and_apply_print_it() {
        let host = snapshot(&[("/etc/supervisor/conf.d/sentry-worker.conf", file(AT_64))]);
        let want = wanting("/etc/supervisor/conf.d/sentry-worker.conf", AT_4);
        let text = [("check", false), ("apply", true)]
            .map(|(mode, applying)| format!("{mode}: {}", concurrency_warnings(&host, &want, applying).join("\n")))
            .join("\n");
        insta::assert_snapshot!(text);
    }

    fn site(content: &str) -> Task {
        let action = Action::Site {
            search: vec!["/n/enabled/*".into()],
            upstream: "127.0.0.1:9000".into(),
            dest: "/n/available/sentry".into(),
            enable: "/n/enabled/sentry".into(),
            content: Bytes::copy_from_slice(content.as_bytes()),
            attributes: Attributes::default(),
        };
        Task { validate: Some("nginx -t".into()), ..task(0, "site", action, &["nginx"]) }
    }

    fn found(listed: &str, path: &str) -> Found {
        Found { pattern: "/n/enabled/*".into(), listed: listed.into(), path: path.into() }
    }

    const OURS: &str = "server { location / { uwsgi_pass 127.0.0.1:9000; } }\n";
    const DEFAULT_SITE: &str = "server { listen 80 default_server; root /var/www/html; }\n";

    #[test]
    fn the_operators_vhost_is_switched_in_place_and_no_site_of_ours_is_added() {
        let vhost = "server {\n    server_name sentry.example.com;\n    location / {\n        proxy_pass http://127.0.0.1:9000;\n    }\n}\n";
        let mut snap = snapshot(&[
            ("/n/enabled/sentry", file(vhost)),
            ("/n/available/default", file(DEFAULT_SITE)),
            ("/n/available/sentry", Entry::Missing),
        ]);
        snap.found =
            vec![found("/n/enabled/default", "/n/available/default"), found("/n/enabled/sentry", "/n/enabled/sentry")];
        let plan = plan(&[site(OURS)], &snap, &["nginx".into()], 3).unwrap();
        assert_eq!(plan.files.len(), 1, "{plan:?}");
        assert_eq!(plan.files[0].path, "/n/enabled/sentry");
        assert_eq!(plan.files[0].validate, ["nginx -t"]);
        assert!(plan.files[0].diff.contains("-        proxy_pass http://127.0.0.1:9000;"), "{}", plan.files[0].diff);
        assert!(plan.files[0].diff.contains("+        uwsgi_pass 127.0.0.1:9000;"), "{}", plan.files[0].diff);
        assert_eq!(plan.handlers, ["nginx"]);
        assert_eq!(plan.steps[0].subject, "/n/enabled/sentry");

        let Desired::File { content, .. } = &plan.files[0].after else { panic!() };
        snap.entries.insert("/n/enabled/sentry".into(), file(std::str::from_utf8(content).unwrap()));
        assert!(super::plan(&[site(OURS)], &snap, &["nginx".into()], 3).unwrap().is_empty(), "a second run is idle");
    }

    #[test]
    fn a_host_with_no_vhost_of_sentrys_gets_the_template_and_its_link_checked_together() {
        let mut snap = snapshot(&[("/n/available/default", file(DEFAULT_SITE))]);
        snap.found = vec![found("/n/enabled/default", "/n/available/default")];
        let plan = plan(&[site(OURS)], &snap, &["nginx".into()], 3).unwrap();
        let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/n/available/sentry", "/n/enabled/sentry"]);
        assert!(plan.files.iter().all(|f| f.validate == ["nginx -t"]), "validated as one group");

        // Once enabled, the site is ours: the template keeps it, nothing moves.
        let mut done = snapshot(&[
            ("/n/available/default", file(DEFAULT_SITE)),
            ("/n/available/sentry", file(OURS)),
            ("/n/enabled/sentry", Entry::Link { target: "/n/available/sentry".into() }),
        ]);
        done.found = vec![
            found("/n/enabled/default", "/n/available/default"),
            found("/n/enabled/sentry", "/n/available/sentry"),
        ];
        assert!(super::plan(&[site(OURS)], &done, &["nginx".into()], 3).unwrap().is_empty());
        let newer = "server { listen 8080; location / { uwsgi_pass 127.0.0.1:9000; } }\n";
        let plan = super::plan(&[site(newer)], &done, &["nginx".into()], 3).unwrap();
        assert_eq!(plan.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["/n/available/sentry"]);
    }

    #[test]
    fn the_operators_vhost_at_sentrys_own_path_is_switched_not_overwritten() {
        let vhost =
            "server {\n    listen 443 ssl;\n    location / {\n        proxy_pass http://localhost:9000;\n    }\n}\n";
        let mut snap = snapshot(&[
            ("/n/available/sentry", file(vhost)),
            ("/n/enabled/sentry", Entry::Link { target: "/n/available/sentry".into() }),
        ]);
        snap.found = vec![found("/n/enabled/sentry", "/n/available/sentry")];
        let plan = plan(&[site("# Managed by sentry-provision\n")], &snap, &["nginx".into()], 3).unwrap();
        assert_eq!(plan.files.len(), 1, "{plan:?}");
        let Desired::File { content, .. } = &plan.files[0].after else { panic!() };
        let content = String::from_utf8_lossy(content);
        assert!(content.contains("listen 443 ssl;") && content.contains("uwsgi_pass 127.0.0.1:9000;"), "{content}");
    }

    #[test]
    fn a_file_of_the_operators_where_the_link_would_go_is_not_replaced() {
        let other = "server { location / { proxy_pass http://127.0.0.1:8080; } }\n";
        let mut snap = snapshot(&[("/n/enabled/sentry", file(other))]);
        snap.found = vec![found("/n/enabled/sentry", "/n/enabled/sentry")];
        let err = plan(&[site(OURS)], &snap, &[], 3).unwrap_err();
        assert!(err.contains("/n/enabled/sentry is a file of its own, where Sentry's site would be linked"), "{err}");
    }

    #[test]
    fn a_link_pointing_elsewhere_is_replaced() {
        let t = task(0, "enable", Action::Link { path: "/e/s".into(), target: "/a/s".into() }, &[]);
        let snap = snapshot(&[("/e/s", Entry::Link { target: "/a/old".into() })]);
        let plan = plan(std::slice::from_ref(&t), &snap, &[], 3).unwrap();
        assert_eq!(plan.files[0].diff, "link /e/s: link to /a/old -> /a/s\n");
        let done = snapshot(&[("/e/s", Entry::Link { target: "/a/s".into() })]);
        assert!(super::plan(&[t], &done, &[], 3).unwrap().is_empty());
    }
}
