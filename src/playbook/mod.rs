//! The playbook: a strict serde model of plays, steps and handlers, loaded
//! from YAML and checked before any host is touched (unknown keys, step
//! kinds, regexes, notify targets, file modes).

use crate::vars::{Vars, kind_of};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Play {
    #[serde(default)]
    pub name: Option<String>,
    /// A host pattern, as for `--limit`.
    #[serde(default = "all_hosts")]
    pub hosts: String,
    /// Defaults for this play: the lowest precedence, under every inventory variable.
    #[serde(default)]
    pub vars: Vars,
    #[serde(default, rename = "become")]
    pub become_root: bool,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub handlers: Vec<Handler>,
    /// Probes of live state, run by `drift`.
    #[serde(default)]
    pub verify: Vec<Probe>,
    /// Rolling updates: this many hosts (`2`) or this share of them (`"25%"`)
    /// at a time, each batch with its handlers done before the next starts.
    #[serde(default, deserialize_with = "batch_size")]
    pub serial: Option<Serial>,
    /// Stop before the next batch when more than this share of a batch failed.
    #[serde(default)]
    pub max_fail_percentage: Option<f64>,
}

/// A batch size: a number of hosts or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Serial {
    Hosts(usize),
    Percent(f64),
}

impl Serial {
    pub fn parse(text: &str) -> Result<Serial, String> {
        let text = text.trim();
        let invalid = || format!("`{text}` is not a batch size such as 2 or \"25%\"");
        match text.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| *p > 0.0 && *p <= 100.0)
                .map(Serial::Percent)
                .ok_or_else(invalid),
            None => text.parse::<usize>().ok().filter(|n| *n > 0).map(Serial::Hosts).ok_or_else(invalid),
        }
    }

    /// Hosts per batch out of `total`, at least one.
    pub fn of(self, total: usize) -> usize {
        match self {
            Serial::Hosts(n) => n.min(total).max(1),
            Serial::Percent(p) => ((total as f64 * p / 100.0).floor() as usize).clamp(1, total.max(1)),
        }
    }
}

fn batch_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Serial>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    let text = match &value {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "serial must be a number or a percentage, found {}",
                kind_of(other)
            )));
        }
    };
    Serial::parse(&text).map(Some).map_err(serde::de::Error::custom)
}

fn all_hosts() -> String {
    "all".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    #[serde(default)]
    pub template: Option<TemplateStep>,
    #[serde(default)]
    pub line: Option<LineStep>,
    #[serde(default)]
    pub block: Option<BlockStep>,
    #[serde(default)]
    pub link: Option<LinkStep>,
    #[serde(default)]
    pub command: Option<CommandStep>,
    #[serde(default)]
    pub vhost: Option<VhostStep>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub notify: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub tags: Vec<String>,
    /// A minijinja expression; the step is skipped on hosts where it is false.
    #[serde(default)]
    pub when: Option<String>,
}

