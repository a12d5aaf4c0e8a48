//! A run: load and check everything offline, then per host, concurrently
//! (bounded by `--forks`), over one SSH master each: a snapshot round trip,
//! a local plan, then (apply) one install round trip and one handlers round
//! trip, or (drift) one round trip of live probes. The round trips are fixed
//! by these phases, not by the number of steps.
//!
//! This module is the scheduler: batches (`serial`), `max_fail_percentage`,
//! forks, splay and signals; a host's phases are in `host`.

mod drift;
mod host;
mod install;
mod load;
mod settings;

pub use crate::report::model::{HostReport, Status, any_changes};
pub use load::{Prepared, check_playbook, load, prepare, render_offline};
pub use settings::{Mode, Remediate, Settings, ssh_options};

use crate::interrupt;
use crate::inventory::{Connection, Host};
use crate::progress::Progress;
use crate::transport::{self, SshOptions, SshTarget, Target, script};
use std::sync::Arc;
use std::time::Duration;

/// Runs every prepared host, `forks` at a time, and returns their reports in inventory order.
/// `splay` delays each host's start by a random part of it, so scheduled
/// passes do not hit every host at the same instant.
pub async fn execute(prepared: Prepared, settings: &Settings, splay: Duration) -> Result<Vec<HostReport>, String> {
    let control =
        transport::control_directory().map_err(|e| format!("cannot create a control socket folder in /tmp: {e}"))?;
    let ssh = ssh_options(settings, control.path());
    let progress = Arc::new(Progress::new(prepared.jobs.len(), settings.quiet));
    let total = prepared.jobs.len();
    let serial = settings.serial.or_else(|| prepared.playbook.plays.iter().filter_map(|p| p.serial).next());
    let batch = serial.map_or(total, |s| s.of(total));
    let max_fail = prepared.playbook.plays.iter().find_map(|p| p.max_fail_percentage);
    let shared = Arc::new((prepared, ssh, settings.clone(), progress.clone()));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(settings.forks.max(1)));
    let mut reports: Vec<(usize, HostReport)> = Vec::new();
    let batches: Vec<Vec<usize>> = (0..total).collect::<Vec<_>>().chunks(batch.max(1)).map(<[usize]>::to_vec).collect();
    for (number, members) in batches.iter().enumerate() {
        if batches.len() > 1 {
            let names: Vec<&str> = members.iter().map(|i| shared.0.jobs[*i].host.name.as_str()).collect();
            progress.note(&format!("batch {}/{}: {}", number + 1, batches.len(), names.join(", ")));
        }
        let done = run_batch(&shared, &semaphore, members, splay).await;
        let failed = done.iter().filter(|(_, r)| matches!(r.status, Status::Failed | Status::Unreachable)).count();
        reports.extend(done);
        let stop = batch_stops(number + 1, failed, members.len(), max_fail);
        let stop = if interrupt::requested() {
            Some((Status::Interrupted, "interrupted".to_owned()))
        } else {
            stop.map(|why| (Status::Failed, why))
        };
        if let (Some((status, why)), true) = (stop, number + 1 < batches.len()) {
            for rest in batches[number + 1..].iter().flatten() {
                let mut skipped = blank_report(&shared.0.jobs[*rest].host);
                skipped.status = status;
                skipped.error = Some(format!("not run: {why}"));
                reports.push((*rest, skipped));
            }
            break;
        }
    }
    progress.finish();
    reports.sort_by_key(|(i, _)| *i);
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

/// Why a rolling run stops after a batch, as Ansible stops: when the
/// batch's failed share is over `max_fail_percentage`, or, with or without
/// it, when every host of the batch failed.
fn batch_stops(batch: usize, failed: usize, size: usize, max_fail: Option<f64>) -> Option<String> {
    let share = failed as f64 * 100.0 / size.max(1) as f64;
    match max_fail {
        Some(limit) if share > limit => {
            Some(format!("{failed} of {size} host(s) in batch {batch} failed, over max_fail_percentage {limit}"))
        }
        _ if failed > 0 && failed == size => Some(format!("every host of batch {batch} failed ({failed} of {size})")),
        _ => None,
    }
}

type Shared = Arc<(Prepared, SshOptions, Settings, Arc<Progress>)>;

