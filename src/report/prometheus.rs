//! The drift pass in Prometheus text exposition format, for node_exporter's
//! textfile collector: per host gauges.

use crate::plan::drift::ItemState;
use crate::report::model::{DriftStatus, HostReport, Status};
use std::fmt::Write;

fn label(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// A gauge: its name, its help text, and its value for a host.
type Gauge<'a> = (&'static str, &'static str, &'a dyn Fn(&HostReport) -> f64);

/// `timestamp` is the pass's start, in seconds since the epoch.
pub fn render(reports: &[HostReport], timestamp: f64) -> String {
    let mut out = String::new();
    let gauges: [Gauge; 6] = [
        ("sentry_provision_in_sync", "1 when the host matches the playbook and its last apply, else 0.", &|r| {
            f64::from(u8::from(r.drift_status() == DriftStatus::InSync))
        }),
        (
            "sentry_provision_drifted_items",
            "Items changed on the host since the last apply (files and live state).",
            &|r| r.drift.iter().filter(|i| i.state == ItemState::HostDrift).count() as f64,
        ),
        (
            "sentry_provision_pending_items",
            "Items the playbook changed since the last apply, or never applied.",
            &|r| r.drift.iter().filter(|i| i.state != ItemState::HostDrift).count() as f64,
        ),
        ("sentry_provision_up", "1 when the host was reached and read, else 0.", &|r| {
            f64::from(u8::from(!matches!(r.status, Status::Unreachable | Status::Failed | Status::Interrupted)))
        }),
        ("sentry_provision_last_pass_timestamp_seconds", "When the last drift pass started.", &|_| timestamp),
        ("sentry_provision_pass_duration_seconds", "How long the last drift pass took for the host.", &|r| {
            r.elapsed.as_secs_f64()
        }),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for report in reports {
            let _ = writeln!(out, "{name}{{host=\"{}\"}} {}", label(&report.name), value(report));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