/// The one thing a step does, borrowed from whichever key the step set.
#[derive(Debug, Clone, Copy)]
pub enum StepKind<'a> {
    Template(&'a TemplateStep),
    Line(&'a LineStep),
    Block(&'a BlockStep),
    Link(&'a LinkStep),
    Command(&'a CommandStep),
    Vhost(&'a VhostStep),
}

impl Step {
    /// The step's `validate` command and `backup` flag, for file steps.
    pub fn safeguards(&self) -> (Option<&str>, bool) {
        match self.kind() {
            StepKind::Template(t) => (t.validate.as_deref(), t.backup),
            StepKind::Line(l) => (l.validate.as_deref(), l.backup),
            StepKind::Block(b) => (b.validate.as_deref(), b.backup),
            StepKind::Vhost(v) => (v.validate.as_deref(), v.backup),
            StepKind::Link(_) | StepKind::Command(_) => (None, false),
        }
    }

    pub fn kind(&self) -> StepKind<'_> {
        self.kinds().into_iter().next().expect("validated: exactly one kind")
    }

    fn kinds(&self) -> Vec<StepKind<'_>> {
        let mut kinds = Vec::new();
        kinds.extend(self.template.as_ref().map(StepKind::Template));
        kinds.extend(self.line.as_ref().map(StepKind::Line));
        kinds.extend(self.block.as_ref().map(StepKind::Block));
        kinds.extend(self.link.as_ref().map(StepKind::Link));
        kinds.extend(self.command.as_ref().map(StepKind::Command));
        kinds.extend(self.vhost.as_ref().map(StepKind::Vhost));
        kinds
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateStep {
    /// Relative to the templates folder.
    pub src: String,
    pub dest: String,
    /// A command that must pass with every file of the run in place, or every file goes back.
    #[serde(default)]
    pub validate: Option<String>,
    /// Keep the previous version in the state folder (`backups/<time><path>`).
    #[serde(default)]
    pub backup: bool,
    #[serde(default, deserialize_with = "octal_mode")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineStep {
    pub path: String,
    /// The line to ensure; not needed with `state: absent` and a `regexp`.
    #[serde(default)]
    pub line: Option<String>,
    /// Lines to replace (present: the last match becomes `line`) or remove (absent: every match).
    #[serde(default)]
    pub regexp: Option<String>,
    #[serde(default)]
    pub state: State,
    /// Create the file when it is missing (otherwise a missing file is an error).
    #[serde(default)]
    pub create: bool,
    #[serde(default)]
    pub validate: Option<String>,
    #[serde(default)]
    pub backup: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockStep {
    pub path: String,
    #[serde(default)]
    pub block: String,
    /// `{mark}` becomes BEGIN and END.
    #[serde(default = "default_marker")]
    pub marker: String,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub create: bool,
    #[serde(default)]
    pub validate: Option<String>,
    #[serde(default)]
    pub backup: bool,
}

fn default_marker() -> String {
    "# {mark} SENTRY-PROVISION MANAGED BLOCK".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkStep {
    /// What the link points to.
    pub src: String,
    /// The link itself.
    pub dest: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandStep {
    pub cmd: String,
    /// Skip when this path exists on the host.
    #[serde(default)]
    pub creates: Option<String>,
    /// Skip when this command exits 0 on the host.
    #[serde(default)]
    pub unless: Option<String>,
}

/// Sentry's nginx site on a host as it is: every vhost of the operator's
/// that hands requests to Sentry web is switched to uwsgi in place (only
/// that `proxy_pass` changes); where none does, the template is installed
/// and enabled.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostStep {
    /// Where nginx's vhosts are: absolute paths, `*` and `?` allowed in the
    /// last part, separated by spaces (`/etc/nginx/sites-enabled/*`).
    pub search: String,
    /// Sentry web's address (`127.0.0.1:9000`): what a vhost of Sentry's
    /// hands requests to, and what `uwsgi_pass` will name.
    pub upstream: String,
    /// The template for a host with no such vhost, relative to the templates folder.
    pub src: String,
    pub dest: String,
    /// The link in nginx's enabled sites that points to `dest`.
    pub enable: String,
    #[serde(default)]
    pub validate: Option<String>,
    #[serde(default)]
    pub backup: bool,
    #[serde(default, deserialize_with = "octal_mode")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    pub name: String,
    /// A shell command; it fails the host when it exits non-zero.
    pub command: String,
}

/// A check of live state: exits 0 when the host is as intended, otherwise
/// prints what differs. `remedy` names the handler that puts it right.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub name: String,
    pub command: String,
    #[serde(default)]
    pub remedy: Option<String>,
}

#[derive(Debug)]
pub struct Playbook {
    pub path: PathBuf,
    pub templates_dir: PathBuf,
    pub plays: Vec<Play>,
}

#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Modes are quoted octal strings ("0644"): an unquoted 0644 is a YAML number
/// whose meaning differs between YAML versions, so it is refused.
fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    let text = match &value {
        serde_json::Value::String(s) => s.clone(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "mode must be a quoted octal string such as \"0644\", found {} {other}",
                kind_of(other)
            )));
        }
    };
    u32::from_str_radix(&text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("mode `{text}` is not an octal file mode such as \"0644\"")))
}

/// Loads and checks a playbook; templates are looked up in `templates/`
/// beside the playbook's folder, or beside the playbook itself.
pub fn load(path: &Path) -> Result<Playbook, Error> {
    let text = crate::input::read_text(path).map_err(Error)?;
    if text.trim().is_empty() {
        return Err(Error(format!("{}: the playbook is empty (expected a list of plays)", path.display())));
    }
    let plays: Vec<Play> = serde_yaml::from_str(&text).map_err(|e| Error(crate::vars::yaml_error(path, &e)))?;
    if plays.is_empty() {
        return Err(Error(format!("{}: the playbook has no plays", path.display())));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let templates_dir = [dir.join("templates"), dir.join("../templates")]
        .into_iter()
        .find(|d| d.is_dir())
        .unwrap_or_else(|| dir.join("templates"));
    let playbook = Playbook { path: path.to_path_buf(), templates_dir, plays };
    playbook.check()?;
    Ok(playbook)
}

impl Playbook {
    fn check(&self) -> Result<(), Error> {
        let file = self.path.display();
        for (p, play) in self.plays.iter().enumerate() {
            let play_name = play.name.clone().unwrap_or_else(|| format!("play {}", p + 1));
            if play.steps.is_empty() {
                return Err(Error(format!("{file}: {play_name}: the play has no steps")));
            }
            let mut handler_names = Vec::new();
            for handler in &play.handlers {
                if handler_names.contains(&handler.name.as_str()) {
                    return Err(Error(format!("{file}: {play_name}: handler `{}` is defined twice", handler.name)));
                }
                // Owed handlers are recorded on the host by name.
                if handler.name.trim().is_empty() || !fits_pending_record(&handler.name) {
                    return Err(Error(format!(
                        "{file}: {play_name}: handler name {:?} must be a non-empty line of text without tabs or control characters",
                        handler.name
                    )));
                }
                handler_names.push(&handler.name);
            }
            for probe in &play.verify {
                if let Some(remedy) = probe.remedy.as_ref().filter(|r| !handler_names.contains(&r.as_str())) {
                    return Err(Error(format!(
                        "{file}: {play_name}: probe `{}`: remedy `{remedy}` is not a handler of this play",
                        probe.name
                    )));
                }
            }
            for step in &play.steps {
                let at = |message: String| Error(format!("{file}: {play_name}: step `{}`: {message}", step.name));
                match step.kinds().len() {
                    1 => {}
                    0 => {
                        return Err(at("names no action (one of template, line, block, link, command, vhost)".into()));
                    }
                    _ => {
                        return Err(at("names more than one action; give each its own step".into()));
                    }
                }
                for target in &step.notify {
                    if !handler_names.contains(&target.as_str()) {
                        return Err(at(format!(
                            "notifies `{target}`, which is not a handler of this play (handlers: {})",
                            handler_names.join(", ")
                        )));
                    }
                }
                match step.kind() {
                    StepKind::Line(line) => {
                        if let Some(re) = &line.regexp {
                            regex::Regex::new(re).map_err(|e| at(format!("regexp `{re}` is invalid: {e}")))?;
                        }
                        if line.state == State::Present && line.line.is_none() {
                            return Err(at("`line` is required with state: present".into()));
                        }
                        if line.state == State::Absent && line.line.is_none() && line.regexp.is_none() {
                            return Err(at("state: absent needs `regexp` or `line`".into()));
                        }
                    }
                    StepKind::Block(block) if !block.marker.contains("{mark}") => {
                        return Err(at(format!("marker `{}` must contain {{mark}}", block.marker)));
                    }
                    StepKind::Template(TemplateStep { src, .. }) | StepKind::Vhost(VhostStep { src, .. }) => {
                        let source = self.templates_dir.join(src);
                        if !source.is_file() {
                            return Err(at(format!("template `{src}` not found (looked for {})", source.display())));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Every template file the playbook names, relative to the templates folder.
    pub fn template_sources(&self) -> Vec<&str> {
        let mut sources: Vec<&str> = self
            .plays
            .iter()
            .flat_map(|p| &p.steps)
            .filter_map(|s| match s.kind() {
                StepKind::Template(t) => Some(t.src.as_str()),
                StepKind::Vhost(v) => Some(v.src.as_str()),
                _ => None,
            })
            .collect();
        sources.sort();
        sources.dedup();
        sources
    }
}

/// Whether `name` can stand in a pending record: one line, and no tab or
/// other control character (a tab marks a cleared handler). Handlers are
/// recorded on hosts by name, so the playbook refuses names that cannot.
pub fn fits_pending_record(name: &str) -> bool {
    !name.is_empty() && !name.contains(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Playbook, Error> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("templates/a.j2"), "x\n").unwrap();
        let path = dir.path().join("play.yml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn an_unknown_key_is_reported_with_line_and_column() {
        let err =
            load_text("- hosts: all\n  steps:\n    - name: a\n      templat: {src: a.j2, dest: /a}\n").unwrap_err();
        assert!(err.0.contains("play.yml:4:7"), "{err}");
        assert!(err.0.contains("templat"), "{err}");
    }

    #[test]
    fn a_step_without_an_action_is_refused() {
        let err = load_text("- steps:\n    - name: nothing\n").unwrap_err();
        assert!(err.0.contains("names no action"), "{err}");
    }

    #[test]
    fn notifying_an_unknown_handler_is_refused() {
        let err = load_text("- steps:\n    - name: a\n      template: {src: a.j2, dest: /a}\n      notify: reload\n")
            .unwrap_err();
        assert!(err.0.contains("notifies `reload`"), "{err}");
    }

    #[test]
    fn a_handler_name_with_a_tab_or_a_newline_is_refused() {
        for name in ["\"\\treload\"", "\"re\\nload\"", "' '"] {
            let text = format!(
                "- steps:\n    - name: a\n      template: {{src: a.j2, dest: /a}}\n  handlers:\n    - name: {name}\n      command: 'true'\n"
            );
            let err = load_text(&text).unwrap_err();
            assert!(err.0.contains("must be a non-empty line of text without tabs"), "{name}: {err}");
        }
    }

    #[test]
    fn an_unquoted_mode_is_refused() {
        let err = load_text("- steps:\n    - name: a\n      template: {src: a.j2, dest: /a, mode: 644}\n").unwrap_err();
        assert!(err.0.contains("quoted octal"), "{err}");
    }

    #[test]
    fn a_bad_regexp_is_refused() {
        let err =
            load_text("- steps:\n    - name: a\n      line: {path: /a, regexp: 'save(', state: absent}\n").unwrap_err();
        assert!(err.0.contains("regexp `save(` is invalid"), "{err}");
    }

    #[test]
    fn a_missing_template_says_where_it_looked() {
        let err = load_text("- steps:\n    - name: a\n      template: {src: nope.j2, dest: /a}\n").unwrap_err();
        assert!(err.0.contains("nope.j2` not found (looked for"), "{err}");
    }
}
