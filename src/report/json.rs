//! The machine-readable drift report: one JSON document per pass. Field
//! names are stable and documented in the README.

use crate::run::{DriftItem, HostReport};
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
}

#[derive(Serialize)]
pub struct Host<'a> {
    pub host: &'a str,
    pub address: &'a str,
    pub status: &'static str,
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
            "in_sync" => summary.in_sync += 1,
            "drifted" => summary.drifted += 1,
            "pending" => summary.pending += 1,
            "failed" => summary.failed += 1,
            _ => summary.unreachable += 1,
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
