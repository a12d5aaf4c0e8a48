//! The human report: per host a line per changed step, diffs when asked,
//! handlers, warnings and errors, then a summary. Colour only on a terminal
//! and never when `NO_COLOR` is set. Text that came from a host is shown
//! through [`printable`], so that a host cannot drive the operator's terminal.

use crate::report::model::{HostReport, Status};
use std::borrow::Cow;
use std::fmt::Write;
use std::io::IsTerminal;

pub struct Style {
    colour: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn detect() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style { colour: std::io::stdout().is_terminal() && !no_color }
    }

    pub fn never() -> Style {
        Style { colour: false }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    fn diff_line(&self, line: &str) -> String {
        let code = if line.starts_with("+++") || line.starts_with("---") {
            "1"
        } else if line.starts_with('+') {
            "32"
        } else if line.starts_with('-') {
            "31"
        } else if line.starts_with("@@") {
            "36"
        } else {
            return line.to_owned();
        };
        self.paint(code, line)
    }
}

/// `text` with every control character but newline and tab shown escaped
/// (`\x1b`, `\x0d`, C1 controls as `\u{9b}`): handlers' stderr, probe output,
/// paths found on a host and its error messages are the host's words, and an
/// escape sequence or a carriage return among them would otherwise recolour,
/// retitle or rewrite what the operator reads (or answer back to the
/// terminal). Plain text comes back borrowed.
pub fn printable(text: &str) -> Cow<'_, str> {
    let control = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(control) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !control(c) => shown.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(shown, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(shown, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(shown)
}

pub struct Options {
    pub check: bool,
    pub show_diff: bool,
}

pub fn render(reports: &[HostReport], options: &Options, style: &Style) -> String {
    let mut out = String::new();
    let changed_word = if options.check { "would change" } else { "changed" };
    for report in reports {
        let _ = writeln!(out, "{} ({})", style.paint("1", &report.name), report.address);
        for step in report.steps.iter().filter(|s| s.changed) {
            let (name, subject) = (printable(&step.name), printable(&step.subject));
            let _ = writeln!(out, "  {}  {name}: {subject}", style.paint("33", changed_word));
        }
        for step in report.steps.iter().filter(|s| s.not_applied) {
            let (name, subject) = (printable(&step.name), printable(&step.subject));
            let _ = writeln!(out, "  {}  {name}: {subject}", style.paint("31", "not applied"));
        }
        if options.show_diff {
            for file in &report.files {
                for line in file.diff.lines() {
                    let _ = writeln!(out, "{}", style.diff_line(&printable(line)));
                }
            }
        }
        for handler in &report.carried_over {
            let handler = printable(handler);
            let _ =
                writeln!(out, "  {}  handler `{handler}` left pending by an earlier run", style.paint("33", "pending"));
        }
        for handler in &report.handlers {
            let (word, code) = match (options.check, handler.ok) {
                (true, _) => ("would run handler", "36"),
                (false, true) => ("handler", "36"),
                (false, false) => ("handler failed", "31"),
            };
            let again = if handler.rollback { " (rollback, on the restored files)" } else { "" };
            let _ = writeln!(out, "  {}  {}{again}", style.paint(code, word), printable(&handler.name));
        }
        for backup in &report.backups {
            let (path, copy) = (printable(&backup.path), printable(&backup.copy));
            let _ = writeln!(out, "  {}  {path} -> {copy}", style.paint("36", "backup"));
        }
        for path in &report.rolled_back {
            let _ = writeln!(out, "  {}  {}", style.paint("33", "rolled back"), printable(path));
        }
        for warning in &report.warnings {
            let _ = writeln!(out, "  {}  {}", style.paint("35", "warning"), printable(warning));
        }
        if let Some(error) = &report.error {
            let word = status_word(report.status);
            let _ = writeln!(out, "  {}  {}", style.paint("1;31", word), printable(error).replace('\n', "\n      "));
        }
        // Steps the apply did not carry out are neither ok nor changed.
        let changed = report.steps.iter().filter(|s| s.changed).count();
        let not_applied = report.steps.iter().filter(|s| s.not_applied).count();
        let ok = report.steps.len() - changed - not_applied;
        let not_applied = if not_applied > 0 { format!(", {not_applied} not applied") } else { String::new() };
        let _ = writeln!(
            out,
            "  {} ok, {changed} {changed_word}{not_applied}, {} handler(s), {} round trip(s), {:.2}s",
            ok,
            report.handlers.len(),
            report.round_trips,
            report.elapsed.as_secs_f64()
        );
    }
    out.push_str(&summary_line_styled(reports, options.check, style));
    out
}

/// The drift report: per host its status and each item, then a summary.
pub fn render_drift(reports: &[HostReport], show_diff: bool, style: &Style) -> String {
    use crate::plan::drift::ItemState;
    use crate::report::model::{DriftStatus, ItemKind};
    let mut out = String::new();
    for report in reports {
        let status = report.drift_status();
        let code = match status {
            DriftStatus::InSync => "32",
            DriftStatus::Pending => "33",
            _ => "31",
        };
        let _ = writeln!(
            out,
            "{} ({}): {}",
            style.paint("1", &report.name),
            report.address,
            style.paint(code, &status.as_str().replace('_', " "))
        );
        for item in &report.drift {
            let (word, code, why) = match (item.state, item.kind) {
                (ItemState::HostDrift, ItemKind::Live) => ("live drift", "31", "live state differs"),
                (ItemState::HostDrift, _) => ("host drift", "31", "changed on the host since the last apply"),
                (ItemState::Pending, ItemKind::Handler)
                    if item.actual == crate::report::model::OWED_BY_RUNNING_APPLY =>
                {
                    ("pending", "33", crate::report::model::OWED_BY_RUNNING_APPLY)
                }
                (ItemState::Pending, ItemKind::Handler) => ("pending", "33", "a handler an earlier run did not finish"),
                (ItemState::Pending, ItemKind::Live) => ("pending", "33", "follows a pending change of the playbook"),
                (ItemState::Pending, _) => ("pending", "33", "the playbook changed since the last apply"),
                (ItemState::NeverApplied, _) => ("never applied", "33", "no apply recorded here"),
            };
            let kind = match item.kind {
                ItemKind::File => "file",
                ItemKind::Live => "probe",
                ItemKind::Handler => "handler",
            };
            let subject = printable(&item.subject);
            let _ = writeln!(out, "  {:<13}  {kind} {subject}: {why}", style.paint(code, word));
            if item.kind == ItemKind::Live {
                for line in item.actual.lines() {
                    let _ = writeln!(out, "                 {}", printable(line));
                }
            } else if item.kind == ItemKind::File {
                let (expected, actual) = (printable(&item.expected), printable(&item.actual));
                let _ = writeln!(out, "                 expected {expected}\n                 actual   {actual}");
            }
            if show_diff {
                for line in item.diff.lines() {
                    let _ = writeln!(out, "{}", style.diff_line(&printable(line)));
                }
            }
        }
        for restored in &report.remediated {
            let _ = writeln!(out, "  {}  {}", style.paint("32", "restored"), printable(restored));
        }
        for warning in &report.warnings {
            let _ = writeln!(out, "  {}  {}", style.paint("35", "warning"), printable(warning));
        }
        if let Some(error) = &report.error {
            let word = status_word(report.status);
            let _ = writeln!(out, "  {}  {}", style.paint("1;31", word), printable(error).replace('\n', "\n      "));
        }
    }
    let s = crate::report::json::summary(reports);
    let _ = writeln!(
        out,
        "{} {} host(s): {} in sync, {} drifted, {} pending, {} failed, {} unreachable{}",
        style.paint("1", "summary:"),
        s.hosts,
        s.in_sync,
        s.drifted,
        s.pending,
        s.failed,
        s.unreachable,
        interrupted_count(reports)
    );
    out
}

/// The word before a host's error.
fn status_word(status: Status) -> &'static str {
    match status {
        Status::Unreachable | Status::Interrupted => status.as_str(),
        _ => Status::Failed.as_str(),
    }
}

