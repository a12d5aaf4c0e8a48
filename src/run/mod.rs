//! A run: load and check everything offline, then per host, concurrently
//! (bounded by `--forks`), over one SSH master each: a snapshot round trip,
//! a local plan, then (apply) one install round trip and one handlers round
//! trip, or (drift) one round trip of live probes. The round trips are fixed
//! by these phases, not by the number of steps.
//!
//! This module is the scheduler: batches (`serial`), `max_fail_percentage`
//! and signals, over the one fan-out (`fan_out`: forks and splay) that
//! audit and facts use too (`run_everywhere`); a host's phases are in `host`.

mod drift;
mod failure;
mod fan_out;
mod host;
mod install;
mod known_facts;
mod load;
mod settings;

pub use crate::report::model::{HostReport, Status, any_changes};
pub use host::target_of;
pub use known_facts::KnownFacts;
pub use load::{Prepared, check_playbook, load, prepare, render_offline};
pub use settings::{Mode, Remediate, Settings, ssh_options};

use crate::interrupt;
use crate::inventory::Host;
use crate::progress::Progress;
use crate::transport::{self, SshOptions, Transport};
use fan_out::fan_out;
use host::{blank_report, not_run_interrupted};
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
    let mut reports: Vec<(usize, HostReport)> = Vec::new();
    let batches: Vec<Vec<usize>> = (0..total).collect::<Vec<_>>().chunks(batch.max(1)).map(<[usize]>::to_vec).collect();
    for (number, members) in batches.iter().enumerate() {
        if batches.len() > 1 {
            let names: Vec<&str> = members.iter().map(|i| shared.0.jobs[*i].host.name.as_str()).collect();
            progress.note(&format!("batch {}/{}: {}", number + 1, batches.len(), names.join(", ")));
        }
        let done = run_batch(&shared, members, splay).await;
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

/// One batch of hosts, through the fan-out. A host's task that dies (a
/// panic outside its phases) fails that host alone.
async fn run_batch(shared: &Shared, members: &[usize], splay: Duration) -> Vec<(usize, HostReport)> {
    let work = |i: usize| {
        let shared = shared.clone();
        async move {
            let (prepared, ssh, settings, progress) = &*shared;
            if interrupt::requested() {
                progress.host_done();
                return not_run_interrupted(&prepared.jobs[i].host);
            }
            let line = progress.host(&prepared.jobs[i].host.name);
            let report = host::run_host(prepared, &prepared.jobs[i], ssh, settings, &line).await;
            line.finish(report.status.as_str());
            progress.host_done();
            report
        }
    };
    let lost = |i: usize, why: String| {
        let (prepared, _, _, progress) = &**shared;
        let host = &prepared.jobs[i].host;
        interrupt::left(&host.name);
        progress.host_done();
        let error = Some(format!("internal error: {why} (this host only; the others went on)"));
        HostReport { status: Status::Failed, error, ..blank_report(host) }
    };
    fan_out(members, shared.2.forks, splay, work, lost).await
}

/// Runs `script` once on each of `hosts`, through the fan-out (`--forks`
/// at a time, `--command-timeout` each): each host's output, in the order
/// of `hosts`, or why there is none.
pub async fn run_everywhere(
    hosts: &[&Host],
    ssh: &SshOptions,
    forks: usize,
    command_timeout: Option<Duration>,
    script: String,
) -> Vec<Result<transport::Output, transport::Error>> {
    let script = Arc::new(transport::Script::from(script));
    let members: Vec<usize> = (0..hosts.len()).collect();
    let work = |i: usize| {
        let (target, _) = target_of(hosts[i]);
        let (ssh, script, become_root) = (ssh.clone(), script.clone(), hosts[i].become_root);
        async move {
            let transport = Transport::connect(&target, &ssh).await?;
            let output = transport.run(&script, become_root, command_timeout).await;
            transport.close().await;
            output
        }
    };
    let lost = |_, why| Err(transport::Error::Failed(format!("internal error: {why}")));
    let mut outputs: Vec<_> = hosts.iter().map(|_| None).collect();
    for (i, output) in fan_out(&members, forks, Duration::ZERO, work, lost).await {
        outputs[i] = Some(output);
    }
    outputs.into_iter().map(|o| o.expect("every host's task reported")).collect()
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
