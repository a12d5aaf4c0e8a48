//! What a run found and did on each host: the report every output
//! (human, JSON, Prometheus, the drift history) is made from.

use crate::facts::Facts;
use crate::plan::StepOutcome;
use crate::plan::drift::ItemState;
use crate::secrets::Secrets;
use std::time::Duration;

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

/// How a host's run ended, as the reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Ok,
    Changed,
    Failed,
    Unreachable,
    /// Stopped by a signal before it finished (or before it started).
    Interrupted,
}

impl Status {
    /// The status as every report writes it (JSON's serde name is the same).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Failed => "failed",
            Status::Unreachable => "unreachable",
            Status::Interrupted => "interrupted",
        }
    }
}

/// A host's state as a drift pass reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    InSync,
    /// Something moved on the host since the last apply.
    Drifted,
    /// Only the playbook moved (or was never applied here).
    Pending,
    Failed,
    Unreachable,
    Interrupted,
}

impl DriftStatus {
    /// The status as every report writes it (JSON's serde name is the same).
    pub fn as_str(self) -> &'static str {
        match self {
            DriftStatus::InSync => "in_sync",
            DriftStatus::Drifted => "drifted",
            DriftStatus::Pending => "pending",
            DriftStatus::Failed => "failed",
            DriftStatus::Unreachable => "unreachable",
            DriftStatus::Interrupted => "interrupted",
        }
    }
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
    /// The host's facts, as its snapshot read them.
    pub facts: Option<Facts>,
}

impl HostReport {
    pub fn drift_status(&self) -> DriftStatus {
        match self.status {
            Status::Unreachable => DriftStatus::Unreachable,
            Status::Failed => DriftStatus::Failed,
            Status::Interrupted => DriftStatus::Interrupted,
            _ if self.drift.iter().any(|i| i.state == ItemState::HostDrift) => DriftStatus::Drifted,
            _ if !self.drift.is_empty() => DriftStatus::Pending,
            _ => DriftStatus::InSync,
        }
    }
}

/// Changes were found (check) or made (apply) on any host.
pub fn any_changes(reports: &[HostReport]) -> bool {
    reports.iter().any(|r| r.status == Status::Changed || (r.status == Status::Failed && !r.files.is_empty()))
}

impl HostReport {
    /// The one place a host's report is masked, once the host is done and
    /// before anything shows it: human and JSON output, Prometheus, `-v` logs
    /// and the drift history are all made from it. Diffs of files others may
    /// not read lost their secret-looking lines where they were made (the
    /// report no longer knows the files' modes).
    pub fn mask(&mut self, secrets: &Secrets) {
        let mask = |text: &mut String| *text = secrets.mask(text);
        self.steps.iter_mut().for_each(|step| mask(&mut step.subject));
        for file in &mut self.files {
            file.diff = secrets.mask_diff(&file.diff, false);
        }
        for item in &mut self.drift {
            mask(&mut item.subject);
            mask(&mut item.expected);
            mask(&mut item.actual);
            item.diff = secrets.mask_diff(&item.diff, false);
        }
        let lists = [&mut self.warnings, &mut self.remediated, &mut self.log, &mut self.rolled_back];
        lists.into_iter().flatten().for_each(mask);
        self.error.iter_mut().for_each(mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_the_same_in_json_and_in_text() {
        for status in [Status::Ok, Status::Changed, Status::Failed, Status::Unreachable, Status::Interrupted] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        let drift = [
            DriftStatus::InSync,
            DriftStatus::Drifted,
            DriftStatus::Pending,
            DriftStatus::Failed,
            DriftStatus::Unreachable,
            DriftStatus::Interrupted,
        ];
        for status in drift {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