/// `, N interrupted` at the end of a summary, when a signal stopped any host.
fn interrupted_count(reports: &[HostReport]) -> String {
    match reports.iter().filter(|r| r.status == Status::Interrupted).count() {
        0 => String::new(),
        n => format!(", {n} interrupted"),
    }
}

/// The closing summary line, plain.
pub fn summary_line(reports: &[HostReport], check: bool) -> String {
    summary_line_styled(reports, check, &Style::never())
}

fn summary_line_styled(reports: &[HostReport], check: bool, style: &Style) -> String {
    let changed_word = if check { "would change" } else { "changed" };
    let count = |s: Status| reports.iter().filter(|r| r.status == s).count();
    format!(
        "{} {} host(s): {} ok, {} {changed_word}, {} failed, {} unreachable{}{}\n",
        style.paint("1", "summary:"),
        reports.len(),
        count(Status::Ok),
        count(Status::Changed),
        count(Status::Failed),
        count(Status::Unreachable),
        interrupted_count(reports),
        if check { " (check mode: nothing was changed)" } else { "" }
    )
}

/// One host's audit findings: what strays from the tuning guide, and why it matters.
pub fn render_findings(host: &str, findings: &[crate::audit::Finding]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        let _ = writeln!(out, "{host}: as the tuning guide recommends");
        return out;
    }
    let _ = writeln!(out, "{host}: {} finding(s)", findings.len());
    for finding in findings {
        let _ = writeln!(out, "  {:<8} {}", finding.topic, printable(&finding.found));
        for line in wrap(&printable(&finding.advice), 88) {
            let _ = writeln!(out, "           {line}");
        }
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::drift::ItemState;
    use crate::plan::{StepOutcome, diff};
    use crate::report::model::{DriftItem, FileDiff, HandlerOutcome, ItemKind};
    use std::time::Duration;

    fn report(name: &str, status: Status) -> HostReport {
        HostReport {
            name: name.into(),
            address: format!("10.0.0.{}", name.len()),
            status,
            round_trips: 1,
            elapsed: Duration::from_millis(420),
            ..HostReport::default()
        }
    }

    #[test]
    fn interrupted_hosts_are_marked_and_counted_in_the_summary() {
        let mut stopped = report("web01", Status::Interrupted);
        stopped.error = Some("interrupted after the snapshot; nothing was changed".into());
        let mut never = report("web02", Status::Interrupted);
        never.error = Some("not run: interrupted".into());
        let options = Options { check: false, show_diff: false };
        let text = render(&[stopped, never, report("web03", Status::Ok)], &options, &Style::never());
        assert!(text.contains("  interrupted  interrupted after the snapshot; nothing was changed\n"), "{text}");
        assert!(text.contains("  interrupted  not run: interrupted\n"), "{text}");
        assert!(
            text.ends_with("summary: 3 host(s): 1 ok, 0 changed, 0 failed, 0 unreachable, 2 interrupted\n"),
            "{text}"
        );
        let quiet = render(&[report("web03", Status::Ok)], &options, &Style::never());
        assert!(!quiet.contains("interrupted"), "no count when nothing was: {quiet}");
    }

    fn changed_host() -> HostReport {
        let old = "bind 127.0.0.1\nsave 900 1\nappendonly no\n";
        let new = "bind 127.0.0.1\nsave \"\"\nappendonly no\nmaxmemory 1gb\n";
        let mut host = report("web01", Status::Changed);
        host.steps = vec![
            StepOutcome {
                name: "Turn RDB snapshots off".into(),
                changed: true,
                subject: "/etc/redis/redis.conf".into(),
                ..StepOutcome::default()
            },
            StepOutcome {
                name: "Turn the append-only file off".into(),
                changed: false,
                subject: "/etc/redis/redis.conf".into(),
                ..StepOutcome::default()
            },
            StepOutcome {
                name: "Cap Redis memory".into(),
                changed: true,
                subject: "/etc/redis/redis.conf".into(),
                ..StepOutcome::default()
            },
        ];
        host.files = vec![FileDiff {
            path: "/etc/redis/redis.conf".into(),
            diff: format!(
                "mode /etc/redis/redis.conf: 0644 -> 0640\n{}",
                diff::unified("/etc/redis/redis.conf", Some(old.as_bytes()), Some(new.as_bytes()), 3)
            ),
        }];
        host.handlers = vec![HandlerOutcome { name: "apply redis settings live".into(), ok: true, rollback: false }];
        host.round_trips = 3;
        host
    }

    #[test]
    fn an_apply_report_lists_changed_steps_diffs_handlers_and_a_summary() {
        let mut down = report("db02", Status::Unreachable);
        down.round_trips = 0;
        down.error = Some("connect: failed to connect to the remote host: Connection refused".into());
        let reports = [changed_host(), report("web02", Status::Ok), down];
        let text = render(&reports, &Options { check: false, show_diff: true }, &Style::never());
        insta::assert_snapshot!(text);
    }

    #[test]
    fn a_host_where_nothing_was_written_reports_no_change_in_its_line_the_summary_and_json() {
        let mut host = changed_host();
        host.status = Status::Failed;
        host.error = Some("install: writing /etc/redis/redis.conf: No space left on device".into());
        host.handlers.clear();
        host.steps = crate::plan::carried_out(&host.steps, &[], &[], &[]);
        let text = render(std::slice::from_ref(&host), &Options { check: false, show_diff: false }, &Style::never());
        assert!(!text.contains("  changed  "), "{text}");
        assert!(text.contains("  not applied  Turn RDB snapshots off: /etc/redis/redis.conf\n"), "{text}");
        assert!(text.contains("  1 ok, 0 changed, 2 not applied, 0 handler(s)"), "{text}");
        assert!(text.ends_with("summary: 1 host(s): 0 ok, 0 changed, 1 failed, 0 unreachable\n"), "{text}");
        let json = crate::report::json::run_document(&[host], false, 4, Duration::ZERO);
        assert_eq!(json["summary"]["changed"], 0);
        assert!(json["hosts"][0]["steps"].as_array().unwrap().iter().all(|s| s["changed"] == false), "{json:#}");
    }

    #[test]
    fn a_check_report_says_what_would_change_and_which_handlers_would_run() {
        let mut host = changed_host();
        host.status = Status::Changed;
        host.carried_over = vec!["test and reload nginx".into()];
        host.warnings =
            vec!["/etc/supervisor/conf.d/sentry-worker.conf: Sentry workers run at concurrency -c 64".into()];
        let text = render(&[host], &Options { check: true, show_diff: false }, &Style::never());
        insta::assert_snapshot!(text);
    }

    #[test]
    fn a_drift_report_tells_host_drift_from_pending_changes() {
        let mut drifted = report("web01", Status::Ok);
        drifted.drift = vec![
            DriftItem {
                kind: ItemKind::File,
                subject: "/etc/redis/redis.conf".into(),
                state: ItemState::HostDrift,
                expected: "106668 bytes, mode 0640, redis:redis, sha256 a1d9e6c3dfb5".into(),
                actual: "106668 bytes, mode 0640, redis:redis, sha256 a0e51c00844d".into(),
                diff: String::new(),
            },
            DriftItem {
                kind: ItemKind::Live,
                subject: "redis live config".into(),
                state: ItemState::HostDrift,
                expected: "probe passes".into(),
                actual: "maxmemory: expected '1073741824', actual '0'".into(),
                diff: String::new(),
            },
        ];
        drifted.remediated = vec!["/etc/redis/redis.conf".into(), "handler `apply redis settings live`".into()];
        let mut pending = report("web02", Status::Ok);
        pending.drift = vec![DriftItem {
            kind: ItemKind::File,
            subject: "/etc/supervisor/conf.d/memmon.conf".into(),
            state: ItemState::Pending,
            expected: "190 bytes, mode 0644, root:root, sha256 35d5be475cc9".into(),
            actual: "190 bytes, mode 0644, root:root, sha256 0050e4b77799".into(),
            diff: String::new(),
        }];
        let text = render_drift(&[drifted, pending, report("web03", Status::Ok)], false, &Style::never());
        insta::assert_snapshot!(text);
    }

    /// What a hostile handler might print: clear the screen, paint a line
    /// green and overwrite it from its start with a carriage return.
    const HOSTILE: &str = "\x1b[2J\x1b[32mall good\rreload failed\x07\u{9b}31m";

    #[test]
    fn control_characters_in_a_handlers_error_are_shown_escaped() {
        let mut host = changed_host();
        host.status = Status::Failed;
        host.error = Some(format!("handler `test and reload nginx` failed: {HOSTILE}\nsecond line\tok"));
        let text = render(&[host], &Options { check: false, show_diff: false }, &Style::never());
        assert!(!text.contains(|c: char| c.is_control() && c != '\n' && c != '\t'), "{text:?}");
        assert!(
            text.contains(
                "failed  handler `test and reload nginx` failed: \\x1b[2J\\x1b[32mall good\\x0dreload failed\\x07\\u{9b}31m\n      second line\tok\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn control_characters_in_probe_output_diffs_and_paths_from_a_host_are_shown_escaped() {
        let mut host = report("web01", Status::Ok);
        host.drift = vec![DriftItem {
            kind: ItemKind::Live,
            subject: "redis live config".into(),
            state: ItemState::HostDrift,
            expected: "probe passes".into(),
            actual: format!("maxmemory: {HOSTILE}"),
            diff: format!("--- a\n+++ b\n+{HOSTILE}\n"),
        }];
        host.warnings = vec![format!("/etc/nginx/sites-enabled/{HOSTILE}: proxies to Sentry")];
        let text = render_drift(&[host], true, &Style { colour: true });
        // Colour on: the report's own escapes stay, the host's do not.
        assert!(!text.contains(['\r', '\x07', '\u{9b}']), "{text:?}");
        assert!(!text.contains("\x1b[2J") && !text.contains("\x1b[32mall"), "{text:?}");
        assert_eq!(text.matches("\\x1b[2J\\x1b[32mall good\\x0dreload failed").count(), 3, "{text}");
    }

    #[test]
    fn printable_text_is_left_alone() {
        let text = "save: expected '', actual '900 1'\n\tcafé ☃ \\x1b";
        assert!(matches!(printable(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn audit_findings_read_as_advice() {
        let findings = crate::audit::analyse(&crate::audit::Observed {
            cpus: 4,
            redis: [("save".to_string(), "3600 1".to_string()), ("maxmemory".to_string(), "0".to_string())].into(),
            web_workers: Some(3),
            web_runs: true,
            ..Default::default()
        });
        insta::assert_snapshot!(render_findings("web01", &findings));
    }
}
