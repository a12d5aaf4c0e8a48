//! The playbook compiled for one host: its steps rendered with the host's
//! variables and facts into tasks, with its handlers and live-state probes.
//! Pure: no host is contacted here.

use super::{Action, Attributes, Task};
use crate::facts::Facts;
use crate::playbook::{Playbook, State, StepKind};
use crate::render::{Renderer, Scope};
use crate::secrets::Secrets;
use crate::vars::Vars;
use regex::Regex;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Which steps a run takes (`--tags`, `--skip-tags`), and whether every
/// changed file keeps a backup (`--backup`).
pub struct Selection<'a> {
    pub tags: &'a [String],
    pub skip_tags: &'a [String],
    pub backup: bool,
}

/// A host's steps rendered for it, with its handlers in playbook order.
pub struct HostTasks {
    pub tasks: Vec<Task>,
    pub handlers: Vec<(String, String)>,
    /// Name, command and remedy of each live-state probe.
    pub probes: Vec<(String, String, Option<String>)>,
    /// The values of its secret variables, playbook `vars` included, rendered.
    pub secrets: Secrets,
}

impl HostTasks {
    /// The names of the host's handlers, in playbook order.
    pub fn handler_order(&self) -> Vec<String> {
        self.handlers.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.tasks.iter().flat_map(|t| t.action.paths()).collect();
        paths.sort();
        paths.dedup();
        paths
    }

    pub fn patterns(&self) -> Vec<&str> {
        let mut patterns: Vec<&str> = self.tasks.iter().flat_map(|t| t.action.patterns()).collect();
        patterns.sort();
        patterns.dedup();
        patterns
    }

    pub fn guards(&self) -> Vec<(usize, &str)> {
        self.tasks
            .iter()
            .filter_map(|t| match &t.action {
                Action::Command { unless: Some(cmd), .. } => Some((t.index, cmd.as_str())),
                _ => None,
            })
            .collect()
    }
}

fn selected_by_tags(step_tags: &[String], selection: &Selection) -> bool {
    let wanted = selection.tags.is_empty()
        || step_tags.iter().any(|t| selection.tags.contains(t))
        || selection.tags.iter().any(|t| t == "all");
    let skipped = step_tags.iter().any(|t| selection.skip_tags.contains(t));
    wanted && !skipped
}

/// Renders the steps of `plays` (indexes into the playbook's plays) for a
/// host with `host_vars` and `facts`: the first error is bad input.
pub fn render_tasks(
    playbook: &Playbook,
    renderer: &Renderer,
    plays: &[usize],
    host_vars: &Vars,
    facts: &Facts,
    selection: &Selection,
) -> Result<HostTasks, String> {
    let file = playbook.path.display().to_string();
    let mut tasks = Vec::new();
    let mut handlers = Vec::new();
    let mut probes = Vec::new();
    let mut secrets = Secrets::default();
    let mut index = 0;
    for &p in plays {
        let play = &playbook.plays[p];
        let mut vars = play.vars.clone();
        vars.extend(host_vars.clone());
        vars.insert("facts".into(), serde_json::to_value(facts).expect("facts serialize"));
        let vars = renderer.resolve_vars(&vars).map_err(|e| format!("{file}: {e}"))?;
        secrets.extend(&Secrets::of(&vars));
        let scope = Scope::of(&vars);
        for step in &play.steps {
            index += 1;
            let origin = |field: &str| format!("{file}: step `{}`: {field}", step.name);
            let text = |field: &str, value: &str| renderer.render_str(&origin(field), value, &scope);
            let path = |field: &str, value: &str| checked_path(&origin(field), &text(field, value)?);
            if !selected_by_tags(&step.tags, selection) {
                continue;
            }
            if let Some(condition) = &step.when
                && !renderer.test(&origin("when"), condition, &scope)?
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
                    content: renderer.render_file(&playbook.templates_dir, &t.src, &scope)?.into_bytes().into(),
                    attributes: attributes(t.mode, &t.owner, &t.group)?,
                },
                StepKind::Line(l) => Action::Line {
                    path: path("path", &l.path)?,
                    line: l.line.as_deref().map(|v| text("line", v)).transpose()?,
                    regexp: match &l.regexp {
                        None => None,
                        Some(re) => {
                            let re = text("regexp", re)?;
                            Some(compiled(&re).map_err(|e| format!("{}: `{re}` is invalid: {e}", origin("regexp")))?)
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
                    content: renderer.render_file(&playbook.templates_dir, &v.src, &scope)?.into_bytes().into(),
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
                backup: backup || selection.backup,
            });
        }
        for handler in &play.handlers {
            let origin = format!("{file}: handler `{}`: command", handler.name);
            handlers.push((handler.name.clone(), renderer.render_str(&origin, &handler.command, &scope)?));
        }
        for probe in &play.verify {
            let origin = format!("{file}: probe `{}`: command", probe.name);
            let command = renderer.render_str(&origin, &probe.command, &scope)?;
            probes.push((probe.name.clone(), command, probe.remedy.clone()));
        }
    }
    Ok(HostTasks { tasks, handlers, probes, secrets })
}

