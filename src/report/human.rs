//! The human report: per host a line per changed step, diffs when asked,
//! handlers, warnings and errors, then a summary. Colour only on a terminal
//! and never when `NO_COLOR` is set.

use crate::run::{HostReport, Status};
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
            let _ = writeln!(out, "  {}  {}: {}", style.paint("33", changed_word), step.name, step.subject);
        }
        if options.show_diff {
            for file in &report.files {
                for line in file.diff.lines() {
                    let _ = writeln!(out, "{}", style.diff_line(line));
                }
            }
        }
        for handler in &report.carried_over {
            let _ =
                writeln!(out, "  {}  handler `{handler}` left pending by an earlier run", style.paint("33", "pending"));
        }
        for handler in &report.handlers {
            let (word, code) = match (options.check, handler.ok) {
                (true, _) => ("would run handler", "36"),
                (false, true) => ("handler", "36"),
                (false, false) => ("handler failed", "31"),
            };
            let _ = writeln!(out, "  {}  {}", style.paint(code, word), handler.name);
        }
        for backup in &report.backups {
            let _ = writeln!(out, "  {}  {backup}", style.paint("36", "backup"));
        }
        for path in &report.rolled_back {
            let _ = writeln!(out, "  {}  {path}", style.paint("33", "rolled back"));
        }
        for warning in &report.warnings {
            let _ = writeln!(out, "  {}  {warning}", style.paint("35", "warning"));
        }
        if let Some(error) = &report.error {
            let word = if report.status == Status::Unreachable { "unreachable" } else { "failed" };
            let _ = writeln!(out, "  {}  {}", style.paint("1;31", word), error.replace('\n', "\n      "));
        }
        let changed = report.steps.iter().filter(|s| s.changed).count();
        let ok = report.steps.len() - changed;
        let _ = writeln!(
            out,
            "  {} ok, {changed} {changed_word}, {} handler(s), {} round trip(s), {:.2}s",
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
    use crate::run::ItemKind;
    let mut out = String::new();
    for report in reports {
        let status = report.drift_status();
        let code = match status {
            "in_sync" => "32",
            "pending" => "33",
            _ => "31",
        };
        let _ = writeln!(
            out,
            "{} ({}): {}",
            style.paint("1", &report.name),
            report.address,
            style.paint(code, &status.replace('_', " "))
        );
        for item in &report.drift {
            let (word, code, why) = match (item.state, item.kind) {
                (ItemState::HostDrift, ItemKind::Live) => ("live drift", "31", "live state differs"),
                (ItemState::HostDrift, _) => ("host drift", "31", "changed on the host since the last apply"),
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
            let _ = writeln!(out, "  {:<13}  {kind} {}: {why}", style.paint(code, word), item.subject);
            if item.kind == ItemKind::Live {
                for line in item.actual.lines() {
                    let _ = writeln!(out, "                 {line}");
                }
            } else if item.kind == ItemKind::File {
                let _ = writeln!(
                    out,
                    "                 expected {}\n                 actual   {}",
                    item.expected, item.actual
                );
            }
            if show_diff {
                for line in item.diff.lines() {
                    let _ = writeln!(out, "{}", style.diff_line(line));
                }
            }
        }
        for restored in &report.remediated {
            let _ = writeln!(out, "  {}  {restored}", style.paint("32", "restored"));
        }
        for warning in &report.warnings {
            let _ = writeln!(out, "  {}  {warning}", style.paint("35", "warning"));
        }
        if let Some(error) = &report.error {
            let word = if report.status == Status::Unreachable { "unreachable" } else { "failed" };
            let _ = writeln!(out, "  {}  {}", style.paint("1;31", word), error.replace('\n', "\n      "));
        }
    }
    let s = crate::report::json::summary(reports);
    let _ = writeln!(
        out,
        "{} {} host(s): {} in sync, {} drifted, {} pending, {} failed, {} unreachable",
        style.paint("1", "summary:"),
        s.hosts,
        s.in_sync,
        s.drifted,
        s.pending,
        s.failed,
        s.unreachable
    );
    out
}

/// The closing summary line, plain.
pub fn summary_line(reports: &[HostReport], check: bool) -> String {
    summary_line_styled(reports, check, &Style::never())
}

fn summary_line_styled(reports: &[HostReport], check: bool, style: &Style) -> String {
    let changed_word = if check { "would change" } else { "changed" };
    let count = |s: Status| reports.iter().filter(|r| r.status == s).count();
    format!(
        "{} {} host(s): {} ok, {} {changed_word}, {} failed, {} unreachable{}\n",
        style.paint("1", "summary:"),
        reports.len(),
        count(Status::Ok),
        count(Status::Changed),
        count(Status::Failed),
        count(Status::Unreachable),
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
        let _ = writeln!(out, "  {:<8} {}", finding.topic, finding.found);
        for line in wrap(&finding.advice, 88) {
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
