//! A host's drift check: the live probes round trip, each item told apart
//! as drift of the host or a pending change of the playbook, and put right
//! when asked.

use super::failure::{HostFailure, Phase};
use super::host::{HostRun, Inspection, is_sensitive};
use super::settings::Remediate;
use crate::plan::{self, drift::ItemState};
use crate::remote;
use crate::report::model::{DriftItem, ItemKind, OWED_BY_RUNNING_APPLY};
use std::collections::BTreeSet;

impl HostRun<'_> {
    /// The live probes (their results from the snapshot's round trip when
    /// they ran there, else round trip 2); then drift is classified item by
    /// item, and put right if asked.
    pub(super) async fn drift(&mut self, inspection: &Inspection, remediate: Remediate) -> Result<(), HostFailure> {
        let commands: Vec<&str> = inspection.tasks.probes.iter().map(|(_, c, _)| c.as_str()).collect();
        let results = if commands.is_empty() {
            Vec::new()
        } else if let Some(results) = &inspection.probe_results {
            results.clone()
        } else {
            let output = self.round_trip(Phase::Probes, &remote::probes(&commands).into()).await?;
            remote::parse_probes(&output.stdout, commands.len())
                .map_err(|e| HostFailure::unreadable_reply(Phase::Probes, e, &output))?
        };
        let diffs: std::collections::BTreeMap<&str, &str> =
            inspection.plan.files.iter().map(|f| (f.path.as_str(), f.diff.as_str())).collect();
        let mut items: Vec<DriftItem> = plan::drift::classify(
            &inspection.plan.desired,
            &inspection.snapshot.entries,
            inspection.applied.as_ref(),
            &inspection.fingerprints,
        )
        .into_iter()
        .map(|f| DriftItem {
            kind: ItemKind::File,
            diff: diffs.get(f.path.as_str()).copied().unwrap_or_default().to_owned(),
            subject: f.path,
            state: f.state,
            expected: f.expected,
            actual: f.actual,
        })
        .collect();
        // Live state that a pending file change would also change (its remedy is
        // a handler those files notify) is pending too, not drift of the host.
        let pending_paths: BTreeSet<String> =
            items.iter().filter(|i| i.state != ItemState::HostDrift).map(|i| i.subject.clone()).collect();
        let pending_handlers: BTreeSet<&str> = inspection
            .plan
            .tasks_managing(&inspection.tasks.tasks, &pending_paths)
            .flat_map(|t| t.notify.iter().map(String::as_str))
            .collect();
        let mut remedies = Vec::new();
        for ((name, _, remedy), (status, output)) in inspection.tasks.probes.iter().zip(&results) {
            if *status != 0 {
                let follows_pending = remedy.as_deref().is_some_and(|r| pending_handlers.contains(r));
                items.push(DriftItem {
                    kind: ItemKind::Live,
                    subject: name.clone(),
                    state: if follows_pending { ItemState::Pending } else { ItemState::HostDrift },
                    expected: "probe passes".into(),
                    actual: if output.is_empty() { format!("exit status {status}") } else { output.clone() },
                    diff: String::new(),
                });
                remedies.extend(remedy.clone());
            }
        }
        for handler in &inspection.plan.carried_over {
            items.push(DriftItem {
                kind: ItemKind::Handler,
                subject: handler.clone(),
                state: ItemState::Pending,
                expected: "run".into(),
                actual: if inspection.lock_held { OWED_BY_RUNNING_APPLY } else { "left pending by an earlier run" }
                    .into(),
                diff: String::new(),
            });
        }
        let sensitive: BTreeSet<&str> =
            inspection.plan.files.iter().filter(|f| is_sensitive(f)).map(|f| f.path.as_str()).collect();
        for item in &mut items {
            item.diff = self.secrets.mask_diff(&item.diff, sensitive.contains(item.subject.as_str()));
        }
        self.report.drift = items;
        let drifted = self.report.drift.iter().any(|i| i.state == ItemState::HostDrift);
        let order = inspection.tasks.handler_order();
        let plan = match remediate {
            Remediate::Nothing => return Ok(()),
            Remediate::HostDrift if !drifted => return Ok(()),
            Remediate::HostDrift => {
                let paths: BTreeSet<String> = self
                    .report
                    .drift
                    .iter()
                    .filter(|i| i.kind == ItemKind::File && i.state == ItemState::HostDrift)
                    .map(|i| i.subject.clone())
                    .collect();
                inspection.plan.restricted_to(&inspection.tasks.tasks, &paths, &remedies, &order)
            }
            Remediate::All if self.report.drift.is_empty() => return Ok(()),
            Remediate::All => inspection.plan.with_handlers(&remedies, &order),
        };
        self.stop_if_interrupted("after the probes; nothing was put back")?;
        self.install_and_reload(inspection, &plan).await?;
        self.report.remediated = plan
            .files
            .iter()
            .map(|f| f.path.clone())
            .chain(plan.commands.iter().map(|c| format!("command `{}`", c.cmd)))
            .chain(self.report.handlers.iter().map(|h| format!("handler `{}`", h.name)))
            .collect();
        Ok(())
    }
}