/// A search pattern: an absolute path whose last part may hold `*` and `?`
/// (so that the folder it searches is known, for the run's cleanup there).
fn checked_pattern(origin: &str, pattern: &str) -> Result<String, String> {
    let pattern = checked_path(origin, pattern)?;
    let folder = pattern.trim_end_matches('/').rsplit_once('/').map_or("", |(folder, _)| folder);
    if folder.contains(['*', '?']) || pattern.contains(['[', ']']) {
        return Err(format!("{origin}: `{pattern}`: only the last part of a pattern may hold `*` or `?`"));
    }
    Ok(pattern)
}

pub fn checked_path(origin: &str, path: &str) -> Result<String, String> {
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

/// `pattern` compiled once for the process (a scheduled drift's passes
/// share it): every host renders a step's `regexp`, mostly to the same
/// text, and compiling one costs more than the rest of planning that step
/// (a `Regex` clone shares the compiled program).
fn compiled(pattern: &str) -> Result<Regex, regex::Error> {
    static COMPILED: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Mutex::default);
    let cache = || COMPILED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(regex) = cache().get(pattern) {
        return Ok(regex.clone());
    }
    // Compiled outside the lock: hosts planned at once do not wait on it.
    let regex = Regex::new(pattern)?;
    cache().insert(pattern.to_string(), regex.clone());
    Ok(regex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_part_of_a_search_pattern_may_hold_wildcards() {
        assert_eq!(checked_pattern("search", "/etc/nginx/sites-enabled/*").unwrap(), "/etc/nginx/sites-enabled/*");
        assert!(checked_pattern("search", "/etc/nginx/conf.d/sentry?.conf").is_ok());
        let folder = checked_pattern("search", "/etc/nginx/sites-*/sentry").unwrap_err();
        assert!(folder.contains("only the last part of a pattern may hold `*` or `?`"), "{folder}");
        assert!(checked_pattern("search", "/etc/nginx/site[s]/x").is_err(), "no brackets");
        assert!(checked_pattern("search", "etc/*").unwrap_err().contains("is not an absolute path"));
    }

    #[test]
    fn a_path_must_be_absolute_and_stay_where_it_says() {
        assert!(checked_path("dest", "/etc/redis/redis.conf").is_ok());
        assert!(checked_path("dest", "/etc/../root/.ssh/authorized_keys").unwrap_err().contains("contains `..`"));
        assert!(checked_path("dest", "/etc/a\0b").unwrap_err().contains("NUL byte"));
    }

    #[test]
    fn tags_choose_steps_and_skip_tags_win() {
        let step = ["redis".to_owned()];
        let wanted = |tags: &[&str], skip: &[&str]| {
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            let skip_tags: Vec<String> = skip.iter().map(|t| t.to_string()).collect();
            selected_by_tags(&step, &Selection { tags: &tags, skip_tags: &skip_tags, backup: false })
        };
        assert!(wanted(&[], &[]));
        assert!(wanted(&["redis"], &[]));
        assert!(wanted(&["all"], &[]));
        assert!(!wanted(&["nginx"], &[]));
        assert!(!wanted(&["redis"], &["redis"]));
    }
}