/// One batch of hosts, concurrently, `forks` at a time. A host's task
/// that dies (a panic outside its phases) fails that host alone.
async fn run_batch(
    shared: &Shared,
    semaphore: &Arc<tokio::sync::Semaphore>,
    members: &[usize],
    splay: Duration,
) -> Vec<(usize, HostReport)> {
    let mut running = tokio::task::JoinSet::new();
    let mut hosts_of_tasks = std::collections::HashMap::new();
    for &i in members {
        let shared = shared.clone();
        let semaphore = semaphore.clone();
        // The fork is taken here, host by host, so that hosts start in
        // inventory order (tasks racing for it would start in any order).
        // With a splay each host waits its own random delay first, and its
        // start is random anyway.
        let permit = if splay.is_zero() {
            Some(semaphore.clone().acquire_owned().await.expect("semaphore is never closed"))
        } else {
            None
        };
        let task = running.spawn(async move {
            let _permit = match permit {
                Some(permit) => permit,
                None => {
                    tokio::time::sleep(splay.mul_f64(random_fraction())).await;
                    semaphore.acquire_owned().await.expect("semaphore is never closed")
                }
            };
            let (prepared, ssh, settings, progress) = &*shared;
            if interrupt::requested() {
                progress.host_done();
                return (i, not_run_interrupted(&prepared.jobs[i].host));
            }
            let line = progress.host(&prepared.jobs[i].host.name);
            let report = host::run_host(prepared, &prepared.jobs[i], ssh, settings, &line).await;
            line.finish(match report.status {
                Status::Ok => "ok",
                Status::Changed => "changed",
                Status::Failed => "failed",
                Status::Unreachable => "unreachable",
                Status::Interrupted => "interrupted",
            });
            progress.host_done();
            (i, report)
        });
        hosts_of_tasks.insert(task.id(), i);
    }
    let mut reports: Vec<(usize, HostReport)> = Vec::new();
    while let Some(done) = running.join_next_with_id().await {
        match done {
            Ok((_, done)) => reports.push(done),
            Err(e) => {
                let Some(&i) = hosts_of_tasks.get(&e.id()) else { continue };
                let (prepared, _, _, progress) = &**shared;
                let host = &prepared.jobs[i].host;
                let why = if e.is_panic() { crate::unwind::message(&e.into_panic()) } else { e.to_string() };
                interrupt::left(&host.name);
                progress.host_done();
                let error = Some(format!("internal error: {why} (this host only; the others went on)"));
                reports.push((i, HostReport { status: Status::Failed, error, ..blank_report(host) }));
            }
        }
    }
    reports
}

/// A number in [0, 1).
fn random_fraction() -> f64 {
    (script::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

pub fn target_of(host: &Host) -> (Target, String) {
    match &host.connection {
        Connection::Local => (Target::Local, "local".into()),
        Connection::Ssh { address, port, user, key_file } => (
            Target::Ssh(SshTarget {
                address: address.clone(),
                port: *port,
                user: user.clone(),
                key_file: key_file.clone(),
            }),
            match port {
                Some(p) => format!("{address}:{p}"),
                None => address.clone(),
            },
        ),
    }
}

pub(super) fn blank_report(host: &Host) -> HostReport {
    HostReport { name: host.name.clone(), address: target_of(host).1, ..HostReport::default() }
}

/// A host a signal kept from starting.
pub(super) fn not_run_interrupted(host: &Host) -> HostReport {
    HostReport { status: Status::Interrupted, error: Some("not run: interrupted".into()), ..blank_report(host) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolling_run_stops_when_every_host_of_a_batch_failed() {
        assert_eq!(batch_stops(1, 2, 2, None).as_deref(), Some("every host of batch 1 failed (2 of 2)"));
        assert_eq!(batch_stops(1, 1, 2, None), None, "without max_fail_percentage, one survivor is enough");
        assert_eq!(batch_stops(1, 0, 2, None), None);
    }

    #[test]
    fn a_rolling_run_stops_over_max_fail_percentage() {
        assert_eq!(
            batch_stops(1, 1, 1, Some(0.0)).as_deref(),
            Some("1 of 1 host(s) in batch 1 failed, over max_fail_percentage 0")
        );
        assert_eq!(batch_stops(2, 1, 2, Some(50.0)), None, "exactly the limit is not over it");
        assert!(
            batch_stops(3, 2, 2, Some(100.0)).unwrap().contains("every host of batch 3"),
            "all failed stops at 100"
        );
    }
}
