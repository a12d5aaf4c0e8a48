//! The machine-readable reports: one JSON document per apply, diff or
//! drift pass. Field names are stable and documented in the README.

use crate::report::model::{DriftItem, DriftStatus, HostReport};
use serde::Serialize;

#[derive(Serialize)]
pub struct Pass<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    pub playbook: String,
    pub playbook_digest: &'a str,
    pub duration_seconds: f64,
    pub exit_code: u8,
    pub summary: Summary,
    pub hosts: Vec<Host<'a>>,
}

#[derive(Serialize, Default)]
pub struct Summary {
    pub hosts: usize,
    pub in_sync: usize,
    pub drifted: usize,
    pub pending: usize,
    pub failed: usize,
    pub unreachable: usize,
    pub interrupted: usize,
}

#[derive(Serialize)]
pub struct Host<'a> {
    pub host: &'a str,
    pub address: &'a str,
    pub status: DriftStatus,
    pub error: Option<&'a str>,
    pub items: &'a [DriftItem],
    pub remediated: &'a [String],
    pub round_trips: u32,
    pub duration_seconds: f64,
}

pub fn summary(reports: &[HostReport]) -> Summary {
    let mut summary = Summary { hosts: reports.len(), ..Summary::default() };
    for report in reports {
        match report.drift_status() {
            DriftStatus::InSync => summary.in_sync += 1,
            DriftStatus::Drifted => summary.drifted += 1,
            DriftStatus::Pending => summary.pending += 1,
            DriftStatus::Failed => summary.failed += 1,
            DriftStatus::Interrupted => summary.interrupted += 1,
            DriftStatus::Unreachable => summary.unreachable += 1,
        }
    }
    summary
}

pub fn hosts(reports: &[HostReport]) -> Vec<Host<'_>> {
    reports
        .iter()
        .map(|r| Host {
            host: &r.name,
            address: &r.address,
            status: r.drift_status(),
            error: r.error.as_deref(),
            items: &r.drift,
            remediated: &r.remediated,
            round_trips: r.round_trips,
            duration_seconds: r.elapsed.as_secs_f64(),
        })
        .collect()
}

/// The document `apply --format json` and `diff --format json` print.
pub fn run_document(
    reports: &[HostReport],
    check: bool,
    exit_code: u8,
    elapsed: std::time::Duration,
) -> serde_json::Value {
    use crate::report::model::Status;
    let count = |s: Status| reports.iter().filter(|r| r.status == s).count();
    let hosts: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "host": r.name,
                "address": r.address,
                "status": r.status,
                "error": r.error,
                "steps": r.steps.iter().map(|s| serde_json::json!({"name": s.name, "subject": s.subject, "changed": s.changed, "not_applied": s.not_applied})).collect::<Vec<_>>(),
                "changes": r.files.iter().map(|f| serde_json::json!({"path": f.path, "diff": f.diff})).collect::<Vec<_>>(),
                "handlers": r.handlers.iter().map(|h| serde_json::json!({"name": h.name, "ok": h.ok, "rollback": h.rollback})).collect::<Vec<_>>(),
                "pending_from_earlier_run": r.carried_over,
                "backups": r.backups,
                "rolled_back": r.rolled_back,
                "warnings": r.warnings,
                "round_trips": r.round_trips,
                "duration_seconds": r.elapsed.as_secs_f64(),
            })
        })
        .collect();
    serde_json::json!({
        "command": if check { "check" } else { "apply" },
        "exit_code": exit_code,
        "duration_seconds": elapsed.as_secs_f64(),
        "summary": {
            "hosts": reports.len(),
            "ok": count(Status::Ok),
            "changed": count(Status::Changed),
            "failed": count(Status::Failed),
            "unreachable": count(Status::Unreachable),
            "interrupted": count(Status::Interrupted),
        },
        "hosts": hosts,
    })
}
